// Runs evaluate.mjs against mock-server.mjs in the supported modes (dev aid, no Keel needed):
//   node selftest.mjs
import { spawn } from 'node:child_process';
import { once } from 'node:events';

const here = new URL('.', import.meta.url).pathname;

const cases = [
  { name: 'server provider, single endpoint, bool', mock: {}, eval: { OFREP_MODE: 'server' } },
  { name: 'server provider, x-api-key, object', mock: { MOCK_FIRST: '{"a":1}', MOCK_CHANGED: '{"a":2}' },
    eval: { OFREP_MODE: 'server', OFREP_AUTH: 'x-api-key', EXPECT_FIRST: '{"a":1}', EXPECT_CHANGED: '{"a":2}' } },
  { name: 'web provider, bulk + ETag polling', mock: {}, eval: { OFREP_MODE: 'web' } },
  { name: 'web provider, SSE url with token, polling off', mock: { MOCK_SSE: 'url', MOCK_SSE_TOKEN: 't0k' },
    eval: { OFREP_MODE: 'web', OFREP_POLL_MS: '0' } },
  { name: 'web provider, SSE endpoint form, header auth, polling off', mock: { MOCK_SSE: 'endpoint' },
    eval: { OFREP_MODE: 'web', OFREP_POLL_MS: '0', OFREP_SSE_AUTH: 'header' } },
  { name: 'wrong EXPECT_FIRST exits 1', mock: {}, eval: { EXPECT_FIRST: 'false', EXPECT_CHANGED: 'true' }, expectExit: 1 },
  { name: 'unknown flag exits 1', mock: {}, eval: { FLAG_KEY: 'missing' }, expectExit: 1 },
];

async function runCase(c) {
  const mock = spawn(process.execPath, [here + 'mock-server.mjs'], {
    env: { ...process.env, MOCK_API_KEY: 'sekret', MOCK_FLIP_AFTER_MS: '1000', ...c.mock },
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  try {
    const [line] = await once(mock.stdout, 'data');
    const url = String(line).trim().split(' ')[1];
    const child = spawn(process.execPath, [here + 'evaluate.mjs'], {
      env: {
        ...process.env, KEEL_URL: url, KEEL_API_KEY: 'sekret', TENANT_ID: 'tenant-1', FLAG_KEY: 'new-ui',
        EXPECT_FIRST: 'true', EXPECT_CHANGED: 'false', TIMEOUT_MS: '8000', ...c.eval,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const [code] = await once(child, 'exit');
    const want = c.expectExit ?? 0;
    const ok = code === want && (want !== 0 || /"phase":"changed"/.test(out));
    console.log(`${ok ? 'ok  ' : 'FAIL'} ${c.name} (exit ${code})`);
    if (!ok) console.log(out + err);
    return ok;
  } finally {
    mock.kill();
  }
}

let passed = 0;
let failed = 0;
for (const c of cases) (await runCase(c)) ? passed++ : failed++;
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
