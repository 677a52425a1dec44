// The e-mailed reset link opens a page to choose a new password; the old one stops working, the
// new one signs in, and the used link says so with a link to ask for a new one.
//
// params: link (from the e-mail), person {workspace, email, password (the old one)}, newPassword.

import { check, checkEqual, scenario, snapshot } from './lib/harness.mjs';
import { LABELS, choosePassword, field, query, signIn, signedIn, text } from './lib/keel.mjs';

await scenario('reset_password', async (t) => {
  const { keel, link, person, newPassword } = t.params;
  check(link.startsWith(`${keel}/reset-password?token=`), 'the e-mailed link opens the reset page');
  const page = await t.newPage();

  t.step('open the e-mailed link');
  checkEqual((await page.goto(link)).status(), 200, 'status of the reset page');
  await snapshot(page, 'reset-password');
  await choosePassword(page, newPassword);
  await page.waitForURL((url) => url.searchParams.has('done') || url.searchParams.has('error'));
  checkEqual(query(page, 'error'), null, 'error choosing the new password');
  checkEqual(query(page, 'done'), '1', 'the reset page says done');

  t.step('the old password no longer signs in');
  await page.goto(`${keel}/login`);
  await signIn(page, person);
  await page.waitForURL((url) => url.searchParams.has('error') || url.pathname === '/');
  checkEqual(query(page, 'error'), 'invalid_credentials', 'the old password');

  t.step('the new password signs in');
  await page.goto(`${keel}/login`);
  await signIn(page, { ...person, password: newPassword });
  await page.waitForURL((url) => url.pathname === '/' || url.searchParams.has('error'));
  checkEqual(query(page, 'error'), null, 'error signing in with the new password');
  check(await signedIn(page, keel), 'signed in with the new password');

  t.step('the used link');
  await page.goto(link);
  checkEqual(await field(page, LABELS.en.password).count(), 0, 'the used link offers no password form');
  const next = page.locator('a[href*="/forgot-password"]');
  check((await next.count()) > 0, 'the used link offers the next step: a link to /forgot-password');
  check((await text(page)).length > 20, 'the used link says what happened in a sentence');
  await snapshot(page, 'reset-password-used');
  t.result = { reset: true };
});
