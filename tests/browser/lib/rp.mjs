// A relying party as a managed app would be one: openid-client v6 (a certified RP library,
// used as shipped) and a tiny HTTP server on localhost that receives the browser at the
// app's redirect URI and post-logout redirect URI.

import { createServer } from 'node:http';
import * as client from 'openid-client';
import { check } from './harness.mjs';

/**
 * Discovers Keel at `issuer` (http://localhost:<port>: allowed as insecure, on loopback only)
 * as client `clientId`, public (PKCE only) unless `clientSecret` is given. ID token
 * signatures are checked against the JWKS (enableNonRepudiationChecks).
 */
export async function discover(issuer, clientId, clientSecret) {
  const auth = clientSecret ? client.ClientSecretBasic(clientSecret) : client.None();
  const config = await client.discovery(new URL(issuer), clientId, undefined, auth, {
    execute: [client.allowInsecureRequests],
  });
  client.enableNonRepudiationChecks(config);
  return config;
}

/** One authorization request's secrets and URL (PKCE S256, state, nonce). */
export async function authorizationRequest(config, parameters) {
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const url = client.buildAuthorizationUrl(config, {
    scope: 'openid email',
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    nonce,
    ...parameters,
  });
  return { url, verifier, state, nonce };
}

/** Exchanges the code in `callbackUrl` for tokens (checks state, nonce, iss, the ID token). */
export async function exchange(config, callbackUrl, request) {
  return client.authorizationCodeGrant(config, new URL(callbackUrl), {
    pkceCodeVerifier: request.verifier,
    expectedState: request.state,
    expectedNonce: request.nonce,
    idTokenExpected: true,
  });
}

export { client };

/**
 * The relying party's HTTP server on 127.0.0.1:`port`, reached as http://localhost:<port>.
 * Every GET is recorded and answered with a plain page; `next(path)` resolves with the full
 * URL of the next request to `path` (and fails after `timeoutMs`). `serve(path, html)` makes
 * `path` answer `html` instead (an attacker's page, say).
 */
export async function callbackServer(port) {
  const waiting = new Map();
  const seen = new Map();
  const pages = new Map();
  const server = createServer((request, response) => {
    const url = new URL(request.url, `http://localhost:${port}`);
    const html = pages.get(url.pathname) ?? '<!doctype html><html lang="en"><title>Relying party</title><p>Received.</p></html>';
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    response.end(html);
    if (request.method !== 'GET' || pages.has(url.pathname)) return;
    const resolve = waiting.get(url.pathname);
    if (resolve) {
      waiting.delete(url.pathname);
      resolve(url.href);
    } else {
      seen.set(url.pathname, url.href);
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return {
    origin: `http://localhost:${port}`,
    serve(path, html) {
      pages.set(path, html);
    },
    next(path, timeoutMs = 15_000) {
      const already = seen.get(path);
      if (already) {
        seen.delete(path);
        return Promise.resolve(already);
      }
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiting.delete(path);
          reject(new Error(`the browser did not reach the relying party's ${path} within ${timeoutMs} ms`));
        }, timeoutMs);
        waiting.set(path, (href) => {
          clearTimeout(timer);
          resolve(href);
        });
      });
    },
    close() {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Fails unless `claims` has every claim issue 14 requires of an ID token, with sane values. */
export function checkIdTokenClaims(claims, { issuer, clientId, nonce, email }) {
  for (const name of ['iss', 'sub', 'aud', 'exp', 'iat', 'nonce', 'auth_time', 'sid', 'tid', 'email', 'amr']) {
    check(claims[name] !== undefined, `the ID token has no "${name}" claim: ${Object.keys(claims).join(', ')}`);
  }
  check(claims.iss === issuer, `ID token iss ${claims.iss}, expected ${issuer}`);
  const audience = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  check(audience.includes(clientId), `ID token aud ${JSON.stringify(claims.aud)} lacks ${clientId}`);
  check(claims.nonce === nonce, 'the ID token carries the request\'s nonce');
  check(claims.email === email, 'the ID token\'s email is the signed-in person\'s');
  check(Array.isArray(claims.amr) && claims.amr.length > 0, `amr is a non-empty array: ${JSON.stringify(claims.amr)}`);
  const now = Math.floor(Date.now() / 1000);
  check(claims.iat <= now + 5 && claims.exp > now, `iat ${claims.iat} / exp ${claims.exp} around now ${now}`);
  check(claims.auth_time <= now + 5 && claims.auth_time > now - 600, `auth_time ${claims.auth_time} is recent`);
}
