// Issue 14, "How we will know", first point: a stock OIDC client library (openid-client v6)
// signs a person in through Keel's real pages in headless Chromium: discovery → authorization
// request (PKCE S256, state, nonce) → login page → code → tokens → ID token verified against the
// JWKS → userinfo → a second client signed in silently by the Keel session → RP-initiated
// logout ends both (their refresh tokens fail afterwards).
//
// params: person {tenantId, workspace, email, password}, rpPort, apps: [public, confidential],
// each {clientId, clientSecret?, redirectUri, postLogoutRedirectUri} on http://localhost:<rpPort>.

import { createRemoteJWKSet, jwtVerify } from 'jose';
import { check, checkEqual, scenario } from './lib/harness.mjs';
import { onLoginPage, signIn, signedIn } from './lib/keel.mjs';
import { authorizationRequest, callbackServer, checkIdTokenClaims, client, discover, exchange } from './lib/rp.mjs';

await scenario('relying_party', async (t) => {
  const { keel, person, apps, rpPort } = t.params;
  const [first, second] = apps;
  const rp = await callbackServer(rpPort);
  try {
    const page = await t.newPage({ allowedOrigins: [rp.origin] });
    const visited = [];
    page.on('framenavigated', (frame) => {
      if (frame === page.mainFrame()) visited.push(new URL(frame.url()).pathname);
    });

    t.step('discovery');
    const config1 = await discover(keel, first.clientId);
    const metadata = config1.serverMetadata();
    for (const name of ['authorization_endpoint', 'token_endpoint', 'userinfo_endpoint', 'end_session_endpoint']) {
      check(typeof metadata[name] === 'string' && metadata[name].startsWith(keel), `discovery lists ${name} on Keel: ${metadata[name]}`);
    }
    check(metadata.code_challenge_methods_supported?.includes('S256'), 'discovery lists S256 in code_challenge_methods_supported');
    for (const grant of ['authorization_code', 'refresh_token']) {
      check(metadata.grant_types_supported?.includes(grant), `discovery lists ${grant} in grant_types_supported`);
    }

    t.step('authorization request of the first (public) client');
    const request1 = await authorizationRequest(config1, { redirect_uri: first.redirectUri });
    await page.goto(request1.url.href);
    checkEqual(new URL(page.url()).pathname, '/login', 'without a session the authorization request shows the login page');
    check(new URL(page.url()).searchParams.get('interaction'), 'the login page carries the interaction');
    await onLoginPage(page);

    t.step('sign in on the login page');
    const callbackWait = rp.next(new URL(first.redirectUri).pathname);
    await signIn(page, person);
    const callback1 = await callbackWait;
    const callbackParams = new URL(callback1).searchParams;
    check(!callbackParams.get('error'), `the callback has no error: ${callbackParams.get('error')} ${callbackParams.get('error_description')}`);
    checkEqual(callbackParams.get('state'), request1.state, 'state in the callback');

    t.step('code exchange');
    const tokens1 = await exchange(config1, callback1, request1);
    check(tokens1.access_token && tokens1.refresh_token && tokens1.id_token, 'the code grant answers access, refresh and ID tokens');
    const claims1 = tokens1.claims();
    checkIdTokenClaims(claims1, { issuer: keel, clientId: first.clientId, nonce: request1.nonce, email: person.email });
    checkEqual(claims1.tid, person.tenantId, 'tid of the ID token');

    t.step('ID token against the JWKS');
    const jwks = createRemoteJWKSet(new URL(metadata.jwks_uri));
    const verified = await jwtVerify(tokens1.id_token, jwks, { issuer: keel, audience: first.clientId });
    checkEqual(verified.payload.sub, claims1.sub, 'sub of the independently verified ID token');

    t.step('userinfo');
    const userinfo = await client.fetchUserInfo(config1, tokens1.access_token, claims1.sub);
    checkEqual(userinfo.sub, claims1.sub, 'userinfo sub');
    checkEqual(userinfo.email, person.email, 'userinfo email');
    checkEqual(userinfo.tid, person.tenantId, 'userinfo tid');

    t.step('the second (confidential) client signs in silently');
    const config2 = await discover(keel, second.clientId, second.clientSecret);
    const request2 = await authorizationRequest(config2, { redirect_uri: second.redirectUri, tenant: person.workspace });
    visited.length = 0;
    const callback2Wait = rp.next(new URL(second.redirectUri).pathname);
    await page.goto(request2.url.href);
    const callback2 = await callback2Wait;
    check(!visited.includes('/login'), `the second client needed no sign-in, but the browser went through ${visited.join(' → ')}`);
    const tokens2 = await exchange(config2, callback2, request2);
    const claims2 = tokens2.claims();
    checkIdTokenClaims(claims2, { issuer: keel, clientId: second.clientId, nonce: request2.nonce, email: person.email });
    checkEqual(claims2.sub, claims1.sub, 'the same person for both clients');
    checkEqual(claims2.sid, claims1.sid, 'the same Keel session for both clients');

    t.step('prompt=login forces a fresh sign-in');
    const forced = await authorizationRequest(config2, { redirect_uri: second.redirectUri, prompt: 'login' });
    await page.goto(forced.url.href);
    checkEqual(new URL(page.url()).pathname, '/login', 'prompt=login shows the login page despite the session');

    t.step('the second client refreshes (before sign-out)');
    const refreshed2 = await client.refreshTokenGrant(config2, tokens2.refresh_token);
    check(refreshed2.access_token && refreshed2.refresh_token, 'a refresh works while the session lives');

    t.step('RP-initiated logout');
    const logoutState = client.randomState();
    const endSession = client.buildEndSessionUrl(config1, {
      id_token_hint: tokens1.id_token,
      post_logout_redirect_uri: first.postLogoutRedirectUri,
      state: logoutState,
    });
    const loggedOutWait = rp.next(new URL(first.postLogoutRedirectUri).pathname);
    await page.goto(endSession.href);
    const loggedOut = new URL(await loggedOutWait);
    checkEqual(loggedOut.searchParams.get('state'), logoutState, 'state on the post-logout redirect');

    t.step('sign-out ended both clients\' tokens and the cookie session');
    const refusals = [];
    for (const [name, config, token] of [
      ['first', config1, tokens1.refresh_token],
      ['second', config2, refreshed2.refresh_token],
    ]) {
      try {
        await client.refreshTokenGrant(config, token);
        refusals.push(`${name}: still refreshes`);
      } catch (error) {
        if (error.error !== 'invalid_grant') refusals.push(`${name}: ${error.error ?? error.message}`);
      }
    }
    check(refusals.length === 0, `after sign-out every refresh token answers invalid_grant: ${refusals.join('; ')}`);
    check(!(await signedIn(page, keel)), 'after sign-out GET / no longer shows a signed-in page');
    const silent = await authorizationRequest(config2, { redirect_uri: second.redirectUri, prompt: 'none' });
    const noneWait = rp.next(new URL(second.redirectUri).pathname);
    await page.goto(silent.url.href);
    checkEqual(new URL(await noneWait).searchParams.get('error'), 'login_required', 'prompt=none after sign-out');

    t.result = { sub: claims1.sub, sid: claims1.sid, tid: claims1.tid, amr: claims1.amr, silent: true, signedOut: true };
  } finally {
    await rp.close();
  }
});
