// CSRF: a sign-in form posted from another origin (without Keel's token, or with a guessed
// one) and a post carrying the real token but a foreign Origin change nothing; the same
// credentials through Keel's own page sign in (so the refusals above could have failed).
//
// params: person {workspace, email, password}, rpPort (the other origin's port on localhost).

import { check, checkEqual, scenario } from './lib/harness.mjs';
import { onLoginPage, signIn, signedIn } from './lib/keel.mjs';
import { callbackServer } from './lib/rp.mjs';

/** An HTML-escaped attribute value. */
function attr(value) {
  return String(value).replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
}

/** The other origin's page: a form posting the person's credentials to Keel's sign-in. */
function attackPage(keel, person, csrf) {
  const inputs = { workspace: person.workspace, email: person.email, password: person.password, ...(csrf ? { csrf } : {}) };
  return `<!doctype html><html lang="en"><title>Elsewhere</title>
<form method="post" action="${attr(`${keel}/v1/auth/session`)}">
${Object.entries(inputs).map(([k, v]) => `<input type="hidden" name="${k}" value="${attr(v)}">`).join('\n')}
<button type="submit">Go</button></form></html>`;
}

/** Whether the browser context holds a keel_session cookie. */
async function hasSessionCookie(context) {
  return (await context.cookies()).some((cookie) => cookie.name === 'keel_session');
}

await scenario('csrf', async (t) => {
  const { keel, person, rpPort } = t.params;
  const other = await callbackServer(rpPort);
  try {
    const context = await t.newContext({ allowedOrigins: [other.origin] });
    const page = await context.newPage();
    t.step('open Keel\'s login page (it sets the CSRF cookie)');
    await page.goto(`${keel}/login`);
    await onLoginPage(page);
    check((await page.locator('input[name="csrf"]').count()) === 1, 'the login form has a hidden csrf input');
    const token = await page.locator('input[name="csrf"]').inputValue();
    check(token.length >= 16, 'the login form carries a CSRF token');
    check((await context.cookies()).some((c) => c.name === 'keel_csrf'), 'the login page sets the keel_csrf cookie');

    for (const [what, csrf] of [['without a token', null], ['with a guessed token', 'x'.repeat(token.length)]]) {
      t.step(`a form from ${other.origin} ${what}`);
      other.serve('/attack', attackPage(keel, person, csrf));
      await page.goto(`${other.origin}/attack`);
      const answer = page.waitForResponse((r) => r.url().startsWith(`${keel}/v1/auth/session`));
      await page.getByRole('button', { name: 'Go' }).click();
      const response = await answer;
      const status = response.status();
      check(status === 403 || status === 303, `a cross-origin post ${what} answers 403 (or 303 to error=csrf): ${status}`);
      if (status === 303) {
        const location = new URL(response.headers().location ?? '/', keel);
        checkEqual(location.searchParams.get('error'), 'csrf', `the error of a post ${what}`);
      }
      await page.waitForLoadState();
      check(!(await hasSessionCookie(context)), `a post ${what} set no session cookie`);
      check(!(await signedIn(page, keel)), `a post ${what} signed nobody in`);
    }

    t.step('the real token with a foreign Origin');
    const form = { workspace: person.workspace, email: person.email, password: person.password, csrf: token };
    const foreign = await context.request.post(`${keel}/v1/auth/session`, {
      form,
      headers: { Origin: other.origin },
      maxRedirects: 0,
    });
    const location = foreign.headers().location ?? '';
    check(
      foreign.status() === 403 || (foreign.status() === 303 && location.includes('error=csrf')),
      `the real token from a foreign Origin answers 403 or 303 to error=csrf: ${foreign.status()} ${location}`,
    );
    check(!(await hasSessionCookie(context)), 'a foreign Origin set no session cookie');

    t.step('the same credentials through Keel\'s own page');
    await page.goto(`${keel}/login`);
    await signIn(page, person);
    await page.waitForURL((url) => url.pathname === '/' || url.searchParams.has('error'));
    check(await signedIn(page, keel), 'Keel\'s own form signs in (the refusals above were CSRF, not the credentials)');
    t.result = { refused: 3 };
  } finally {
    await other.close();
  }
});
