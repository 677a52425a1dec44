// "Forgot password?" on the login page starts the reset: the forgot-password page takes the
// workspace and e-mail and answers "check your mail", the same whether or not the account exists.
//
// params: person {workspace, email}.

import { check, checkEqual, scenario, snapshot } from './lib/harness.mjs';
import { LABELS, field, onLoginPage, query, text } from './lib/keel.mjs';

/** Fills and sends the forgot-password form; returns the answer page's text. */
async function ask(page, workspace, email) {
  await field(page, LABELS.en.email).waitFor({ timeout: 10_000 });
  const workspaceInput = field(page, LABELS.en.workspace);
  if ((await workspaceInput.count()) > 0 && (await workspaceInput.isEditable())) await workspaceInput.fill(workspace);
  await field(page, LABELS.en.email).fill(email);
  const submit = page.locator('form').filter({ has: field(page, LABELS.en.email) }).locator('button, input[type=submit]');
  checkEqual(await submit.count(), 1, 'submit buttons of the forgot-password form');
  await submit.click();
  await page.waitForURL((url) => url.searchParams.has('done') || url.searchParams.has('error'));
  checkEqual(query(page, 'error'), null, 'error asking for a reset');
  return text(page);
}

await scenario('forgot_password', async (t) => {
  const { keel, person } = t.params;
  const page = await t.newPage();

  t.step('"Forgot password?" on the login page');
  await page.goto(`${keel}/login?workspace=${encodeURIComponent(person.workspace)}`);
  await onLoginPage(page);
  await page.getByRole('link', { name: 'Forgot password?' }).click();
  await page.waitForURL((url) => url.pathname === '/forgot-password');
  checkEqual(query(page, 'workspace'), person.workspace, 'the link carries the workspace');

  t.step('ask for a reset of an existing account');
  const known = await ask(page, person.workspace, person.email);
  await snapshot(page, 'check-your-mail');
  check(!known.includes(person.email), 'the answer does not echo the e-mail address');

  t.step('ask for a reset of an unknown account');
  await page.goto(`${keel}/forgot-password?workspace=${encodeURIComponent(person.workspace)}`);
  const unknown = await ask(page, person.workspace, `nobody-${Date.now()}@example.com`);
  checkEqual(unknown, known, 'the answer for an unknown account (enumeration-safe)');
  t.result = { asked: true };
});
