// The browser test harness: one scenario per node process, run by the Rust integration tests
// (tests/it/browser/). The Rust side writes the scenario's parameters as one JSON object on
// stdin; the scenario drives Debian's headless Chromium (playwright-core, never a downloaded
// browser) against Keel at http://localhost:<port>. On success it prints `RESULT <json>` and
// exits 0; on any failure it saves a full-page screenshot and the HTML of every open page into
// the output directory (params.outputDir), prints `FAIL <scenario>: <why>` and exits 1.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

/** Where Debian's chromium package puts the browser. */
export const CHROMIUM = '/usr/bin/chromium';

/** The flags every launch uses (no network but Keel's and the test's own on this machine). */
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'];

/** A failed expectation. */
export class Failure extends Error {}

/** Fails the scenario with `message` unless `condition` holds. */
export function check(condition, message) {
  if (!condition) throw new Failure(message);
}

/** Fails unless `actual` equals `expected` (compared as JSON). */
export function checkEqual(actual, expected, what) {
  const [a, e] = [JSON.stringify(actual), JSON.stringify(expected)];
  check(a === e, `${what}: expected ${e}, got ${a}`);
}

let outputDir = 'target/test-output/browser';

/** Keeps a full-page screenshot of `page` as `<name>.png` in the output directory (pages to look at). */
export async function snapshot(page, name) {
  mkdirSync(outputDir, { recursive: true });
  await page.screenshot({ path: join(outputDir, `${fileName(name)}.png`), fullPage: true });
}

/** The whole of stdin, parsed as JSON (the scenario's parameters). */
async function readParams() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8').trim();
  return text ? JSON.parse(text) : {};
}

/** A file name made of `text` (letters, digits, '-' and '_' only). */
function fileName(text) {
  return String(text).replace(/[^A-Za-z0-9_-]+/g, '-').slice(0, 80);
}

/**
 * Runs scenario `name`: `body(t)` gets a test context `t` with
 *   t.params              the JSON parameters from the Rust side (`keel` = Keel's base URL)
 *   t.newPage(options)    a page in a fresh browser context (own cookies); options go to
 *                         browser.newContext (locale, viewport, …) plus `allowedOrigins`
 *   t.step(text)          records what the scenario is doing (printed on failure)
 *   t.result              an object printed as `RESULT <json>` on success
 * Every request a page makes must go to Keel's origin or one of `params.allowedOrigins`
 * (the relying parties' callbacks); anything else fails the scenario.
 */
export async function scenario(name, body) {
  let browser;
  const pages = [];
  const steps = [];
  const outsiders = [];
  const t = { params: {}, result: {}, steps };
  try {
    t.params = await readParams();
    outputDir = t.params.outputDir ?? join(outputDir, fileName(name));
    check(typeof t.params.keel === 'string', 'the parameters name Keel\'s base URL as "keel"');
    const keelOrigin = new URL(t.params.keel).origin;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
    t.browser = browser;
    t.step = (text) => {
      steps.push(text);
    };
    t.newContext = async (options = {}) => {
      const { allowedOrigins = [], ...contextOptions } = options;
      const allowed = new Set([keelOrigin, ...(t.params.allowedOrigins ?? []), ...allowedOrigins]);
      const context = await browser.newContext(contextOptions);
      context.on('request', (request) => {
        const url = request.url();
        if (url.startsWith('data:') || url.startsWith('about:')) return;
        if (!allowed.has(new URL(url).origin)) outsiders.push(url);
      });
      context.on('page', (page) => pages.push(page));
      return context;
    };
    t.newPage = async (options = {}) => {
      const context = await t.newContext(options);
      return context.newPage();
    };
    await body(t);
    check(outsiders.length === 0, `pages made requests outside Keel's origin: ${outsiders.join(', ')}`);
    process.stdout.write(`RESULT ${JSON.stringify(t.result)}\n`);
    await browser.close();
    process.exit(0);
  } catch (error) {
    const why = error instanceof Failure ? error.message : (error?.stack ?? String(error));
    const kept = await keepPages(pages, outputDir);
    process.stderr.write(
      `FAIL ${name}: ${why}\n` +
        (steps.length ? `  steps: ${steps.join(' → ')}\n` : '') +
        (outsiders.length ? `  requests outside Keel's origin: ${outsiders.join(', ')}\n` : '') +
        (kept.length ? `  kept: ${kept.join(', ')}\n` : '  no page was open\n'),
    );
    if (browser) await browser.close().catch(() => {});
    process.exit(1);
  }
}

/** Saves a full-page screenshot and the HTML of each open page in `dir`; returns the files. */
async function keepPages(pages, dir) {
  const kept = [];
  const open = pages.filter((page) => !page.isClosed());
  if (open.length === 0) return kept;
  mkdirSync(dir, { recursive: true });
  for (const [i, page] of open.entries()) {
    const base = join(dir, `page${i + 1}-${fileName(new URL(page.url()).pathname || 'blank')}`);
    try {
      await page.screenshot({ path: `${base}.png`, fullPage: true, timeout: 10_000 });
      kept.push(`${base}.png`);
    } catch (error) {
      kept.push(`(no screenshot of ${page.url()}: ${error.message.split('\n')[0]})`);
    }
    try {
      writeFileSync(`${base}.html`, `<!-- ${page.url()} -->\n${await page.content()}`);
      kept.push(`${base}.html`);
    } catch (error) {
      kept.push(`(no HTML of ${page.url()}: ${error.message.split('\n')[0]})`);
    }
  }
  return kept;
}
