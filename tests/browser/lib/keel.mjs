// What the scenarios do on Keel's pages, by the names in issue 14's contract: the labels
// (Workspace, Email, Password, Confirm password; ワークスペース, メールアドレス, パスワード,
// パスワード（確認）) and the buttons (Sign in; サインイン).

import { check } from './harness.mjs';

/** The labels of the pages, per language (issue 14, "Contract"). */
export const LABELS = {
  en: { workspace: 'Workspace', email: 'Email', password: 'Password', confirm: 'Confirm password', signIn: 'Sign in' },
  ja: {
    workspace: 'ワークスペース',
    email: 'メールアドレス',
    password: 'パスワード',
    confirm: 'パスワード（確認）',
    signIn: 'サインイン',
  },
};

/** The input labelled exactly `label`. */
export function field(page, label) {
  return page.getByLabel(label, { exact: true });
}

/** The button named exactly `name`. */
export function button(page, name) {
  return page.getByRole('button', { name, exact: true });
}

/** Waits for `locator` (an input labelled `what`); fails saying which page lacks it. */
async function waitForField(page, locator, what) {
  try {
    await locator.waitFor({ timeout: 10_000 });
  } catch {
    const title = await page.title().catch(() => '');
    check(false, `${new URL(page.url()).pathname} ("${title}") has no input labelled ${what}`);
  }
}

/** Waits for the login page (its Email or Workspace input) and checks `<html lang>`. */
export async function onLoginPage(page, lang = 'en') {
  const labels = LABELS[lang];
  await waitForField(page, field(page, labels.workspace).or(field(page, labels.email)).first(), `${labels.workspace} or ${labels.email}`);
  const htmlLang = await page.locator('html').getAttribute('lang');
  check(htmlLang?.startsWith(lang), `<html lang> of the login page is ${htmlLang}, expected ${lang}`);
}

/**
 * Fills the login form and clicks Sign in. `workspace` may be empty (a platform account);
 * when the page prefilled it read-only (the app named the tenant) it is left as it is. The
 * fields may come in two steps (workspace first): then Enter in Workspace shows the rest.
 */
export async function signIn(page, { workspace = '', email, password, lang = 'en' }) {
  const labels = LABELS[lang];
  await onLoginPage(page, lang);
  const workspaceInput = field(page, labels.workspace);
  if ((await workspaceInput.count()) > 0 && (await workspaceInput.isEditable())) {
    await workspaceInput.fill(workspace);
    if (!(await field(page, labels.email).isVisible())) await workspaceInput.press('Enter');
  }
  await field(page, labels.email).fill(email);
  await field(page, labels.password).fill(password);
  await button(page, labels.signIn).click();
}

/** Sets a new password on an invitation or reset page (Password, and Confirm password if shown). */
export async function choosePassword(page, password, lang = 'en') {
  const labels = LABELS[lang];
  await waitForField(page, field(page, labels.password), labels.password);
  await field(page, labels.password).fill(password);
  const confirm = field(page, labels.confirm);
  if ((await confirm.count()) > 0) await confirm.fill(password);
  const submit = page.locator('form').filter({ has: field(page, labels.password) }).locator('button, input[type=submit]');
  check((await submit.count()) === 1, `the password form has one submit button (found ${await submit.count()})`);
  await submit.click();
}

/** Whether the browser holds a Keel session: `GET /` shows the signed-in page, not /login. */
export async function signedIn(page, keel) {
  await page.goto(`${keel}/`);
  return !new URL(page.url()).pathname.startsWith('/login');
}

/** The login page's query parameter `name` after a form post (e.g. `error`). */
export function query(page, name) {
  return new URL(page.url()).searchParams.get(name);
}

/** Visible text of the page body, whitespace collapsed. */
export async function text(page) {
  return (await page.locator('body').innerText()).replace(/\s+/g, ' ').trim();
}

/** Fails if the page has an inline script or loads anything it should not. */
export async function checkNoInlineScript(page) {
  const inline = await page.locator('script:not([src])').count();
  check(inline === 0, `${page.url()} has ${inline} inline script(s)`);
}

/** Fails if the page is wider than the viewport (horizontal scroll). */
export async function checkNoHorizontalScroll(page) {
  const { scrollWidth, innerWidth } = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
  }));
  check(scrollWidth <= innerWidth, `${new URL(page.url()).pathname} scrolls sideways: ${scrollWidth} px in ${innerWidth} px`);
}
