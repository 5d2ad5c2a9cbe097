// Signing in to Berth through a real OpenID provider: the provider's users and groups
// become Berth users and org roles, and the sign-in is on record.
// sandbox: none (test/fakes/fake-runner.ts; scripts/test.ts runs these more at once)
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { browse, CLIENT_SECRET, freePort, startProvider, type TestProvider } from './oidc-provider.ts';
import { startTestBerth, type TestBerth } from './helpers.ts';

let t: TestBerth;
let provider: TestProvider;
before(async () => {
  const port = await freePort();
  const redirectUri = `http://127.0.0.1:${port}/api/auth/oidc/callback`;
  provider = await startProvider({ redirectUri });
  t = await startTestBerth({
    fake: true,
    port,
    oidc: {
      issuer: provider.issuer,
      clientId: 'berth',
      clientSecret: CLIENT_SECRET,
      redirectUri,
      allowHttp: true,
      groupRules: [
        { group: 'berth-admins', org: 'platform', role: 'admin' },
        { group: 'everyone', org: 'default', role: 'viewer' },
      ],
    },
  });
});
after(async () => {
  await t?.destroy();
  await provider?.close();
});

async function signIn(login: string, opts: { cookie?: boolean } = {}) {
  const start = await fetch(`${t.client.url}/api/auth/oidc/start`, { redirect: 'manual' });
  assert.equal(start.status, 302);
  const cookie = start.headers.get('set-cookie')!.split(';')[0]!;
  const callback = await browse(start.headers.get('location')!, `${t.client.url}/api/auth/oidc/callback`, login);
  const res = await fetch(callback, { headers: opts.cookie === false ? {} : { cookie } });
  return { status: res.status, body: (await res.json()) as any };
}

test('a provider user signs in and gets the roles their groups map to', async () => {
  const { status, body } = await signIn('alice');
  assert.equal(status, 200, JSON.stringify(body));
  assert.equal(body.user.email, 'alice@example.com');
  assert.deepEqual(body.orgs.map((o: { name: string; role: string }) => `${o.name}:${o.role}`).sort(), ['default:viewer', 'platform:admin']);

  const as = (path: string, init: RequestInit = {}) => fetch(`${t.client.url}${path}`, { ...init, headers: { authorization: `Bearer ${body.token}`, 'content-type': 'application/json' } });
  assert.equal((await as('/api/orgs/default/environments')).status, 200);
  assert.equal((await as('/api/orgs/default/environments', { method: 'POST', body: '{}' })).status, 403, 'a viewer in default');
  assert.equal((await as('/api/orgs/platform/members')).status, 200);

  const audit = await t.api('GET', '/api/orgs/default/audit?action=auth.sign_in');
  assert.equal(audit.body.items[0].details.email, 'alice@example.com');

  // Signing in again finds the same user.
  const again = await signIn('alice');
  assert.equal(again.body.user.id, body.user.id);
});

test('the sign-in methods say an identity provider is configured, without a token and without starting a sign-in', async () => {
  const res = await fetch(`${t.client.url}/api/auth/methods`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('set-cookie'), null, 'no sign-in state was made');
  assert.deepEqual(await res.json(), { token: true, oidc: { enabled: true } });
  const spec = (await (await fetch(`${t.client.url}/openapi.json`)).json()) as { paths: Record<string, { get?: { security?: unknown[] } }> };
  assert.deepEqual(spec.paths['/api/auth/methods']?.get?.security, []);
});

test('a callback without the browser\'s state cookie is refused', async () => {
  const { status, body } = await signIn('bob', { cookie: false });
  assert.equal(status, 400);
  assert.match(body.error.message, /not started by this browser/);
});
