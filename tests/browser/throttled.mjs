// Repeated wrong passwords on the login page end in the 429 message (too_many_attempts, with
// retry_after), shown in words, not as a bare code; then even the right password is refused
// for now. Neither the e-mail nor the password ever appears in a URL.
//
// params: person {workspace, email, password}.

import { check, checkEqual, scenario, snapshot } from './lib/harness.mjs';
import { onLoginPage, query, signIn, signedIn, text } from './lib/keel.mjs';

await scenario('throttled', async (t) => {
  const { keel, person } = t.params;
  const page = await t.newPage();
  const urls = [];
  page.on('request', (request) => urls.push(request.url()));
  let firstRefusal;
  let throttled = null;

  for (let attempt = 1; attempt <= 12 && !throttled; attempt += 1) {
    t.step(`wrong password #${attempt}`);
    await page.goto(`${keel}/login`);
    await signIn(page, { ...person, password: `wrong password ${attempt}` });
    await page.waitForURL((url) => url.searchParams.has('error'));
    const error = query(page, 'error');
    if (error === 'too_many_attempts') {
      throttled = { attempt, retryAfter: Number(query(page, 'retry_after')) };
    } else {
      checkEqual(error, 'invalid_credentials', `error after wrong password #${attempt}`);
      firstRefusal ??= await text(page);
    }
  }
  check(throttled, 'twelve wrong passwords in a row end in too_many_attempts');
  check(throttled.attempt > 1, 'the first wrong password is an ordinary refusal');
  check(throttled.retryAfter > 0, `retry_after is a positive number of seconds: ${query(page, 'retry_after')}`);
  await onLoginPage(page);
  const message = await text(page);
  await snapshot(page, 'too-many-attempts');
  check(message !== firstRefusal, 'the 429 message differs from the wrong-password message');
  check(!message.includes('too_many_attempts'), 'the 429 message is words, not the error code');

  t.step('the right password, while throttled');
  await page.goto(`${keel}/login`);
  await signIn(page, person);
  await page.waitForURL((url) => url.searchParams.has('error') || url.pathname === '/');
  checkEqual(query(page, 'error'), 'too_many_attempts', 'the right password while throttled');
  check(!(await signedIn(page, keel)), 'not signed in while throttled');

  const leaked = urls.filter((url) => {
    const decoded = decodeURIComponent(url.replaceAll('+', ' '));
    return decoded.includes(person.email) || decoded.includes('wrong password') || decoded.includes(person.password);
  });
  check(leaked.length === 0, `${leaked.length} URL(s) carried the e-mail or a password`);
  t.result = { throttledAfter: throttled.attempt, retryAfter: throttled.retryAfter };
});
