// Smoke test of the harness itself (works on any Keel): Chromium opens Keel's discovery
// document and keeps a screenshot of it, and openid-client discovers Keel as its issuer.
// With params.failOnPurpose it then fails, to prove a failure leaves a screenshot and the HTML.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { check, checkEqual, scenario } from './lib/harness.mjs';
import { discover } from './lib/rp.mjs';

await scenario('smoke', async (t) => {
  const { keel, outputDir } = t.params;
  const page = await t.newPage();
  t.step('open the discovery document');
  const response = await page.goto(`${keel}/.well-known/openid-configuration`);
  checkEqual(response.status(), 200, 'status of the discovery document');
  const document = JSON.parse(await page.locator('body').innerText());
  checkEqual(document.issuer, keel, 'issuer in the discovery document');
  mkdirSync(outputDir, { recursive: true });
  await page.screenshot({ path: join(outputDir, 'discovery.png'), fullPage: true });

  t.step('openid-client discovery');
  const config = await discover(keel, 'smoke-client');
  const metadata = config.serverMetadata();
  checkEqual(metadata.issuer, keel, 'issuer openid-client discovered');
  check(typeof metadata.jwks_uri === 'string', 'discovery names a jwks_uri');

  t.step('the JWKS in the browser');
  const jwks = await page.goto(metadata.jwks_uri);
  checkEqual(jwks.status(), 200, 'status of the JWKS');
  const keys = JSON.parse(await page.locator('body').innerText()).keys;
  check(Array.isArray(keys) && keys.length > 0, 'the JWKS has keys');

  if (t.params.failOnPurpose) {
    t.step('fail on purpose');
    check(false, 'failing on purpose (harness self-test)');
  }
  t.result = { issuer: metadata.issuer, keys: keys.length, endpoints: Object.keys(metadata).filter((k) => k.endsWith('_endpoint')) };
});
