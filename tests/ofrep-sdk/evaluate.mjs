// Evaluates one flag against an OFREP server (Keel) through a stock OpenFeature SDK + OFREP
// provider, then waits for the value to change.
//
//   KEEL_URL=http://127.0.0.1:8080 KEEL_API_KEY=... TENANT_ID=t1 FLAG_KEY=new-ui \
//   EXPECT_FIRST=true EXPECT_CHANGED=false TIMEOUT_MS=30000 node evaluate.mjs
//
// stdout (one JSON object a line, nothing else):
//   {"phase":"first","value":...,"details":{...}}
//   READY
//   {"phase":"changed","value":...,"elapsed_ms":...,"details":{...}}
// Exit 0 once the changed value was seen; exit 1 (reason on stderr) when the first value is
// not EXPECT_FIRST, an evaluation errors, or TIMEOUT_MS passes (per phase).
//
// Optional env:
//   OFREP_MODE        "server" (default): @openfeature/server-sdk + @openfeature/ofrep-provider,
//                     POST /ofrep/v1/evaluate/flags/{key} on every evaluation, no cache.
//                     "web": @openfeature/web-sdk + @openfeature/ofrep-web-provider,
//                     POST /ofrep/v1/evaluate/flags (bulk) once, then cache; changes arrive via
//                     the advertised SSE `eventStreams` or via polling with If-None-Match.
//   OFREP_AUTH        "bearer" (default): `Authorization: Bearer KEEL_API_KEY`;
//                     "x-api-key": `X-API-Key: KEEL_API_KEY` (the spec's other scheme).
//   OFREP_POLL_MS     web mode: bulk polling interval when no SSE stream is in use (default 200;
//                     0 disables polling, so only SSE can deliver the change).
//   OFREP_CHANGE_DETECTION  web mode: "sse" (default) | "polling" | "none".
//   OFREP_SSE_AUTH    web mode: "none" (default, like a browser EventSource: the advertised URL
//                     must carry its own credential) | "header" (send the auth header on the
//                     SSE GET too).
//   EVAL_INTERVAL_MS  re-evaluation interval while waiting (default 100).
//   OFREP_DEBUG=1     log every HTTP request/response status the provider makes to stderr.

const env = process.env;

function fail(msg) {
  process.stderr.write(`evaluate.mjs: ${msg}\n`);
  process.exit(1);
}

function need(name) {
  const v = env[name];
  if (v === undefined || v === '') fail(`missing env ${name}`);
  return v;
}

function parseJsonEnv(name) {
  try {
    return JSON.parse(need(name));
  } catch (e) {
    fail(`env ${name} is not JSON: ${e.message}`);
  }
}

const baseUrl = need('KEEL_URL').replace(/\/+$/, '');
const apiKey = need('KEEL_API_KEY');
const tenantId = need('TENANT_ID');
const flagKey = need('FLAG_KEY');
const expectFirst = parseJsonEnv('EXPECT_FIRST');
const expectChanged = parseJsonEnv('EXPECT_CHANGED');
const timeoutMs = Number(env.TIMEOUT_MS || 30000);
const mode = env.OFREP_MODE || 'server';
const authMode = env.OFREP_AUTH || 'bearer';
const pollMs = Number(env.OFREP_POLL_MS ?? 200);
const changeDetection = env.OFREP_CHANGE_DETECTION || 'sse';
const sseAuth = env.OFREP_SSE_AUTH || 'none';
const evalIntervalMs = Number(env.EVAL_INTERVAL_MS || 100);
const debug = env.OFREP_DEBUG === '1';

const authHeader =
  authMode === 'x-api-key'
    ? ['X-API-Key', apiKey]
    : authMode === 'bearer'
      ? ['Authorization', `Bearer ${apiKey}`]
      : fail(`OFREP_AUTH must be bearer or x-api-key, got ${authMode}`);

// Canonical JSON (sorted keys) for deep equality of flag values.
function canon(v) {
  if (Array.isArray(v)) return `[${v.map(canon).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canon(v[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}
const same = (a, b) => canon(a) === canon(b);

function kindOf(v) {
  if (typeof v === 'boolean') return 'boolean';
  if (typeof v === 'string') return 'string';
  if (typeof v === 'number') return 'number';
  if (v !== null && typeof v === 'object') return 'object';
  return fail(`EXPECT_FIRST must be a boolean, string, number, object or array, got ${JSON.stringify(v)}`);
}
const kind = kindOf(expectFirst);
if (kindOf(expectChanged) !== kind) fail('EXPECT_FIRST and EXPECT_CHANGED must have the same JSON type');

// A default of the right type that is neither expected value, so a silent fallback to the
// default can never pass as success (errors are also checked explicitly below).
const defaultValue = {
  boolean: !expectFirst, // also checked through errorCode, as a boolean has only two values
  string: '__keel_ofrep_default__',
  number: -987654321.5,
  object: { __keel_ofrep_default__: true },
}[kind];

const method = {
  boolean: 'getBooleanDetails',
  string: 'getStringDetails',
  number: 'getNumberDetails',
  object: 'getObjectDetails',
}[kind];

let lastHttp = 'no HTTP response yet';
const loggingFetch = async (input, init) => {
  const req = input instanceof Request ? input : new Request(input, init);
  let res;
  try {
    res = await fetch(input, init);
  } catch (e) {
    lastHttp = `${req.method} ${req.url.replace(/\?.*/, '')} failed: ${e.cause?.code ?? e.cause?.message ?? e.message}`;
    throw e;
  }
  lastHttp = `${req.method} ${req.url.replace(/\?.*/, '')} -> ${res.status}`;
  if (debug) {
    process.stderr.write(
      `evaluate.mjs: ${req.method} ${req.url} -> ${res.status}` +
        ` (If-None-Match: ${req.headers.get('if-none-match') ?? '-'}, ETag: ${res.headers.get('etag') ?? '-'})\n`,
    );
  }
  return res;
};

async function setProvider(OpenFeature, provider) {
  try {
    await OpenFeature.setProviderAndWait(provider);
  } catch (e) {
    fail(`provider initialization failed: ${e.message}${e.cause ? ` (${e.cause.message})` : ''}; last HTTP: ${lastHttp}`);
  }
}

function summarize(d) {
  return {
    flagKey: d.flagKey,
    value: d.value,
    variant: d.variant,
    reason: d.reason,
    errorCode: d.errorCode,
    errorMessage: d.errorMessage,
    flagMetadata: d.flagMetadata,
  };
}

// ---- build the client -------------------------------------------------------------------
let evaluateOnce; // () => Promise<EvaluationDetails>
let onConfigChanged = () => {};

if (mode === 'server') {
  const { OpenFeature } = await import('@openfeature/server-sdk');
  const { OFREPProvider } = await import('@openfeature/ofrep-provider');
  const provider = new OFREPProvider({ baseUrl, headers: [authHeader], fetchImplementation: loggingFetch });
  await setProvider(OpenFeature, provider);
  const client = OpenFeature.getClient();
  const context = { targetingKey: tenantId };
  evaluateOnce = () => client[method](flagKey, defaultValue, context);
} else if (mode === 'web') {
  // Node 20 has no global EventSource; the web provider silently skips SSE without one.
  if (typeof globalThis.EventSource === 'undefined') {
    const { EventSource } = await import('eventsource');
    globalThis.EventSource = class extends EventSource {
      constructor(url, init) {
        if (debug) process.stderr.write(`evaluate.mjs: SSE connect ${String(url).replace(/\?.*/, '?…')}\n`);
        super(url, {
          ...init,
          fetch: (input, reqInit) =>
            fetch(input, {
              ...reqInit,
              headers: { ...(reqInit?.headers ?? {}), ...(sseAuth === 'header' ? { [authHeader[0]]: authHeader[1] } : {}) },
            }),
        });
      }
    };
  }
  const { OpenFeature, ProviderEvents } = await import('@openfeature/web-sdk');
  const { OFREPWebProvider } = await import('@openfeature/ofrep-web-provider');
  const provider = new OFREPWebProvider({
    baseUrl,
    headers: [authHeader],
    fetchImplementation: loggingFetch,
    pollInterval: pollMs,
    changeDetection,
    cacheMode: 'disabled', // no localStorage in Node
    disableVisibilityRefresh: true,
  });
  await OpenFeature.setContext({ targetingKey: tenantId });
  await setProvider(OpenFeature, provider);
  const client = OpenFeature.getClient();
  client.addHandler(ProviderEvents.ConfigurationChanged, (ev) => {
    if (debug) process.stderr.write(`evaluate.mjs: ConfigurationChanged ${JSON.stringify(ev?.flagsChanged ?? [])}\n`);
    onConfigChanged();
  });
  client.addHandler(ProviderEvents.Error, (ev) => process.stderr.write(`evaluate.mjs: provider error: ${ev?.message}\n`));
  evaluateOnce = async () => client[method](flagKey, defaultValue);
} else {
  fail(`OFREP_MODE must be server or web, got ${mode}`);
}

async function evalWithTimeout(ms) {
  let t;
  const timer = new Promise((_, rej) => (t = setTimeout(() => rej(new Error(`evaluation took over ${ms} ms`)), ms)));
  try {
    return await Promise.race([evaluateOnce(), timer]);
  } finally {
    clearTimeout(t);
  }
}

// ---- phase 1: first value ---------------------------------------------------------------
let first;
try {
  first = await evalWithTimeout(timeoutMs);
} catch (e) {
  fail(`first evaluation failed: ${e.message}; last HTTP: ${lastHttp}`);
}
if (first.errorCode) {
  fail(`first evaluation errored: ${first.errorCode}: ${first.errorMessage || '(no message)'}; last HTTP: ${lastHttp}`);
}
process.stdout.write(JSON.stringify({ phase: 'first', value: first.value, details: summarize(first) }) + '\n');
if (!same(first.value, expectFirst)) {
  fail(`first value ${canon(first.value)} != EXPECT_FIRST ${canon(expectFirst)}`);
}
process.stdout.write('READY\n');

// ---- phase 2: wait for the change -------------------------------------------------------
const started = Date.now();
let lastError = null;
let wake = null;
onConfigChanged = () => wake?.();

for (;;) {
  const elapsed = Date.now() - started;
  if (elapsed > timeoutMs) {
    fail(`timed out after ${timeoutMs} ms waiting for ${canon(expectChanged)}` + (lastError ? ` (last error: ${lastError})` : ''));
  }
  let d;
  try {
    d = await evalWithTimeout(Math.max(1, timeoutMs - elapsed));
  } catch (e) {
    lastError = e.message;
    d = null;
  }
  if (d && d.errorCode) {
    lastError = `${d.errorCode}: ${d.errorMessage || '(no message)'}; last HTTP: ${lastHttp}`;
  } else if (d && same(d.value, expectChanged)) {
    process.stdout.write(
      JSON.stringify({ phase: 'changed', value: d.value, elapsed_ms: Date.now() - started, details: summarize(d) }) + '\n',
    );
    process.exit(0);
  }
  // Sleep until the next tick, or earlier when the web provider reports a config change.
  await new Promise((resolve) => {
    const t = setTimeout(resolve, evalIntervalMs);
    wake = () => {
      clearTimeout(t);
      resolve();
    };
  });
  wake = null;
}
