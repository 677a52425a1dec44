// Minimal OFREP server used to check evaluate.mjs (and the stock providers) without Keel.
// Serves the shapes from open-feature/protocol service/openapi.yaml + ADR-0008 (SSE).
//
//   node mock-server.mjs            # listens on MOCK_PORT (default 0 = any free port)
//
// Env:
//   MOCK_PORT            port to bind on 127.0.0.1 (default 0; the chosen URL is printed as
//                        `LISTENING http://127.0.0.1:PORT` on stdout)
//   MOCK_API_KEY         if set, requests need `Authorization: Bearer KEY` or `X-API-Key: KEY`
//                        (401 otherwise; 403 when a different key is presented)
//   MOCK_FLAG_KEY        flag served (default "new-ui")
//   MOCK_FIRST           JSON value before the flip (default true)
//   MOCK_CHANGED         JSON value after the flip (default false)
//   MOCK_FLIP_AFTER_MS   flip this long after the first evaluation request (default 3000;
//                        0 = only flip on `POST /mock/flip`)
//   MOCK_SSE             "url" | "endpoint" | "" (default ""): advertise `eventStreams` in the
//                        bulk response, as a full `url` or as `endpoint: {requestUri}`
//   MOCK_SSE_TOKEN       if set, the SSE URL carries `?token=...` and the stream requires it
//                        (instead of a header, as a browser EventSource cannot send headers)
//
// Every request is logged to stderr as one JSON line (method, path, query, auth headers,
// If-None-Match, status) so a test can see what the provider actually sent.
import http from 'node:http';

const env = process.env;
const apiKey = env.MOCK_API_KEY || '';
const flagKey = env.MOCK_FLAG_KEY || 'new-ui';
const first = env.MOCK_FIRST !== undefined ? JSON.parse(env.MOCK_FIRST) : true;
const changed = env.MOCK_CHANGED !== undefined ? JSON.parse(env.MOCK_CHANGED) : false;
const flipAfterMs = env.MOCK_FLIP_AFTER_MS !== undefined ? Number(env.MOCK_FLIP_AFTER_MS) : 3000;
const sseMode = env.MOCK_SSE || '';
const sseToken = env.MOCK_SSE_TOKEN || '';
const SSE_PATH = '/ofrep/v1/event-stream';

let version = 1;
let flipTimer = null;
const sseClients = new Set();
let eventId = 0;

const currentValue = () => (version === 1 ? first : changed);
const etag = () => `"cfg-v${version}"`;
let lastModifiedNow = Math.floor(Date.now() / 1000);

function flip() {
  if (version !== 1) return;
  version = 2;
  lastModifiedNow = Math.floor(Date.now() / 1000);
  log({ event: 'flip', value: currentValue() });
  const data = JSON.stringify({ type: 'refetchEvaluation', etag: etag(), lastModified: lastModifiedNow });
  for (const res of sseClients) {
    res.write(`id: evt-${++eventId}\nevent: message\ndata: ${data}\n\n`);
  }
}

function log(obj) {
  process.stderr.write(JSON.stringify({ mock: true, ...obj }) + '\n');
}

function sendJson(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function sendEmpty(res, status, headers = {}) {
  res.writeHead(status, headers);
  res.end();
}

// Returns null when allowed, else the status to answer with.
function authStatus(req) {
  if (!apiKey) return null;
  const authz = req.headers['authorization'] || '';
  const xkey = req.headers['x-api-key'] || '';
  const presented = authz.startsWith('Bearer ') ? authz.slice(7) : xkey;
  if (!presented) return 401;
  return presented === apiKey ? null : 403;
}

function evaluate(key, context) {
  if (key !== flagKey) {
    return { status: 404, body: { key, errorCode: 'FLAG_NOT_FOUND', errorDetails: `flag '${key}' was not found` } };
  }
  if (!context || typeof context !== 'object' || Array.isArray(context)) {
    return { status: 400, body: { key, errorCode: 'INVALID_CONTEXT', errorDetails: 'context must be an object' } };
  }
  if (typeof context.targetingKey !== 'string' || context.targetingKey === '') {
    return { status: 400, body: { key, errorCode: 'TARGETING_KEY_MISSING', errorDetails: 'targetingKey is required' } };
  }
  return {
    status: 200,
    body: {
      key,
      value: currentValue(),
      reason: 'TARGETING_MATCH',
      variant: version === 1 ? 'first' : 'changed',
      metadata: { configVersion: version, tenant: context.targetingKey },
    },
  };
}

function readBody(req) {
  return new Promise((resolve) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
  });
}

function startFlipTimer() {
  if (flipTimer || flipAfterMs <= 0) return;
  flipTimer = setTimeout(flip, flipAfterMs);
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  const raw = await readBody(req);
  const entry = {
    method: req.method,
    path: url.pathname,
    query: Object.fromEntries(url.searchParams),
    authorization: req.headers['authorization'] ? req.headers['authorization'].replace(/ .*/, ' ***') : undefined,
    xApiKey: req.headers['x-api-key'] ? '***' : undefined,
    contentType: req.headers['content-type'],
    ifNoneMatch: req.headers['if-none-match'],
    accept: req.headers['accept'],
  };
  const done = (status) => log({ ...entry, status });

  if (req.method === 'POST' && url.pathname === '/mock/flip') {
    flip();
    sendJson(res, 200, { version });
    return done(200);
  }

  if (req.method === 'GET' && url.pathname === SSE_PATH) {
    if (sseToken ? url.searchParams.get('token') !== sseToken : authStatus(req)) {
      sendEmpty(res, 401);
      return done(401);
    }
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive' });
    res.write(': connected\n\n');
    sseClients.add(res);
    const ka = setInterval(() => res.write(': keep-alive\n\n'), 15000);
    req.on('close', () => {
      clearInterval(ka);
      sseClients.delete(res);
    });
    return done(200);
  }

  const single = url.pathname.match(/^\/ofrep\/v1\/evaluate\/flags\/(.+)$/);
  const bulk = url.pathname === '/ofrep/v1/evaluate/flags';
  if (!(req.method === 'POST' && (single || bulk))) {
    sendJson(res, 404, { errorDetails: 'no such route' });
    return done(404);
  }

  const denied = authStatus(req);
  if (denied) {
    sendEmpty(res, denied); // spec: 401/403 carry no body
    return done(denied);
  }

  let body;
  try {
    body = raw ? JSON.parse(raw) : {};
  } catch {
    if (single) {
      sendJson(res, 400, { key: decodeURIComponent(single[1]), errorCode: 'PARSE_ERROR', errorDetails: 'body is not JSON' });
    } else {
      sendJson(res, 400, { errorCode: 'PARSE_ERROR', errorDetails: 'body is not JSON' });
    }
    return done(400);
  }
  startFlipTimer();

  if (single) {
    const { status, body: out } = evaluate(decodeURIComponent(single[1]), body.context);
    sendJson(res, status, out);
    return done(status);
  }

  // Bulk: ETag / If-None-Match -> 304 with no body.
  const inm = req.headers['if-none-match'];
  if (inm && inm.split(',').map((s) => s.trim()).includes(etag())) {
    sendEmpty(res, 304, { ETag: etag() });
    return done(304);
  }
  const ctx = body.context;
  if (!ctx || typeof ctx.targetingKey !== 'string' || ctx.targetingKey === '') {
    sendJson(res, 400, { errorCode: 'TARGETING_KEY_MISSING', errorDetails: 'targetingKey is required' });
    return done(400);
  }
  const out = {
    flags: [
      evaluate(flagKey, ctx).body,
      { key: 'always-broken', errorCode: 'PARSE_ERROR', errorDetails: 'flag configuration could not be parsed' },
    ],
    metadata: { configVersion: version },
  };
  if (sseMode) {
    const qs = sseToken ? `?token=${encodeURIComponent(sseToken)}` : '';
    const addr = server.address();
    out.eventStreams = [
      sseMode === 'endpoint'
        ? { type: 'sse', endpoint: { requestUri: SSE_PATH + qs }, inactivityDelaySec: 120 }
        : { type: 'sse', url: `http://127.0.0.1:${addr.port}${SSE_PATH}${qs}`, inactivityDelaySec: 120 },
      { type: 'websocket-from-the-future', url: 'ws://127.0.0.1:1/ignored' }, // must be ignored
    ];
  }
  sendJson(res, 200, out, { ETag: etag() });
  return done(200);
});

server.listen(Number(env.MOCK_PORT || 0), '127.0.0.1', () => {
  process.stdout.write(`LISTENING http://127.0.0.1:${server.address().port}\n`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    for (const res of sseClients) res.end();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 500).unref();
  });
}
