// People: the login page works with the keyboard alone (Tab from field to field, Enter signs
// in) and is readable at 375 px wide without scrolling sideways; no inline script anywhere.
//
// params: person {workspace, email, password}.

import { check, checkEqual, scenario, snapshot } from './lib/harness.mjs';
import { LABELS, checkNoHorizontalScroll, checkNoInlineScript, query, signedIn } from './lib/keel.mjs';

/** The label text of the focused element ('' if none). */
function focusedLabel(page) {
  return page.evaluate(() => document.activeElement?.labels?.[0]?.innerText?.trim() ?? '');
}

await scenario('keyboard', async (t) => {
  const { keel, person } = t.params;
  const page = await t.newPage({ viewport: { width: 375, height: 740 } });

  t.step('pages at 375 px');
  for (const path of ['/login', '/forgot-password', '/login?error=invalid_credentials', '/login?lang=ja']) {
    checkEqual((await page.goto(`${keel}${path}`)).status(), 200, `status of ${path}`);
    await checkNoHorizontalScroll(page);
    await checkNoInlineScript(page);
  }
  // The switcher's choice (?lang=ja above) sticks in a cookie: switch back to English.
  await page.goto(`${keel}/login?lang=en`);
  await snapshot(page, 'login-375px');

  t.step('Tab to Workspace');
  let tabs = 0;
  while ((await focusedLabel(page)) !== LABELS.en.workspace && tabs < 15) {
    await page.keyboard.press('Tab');
    tabs += 1;
  }
  checkEqual(await focusedLabel(page), LABELS.en.workspace, `focus after ${tabs} Tab(s)`);
  await page.keyboard.type(person.workspace);

  t.step('Tab to Email and Password, Enter');
  await page.keyboard.press('Tab');
  checkEqual(await focusedLabel(page), LABELS.en.email, 'focus after Workspace');
  await page.keyboard.type(person.email);
  await page.keyboard.press('Tab');
  checkEqual(await focusedLabel(page), LABELS.en.password, 'focus after Email');
  await page.keyboard.type(person.password);
  await page.keyboard.press('Enter');
  await page.waitForURL((url) => url.pathname === '/' || url.searchParams.has('error'));
  checkEqual(query(page, 'error'), null, 'error signing in by keyboard');
  await checkNoHorizontalScroll(page);
  await snapshot(page, 'signed-in-375px');
  check(await signedIn(page, keel), 'signed in with the keyboard alone');
  t.result = { tabs };
});
