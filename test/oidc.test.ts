// Signing in through a real OpenID provider (oidc-provider on loopback), driven the way a
// browser would: redirects followed by hand, cookies kept, the provider's own login and
// consent pages submitted.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, describe, test } from 'node:test';
import {
  mapGroups,
  OidcSignIn,
  OidcSignInError,
  oidcConfigFromEnv,
  PendingSignIns,
  ROLE_ORDER,
  type OidcFailure,
  type OidcSignInOptions,
} from '../src/server/oidc/index.ts';
import { ACCOUNTS, browse, CLIENT_SECRET, freePort, startProvider, type TestProvider } from './oidc-provider.ts';

async function rejects(promise: Promise<unknown>, reason: OidcFailure, message: RegExp): Promise<OidcSignInError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof OidcSignInError, `expected an OidcSignInError, got ${String(err)}`);
    assert.equal(err.reason, reason, err.message);
    assert.match(err.message, message);
    assert.doesNotMatch(err.message, new RegExp(CLIENT_SECRET));
    return err;
  }
  assert.fail(`expected the sign-in to fail with ${reason}`);
}

describe('OIDC sign-in against oidc-provider', () => {
  let op: TestProvider;
  let signIn: OidcSignIn;
  const options = (): OidcSignInOptions => ({
    issuer: op.issuer,
    clientId: 'berth',
    clientSecret: CLIENT_SECRET,
    redirectUri: op.redirectUri,
    allowHttp: true,
  });

  before(async () => {
    op = await startProvider();
    signIn = new OidcSignIn(options());
  });
  after(() => op?.close());

  test('code flow with PKCE, state and nonce ends in the identity; claims come from userinfo', async () => {
    const started = await signIn.begin();
    const url = new URL(started.url);
    assert.equal(url.origin, op.issuer);
    assert.equal(url.searchParams.get('response_type'), 'code');
    assert.equal(url.searchParams.get('client_id'), 'berth');
    assert.equal(url.searchParams.get('redirect_uri'), op.redirectUri);
    assert.equal(url.searchParams.get('scope'), 'openid email profile groups');
    assert.equal(url.searchParams.get('code_challenge_method'), 'S256');
    assert.equal(url.searchParams.get('state'), started.state);
    assert.equal(url.searchParams.get('nonce'), started.nonce);
    assert.ok(!url.href.includes(started.codeVerifier), 'the verifier stays server-side');

    const callback = await browse(started.url, op.redirectUri, 'alice');
    assert.ok(callback.searchParams.get('code'));
    op.claimUses.length = 0;
    const identity = await signIn.complete(callback, started);
    assert.deepEqual(identity, {
      issuer: op.issuer,
      subject: 'alice',
      email: 'alice@example.com',
      emailVerified: true,
      name: 'Alice Liddell',
      groups: ['berth-admins', 'everyone'],
    });
    assert.ok(op.claimUses.includes('userinfo'), 'this provider keeps claims out of the ID token, so userinfo was read');
  });

  test('a callback given as path and query, as the HTTP layer receives it, works too', async () => {
    const started = await signIn.begin();
    const callback = await browse(started.url, op.redirectUri, 'bob');
    const identity = await signIn.complete(`${callback.pathname}${callback.search}`, started);
    assert.equal(identity.subject, 'bob');
    assert.equal(identity.emailVerified, undefined);
    assert.deepEqual(identity.groups, []);
  });

  test('a wrong state is refused before the code is spent; the code works once, then never again', async () => {
    const started = await signIn.begin();
    const callback = await browse(started.url, op.redirectUri, 'alice');
    const code = callback.searchParams.get('code') ?? '';

    const other = await signIn.begin();
    const err = await rejects(signIn.complete(callback, { ...started, state: other.state }), 'state_mismatch', /state mismatch.*start the sign-in again/);
    assert.equal(err.kind, 'unauthorized');
    const noState = new URL(callback);
    noState.searchParams.delete('state');
    await rejects(signIn.complete(noState, started), 'state_mismatch', /state mismatch/);

    assert.equal((await signIn.complete(callback, started)).subject, 'alice');
    const replay = await rejects(signIn.complete(callback, started), 'code_exchange', /did not accept the sign-in \(invalid_grant\)/);
    assert.ok(!replay.message.includes(code), 'the code is not in the message');
  });

  test('a wrong PKCE verifier or nonce is refused', async () => {
    const started = await signIn.begin();
    const callback = await browse(started.url, op.redirectUri, 'alice');
    const other = await signIn.begin();
    await rejects(signIn.complete(callback, { ...started, codeVerifier: other.codeVerifier }), 'code_exchange', /invalid_grant/);

    const again = await signIn.begin();
    const callback2 = await browse(again.url, op.redirectUri, 'alice');
    await rejects(signIn.complete(callback2, { ...again, nonce: other.nonce }), 'id_token', /nonce/);
  });

  test('the user cancelling at the provider is a provider error', async () => {
    const started = await signIn.begin();
    const callback = await browse(started.url, op.redirectUri, 'alice', { abort: true });
    assert.equal(callback.searchParams.get('error'), 'access_denied');
    await rejects(signIn.complete(callback, started), 'provider_error', /refused the sign-in: access_denied \(End-User aborted interaction\)/);
  });

  test('an account without an email address cannot sign in', async () => {
    const started = await signIn.begin();
    const callback = await browse(started.url, op.redirectUri, 'nomail');
    await rejects(signIn.complete(callback, started), 'missing_claim', /did not send an email address/);
  });

  test('a public client signs in with PKCE alone', async () => {
    const pub = new OidcSignIn({ ...options(), clientId: 'berth-public', clientSecret: undefined, scopes: ['openid', 'email'] });
    const started = await pub.begin();
    assert.equal(new URL(started.url).searchParams.get('scope'), 'openid email');
    const identity = await pub.complete(await browse(started.url, op.redirectUri, 'alice'), started);
    assert.equal(identity.email, 'alice@example.com');
    // Without the profile and groups scopes the provider sends neither.
    assert.equal(identity.name, 'alice@example.com');
    assert.deepEqual(identity.groups, []);
  });

  test('a wrong client secret fails at the code exchange without echoing the secret', async () => {
    const wrong = new OidcSignIn({ ...options(), clientSecret: 'not-the-secret' });
    const started = await wrong.begin();
    const callback = await browse(started.url, op.redirectUri, 'alice');
    const err = await rejects(wrong.complete(callback, started), 'code_exchange', /invalid_client/);
    assert.ok(!err.message.includes('not-the-secret'));
  });

  test('discovery: an unreachable issuer is unavailable, retried on the next call; http needs allowHttp', async () => {
    const port = await freePort();
    const down = new OidcSignIn({ ...options(), issuer: `http://127.0.0.1:${port}` });
    const err = await rejects(down.begin(), 'discovery', /could not read the OpenID configuration of http:\/\/127\.0\.0\.1:\d+: fetch failed: .*ECONNREFUSED/);
    assert.equal(err.kind, 'unavailable');
    // A failed discovery is not cached: once the provider is there, sign-in works.
    const late = createServer();
    await new Promise<void>((resolve) => late.listen(port, '127.0.0.1', resolve));
    late.on('request', (_req, res) => res.writeHead(404).end());
    await rejects(down.begin(), 'discovery', /could not read/);
    await new Promise((resolve) => late.close(resolve));

    await rejects(new OidcSignIn({ ...options(), allowHttp: false }).begin(), 'discovery', /must be an https:\/\/ URL/);
  });
});

describe('OIDC sign-in with claims in the ID token', () => {
  let op: TestProvider;
  before(async () => {
    op = await startProvider({ idTokenCarriesClaims: true });
  });
  after(() => op?.close());

  test('email, name and groups are read from the ID token without asking userinfo', async () => {
    const signIn = new OidcSignIn({ issuer: op.issuer, clientId: 'berth', clientSecret: CLIENT_SECRET, redirectUri: op.redirectUri, allowHttp: true });
    const started = await signIn.begin();
    const callback = await browse(started.url, op.redirectUri, 'alice');
    op.claimUses.length = 0;
    const identity = await signIn.complete(callback, started);
    assert.deepEqual(identity.groups, ['berth-admins', 'everyone']);
    assert.equal(identity.email, 'alice@example.com');
    assert.deepEqual(op.claimUses, ['id_token']);
  });
});

describe('PendingSignIns', () => {
  const pending = (state: string) => ({ state, codeVerifier: `v-${state}`, nonce: `n-${state}` });

  test('a pending sign-in is taken once', () => {
    const store = new PendingSignIns();
    store.put(pending('a'));
    assert.deepEqual(store.take('a'), pending('a'));
    assert.equal(store.take('a'), undefined);
    assert.equal(store.take('never'), undefined);
  });

  test('expires after the TTL (10 minutes by default)', () => {
    let now = 1_000_000;
    const store = new PendingSignIns({ now: () => now });
    store.put(pending('a'));
    store.put(pending('b'));
    now += 10 * 60_000 - 1;
    assert.deepEqual(store.take('a'), pending('a'));
    now += 1;
    assert.equal(store.take('b'), undefined);
    assert.equal(store.size, 0);
  });

  test('keeps at most maxEntries, dropping the oldest', () => {
    const store = new PendingSignIns({ maxEntries: 2 });
    store.put(pending('a'));
    store.put(pending('b'));
    store.put(pending('c'));
    assert.equal(store.size, 2);
    assert.equal(store.take('a'), undefined);
    assert.ok(store.take('b'));
    assert.ok(store.take('c'));
  });
});

describe('mapGroups', () => {
  const rules = [
    { group: 'everyone', org: 'acme', role: 'viewer' },
    { group: 'devs', org: 'acme', role: 'member' },
    { group: 'berth-admins', org: 'acme', role: 'admin' },
    { group: 'berth-admins', org: 'ops', role: 'owner' },
    { group: 'ops', org: 'ops', role: 'viewer' },
  ] as const;

  test('the role order', () => {
    assert.deepEqual(ROLE_ORDER, ['owner', 'admin', 'member', 'viewer']);
  });

  test('no groups or no matching rule grant nothing', () => {
    assert.deepEqual(mapGroups([], [...rules]), []);
    assert.deepEqual(mapGroups(['strangers'], [...rules]), []);
    assert.deepEqual(mapGroups(['devs'], []), []);
  });

  test('the highest role wins per org, whatever the rule order', () => {
    assert.deepEqual(mapGroups(['everyone', 'devs'], [...rules]), [{ org: 'acme', role: 'member' }]);
    assert.deepEqual(mapGroups(['ops', 'berth-admins', 'everyone'], [...rules]), [
      { org: 'acme', role: 'admin' },
      { org: 'ops', role: 'owner' },
    ]);
    assert.deepEqual(mapGroups(['everyone', 'devs'], [...rules].reverse()), [{ org: 'acme', role: 'member' }]);
  });

  test('group names match exactly', () => {
    assert.deepEqual(mapGroups(['Devs', 'devs '], [...rules]), []);
  });
});

describe('oidcConfigFromEnv', () => {
  const base = {
    BERTH_OIDC_ISSUER: 'https://login.example.com/realms/main',
    BERTH_OIDC_CLIENT_ID: 'berth',
    BERTH_OIDC_CLIENT_SECRET: CLIENT_SECRET,
    BERTH_OIDC_REDIRECT_URI: 'https://berth.example.com/auth/oidc/callback',
  };
  const fails = (env: Record<string, string | undefined>, message: RegExp) =>
    assert.throws(
      () => oidcConfigFromEnv(env),
      (err: Error & { kind?: string }) => {
        assert.equal(err.kind, 'invalid');
        assert.match(err.message, message);
        assert.ok(!err.message.includes(CLIENT_SECRET), 'the secret is never echoed');
        return true;
      },
    );

  test('not configured: undefined (empty variables count as unset)', () => {
    assert.equal(oidcConfigFromEnv({}), undefined);
    assert.equal(oidcConfigFromEnv({ PATH: '/bin', BERTH_OIDC_ISSUER: '', BERTH_OIDC_GROUPS: ' ' }), undefined);
  });

  test('a complete configuration, with groups in the compact form', () => {
    const config = oidcConfigFromEnv({ ...base, BERTH_OIDC_GROUPS: 'devs=acme:member, cn=admins=acme:admin,,ops=ops:owner' });
    assert.deepEqual(config, {
      issuer: base.BERTH_OIDC_ISSUER,
      clientId: 'berth',
      clientSecret: CLIENT_SECRET,
      redirectUri: base.BERTH_OIDC_REDIRECT_URI,
      scopes: undefined,
      groupsClaim: undefined,
      allowHttp: false,
      groupRules: [
        { group: 'devs', org: 'acme', role: 'member' },
        { group: 'cn=admins', org: 'acme', role: 'admin' },
        { group: 'ops', org: 'ops', role: 'owner' },
      ],
    });
  });

  test('the provider\'s name for the sign-in button', () => {
    assert.equal(oidcConfigFromEnv({ ...base, BERTH_OIDC_NAME: ' Okta ' })?.name, 'Okta');
    assert.equal(oidcConfigFromEnv(base)?.name, undefined);
    fails({ ...base, BERTH_OIDC_NAME: 'x'.repeat(61) }, /BERTH_OIDC_NAME must be at most 60 characters/);
  });

  test('groups as JSON, scopes, groups claim, no secret, and a loopback http issuer', () => {
    const config = oidcConfigFromEnv({
      BERTH_OIDC_ISSUER: 'http://127.0.0.1:9000',
      BERTH_OIDC_CLIENT_ID: 'berth',
      BERTH_OIDC_REDIRECT_URI: 'http://localhost:7070/auth/oidc/callback',
      BERTH_OIDC_GROUPS: '[{"group":"cn=admins,ou=groups,dc=example","org":"acme","role":"owner"}]',
      BERTH_OIDC_SCOPES: 'openid email roles',
      BERTH_OIDC_GROUPS_CLAIM: 'roles',
    });
    assert.equal(config?.allowHttp, true);
    assert.equal(config?.clientSecret, undefined);
    assert.deepEqual(config?.scopes, ['openid', 'email', 'roles']);
    assert.equal(config?.groupsClaim, 'roles');
    assert.deepEqual(config?.groupRules, [{ group: 'cn=admins,ou=groups,dc=example', org: 'acme', role: 'owner' }]);
  });

  test('errors name the variable and say what is wrong', () => {
    fails({ BERTH_OIDC_CLIENT_ID: 'berth', BERTH_OIDC_CLIENT_SECRET: CLIENT_SECRET }, /^BERTH_OIDC_ISSUER is required when other BERTH_OIDC_\* variables are set/);
    fails({ ...base, BERTH_OIDC_CLIENT_ID: undefined }, /^BERTH_OIDC_CLIENT_ID is required when BERTH_OIDC_ISSUER is set/);
    fails({ ...base, BERTH_OIDC_REDIRECT_URI: '' }, /^BERTH_OIDC_REDIRECT_URI is required/);
    fails({ ...base, BERTH_OIDC_ISSUER: 'login.example.com' }, /^BERTH_OIDC_ISSUER must be an http:\/\/ or https:\/\/ URL/);
    fails({ ...base, BERTH_OIDC_REDIRECT_URI: 'ftp://berth.example.com/cb' }, /^BERTH_OIDC_REDIRECT_URI must be an http:\/\/ or https:\/\/ URL/);
    fails({ ...base, BERTH_OIDC_ISSUER: 'http://login.example.com' }, /^BERTH_OIDC_ISSUER must be an https:\/\/ URL/);
    fails({ ...base, BERTH_OIDC_SCOPES: 'email profile' }, /^BERTH_OIDC_SCOPES must include 'openid'/);
    fails({ ...base, BERTH_OIDC_GROUPS: 'devs=acme:boss' }, /^BERTH_OIDC_GROUPS entry 1: role must be one of owner, admin, member, viewer/);
    fails({ ...base, BERTH_OIDC_GROUPS: 'devs=acme:member,devs' }, /^BERTH_OIDC_GROUPS entry 2 is not of the form group=org:role/);
    fails({ ...base, BERTH_OIDC_GROUPS: 'devs=:member' }, /^BERTH_OIDC_GROUPS entry 1: org must not be empty/);
    fails({ ...base, BERTH_OIDC_GROUPS: '[{"group":"devs"' }, /^BERTH_OIDC_GROUPS is not valid JSON/);
    fails({ ...base, BERTH_OIDC_GROUPS: '[{"group":"devs","org":"acme"}]' }, /^BERTH_OIDC_GROUPS entry 1: role must be one of/);
    fails({ ...base, BERTH_OIDC_GROUPS: '[{"group":"devs","org":"acme","role":"admin","extra":1}]' }, /^BERTH_OIDC_GROUPS entry 1: /);
  });
});
