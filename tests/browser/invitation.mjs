// The invited owner opens the e-mailed invitation link, sets a password (Password, Confirm
// password), then signs in on the login page; the used link (and a forged one) then says so.
//
// params: link (from the e-mail), person {workspace, email, password (the one to choose)}.

import { check, checkEqual, scenario, snapshot } from './lib/harness.mjs';
import { LABELS, choosePassword, field, query, signIn, signedIn, text } from './lib/keel.mjs';

await scenario('invitation', async (t) => {
  const { keel, link, person } = t.params;
  check(link.startsWith(`${keel}/invitation?token=`), 'the e-mailed link opens the invitation page');
  const page = await t.newPage();

  t.step('open the e-mailed link');
  const response = await page.goto(link);
  checkEqual(response.status(), 200, 'status of the invitation page');
  await field(page, LABELS.en.password).waitFor({ timeout: 10_000 });
  check(/\d/.test(await text(page)), 'the invitation page shows the password policy (a minimum length)');
  await snapshot(page, 'invitation');

  t.step('choose a password');
  await choosePassword(page, person.password);
  await page.waitForURL((url) => url.searchParams.has('done') || url.searchParams.has('error'));
  checkEqual(query(page, 'error'), null, 'error after choosing the password');
  checkEqual(query(page, 'done'), '1', 'the invitation page says done');

  t.step('sign in with the new password');
  await page.goto(`${keel}/login`);
  await signIn(page, person);
  await page.waitForURL((url) => url.pathname === '/' || url.searchParams.has('error'));
  checkEqual(query(page, 'error'), null, 'error signing in');
  check((await text(page)).includes(person.email), 'the signed-in page names the person');
  check(await signedIn(page, keel), 'signed in');

  for (const [what, url] of [
    ['the used link', link],
    ['a forged link', `${keel}/invitation?token=keel_inv_${'0'.repeat(43)}`],
  ]) {
    t.step(`open ${what}`);
    await page.goto(url);
    checkEqual(await field(page, LABELS.en.password).count(), 0, `${what} offers no password form`);
    check(/invitation/i.test(await text(page)), `${what} says the invitation no longer works and to ask for a new one`);
  }
  await snapshot(page, 'invitation-used');
  t.result = { accepted: true };
});
