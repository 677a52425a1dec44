// The Japanese pages: chosen from Accept-Language (a ja-JP browser), <html lang="ja">, the
// contract's labels, and a sign-in that works in Japanese; `lang=en` switches back to English.
//
// params: person {workspace, email, password}.

import { check, checkEqual, scenario, snapshot } from './lib/harness.mjs';
import { LABELS, button, field, onLoginPage, query, signIn, signedIn } from './lib/keel.mjs';

await scenario('japanese', async (t) => {
  const { keel, person } = t.params;
  const page = await t.newPage({ locale: 'ja-JP' });

  t.step('the login page in a ja-JP browser');
  await page.goto(`${keel}/login`);
  await onLoginPage(page, 'ja');
  checkEqual(await page.locator('html').getAttribute('lang'), 'ja', '<html lang>');
  for (const label of [LABELS.ja.workspace, LABELS.ja.email, LABELS.ja.password]) {
    checkEqual(await field(page, label).count(), 1, `inputs labelled ${label}`);
  }
  checkEqual(await button(page, LABELS.ja.signIn).count(), 1, `buttons named ${LABELS.ja.signIn}`);
  checkEqual(await field(page, LABELS.en.email).count(), 0, 'inputs labelled in English on the Japanese page');
  await snapshot(page, 'login-ja');

  t.step('the forgot-password page in Japanese');
  await page.goto(`${keel}/forgot-password`);
  checkEqual(await page.locator('html').getAttribute('lang'), 'ja', '<html lang> of the forgot-password page');

  t.step('lang=en switches to English');
  await page.goto(`${keel}/login?lang=en`);
  await onLoginPage(page, 'en');
  checkEqual(await field(page, LABELS.en.workspace).count(), 1, 'inputs labelled Workspace after lang=en');

  t.step('sign in on the Japanese page');
  await page.goto(`${keel}/login?lang=ja`);
  await signIn(page, { ...person, lang: 'ja' });
  await page.waitForURL((url) => url.pathname === '/' || url.searchParams.has('error'));
  checkEqual(query(page, 'error'), null, 'error signing in on the Japanese page');
  check(await signedIn(page, keel), 'signed in from the Japanese page');
  t.result = { lang: 'ja' };
});
