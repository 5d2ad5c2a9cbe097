// Orgs cannot see each other; roles limit what members can do; tokens expire and revoke.
// The cross-org and role checks walk the app's route table, so a new route is covered
// the moment it exists.
// sandbox: none (test/fakes/fake-runner.ts; scripts/test.ts runs these more at once)
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { PERMISSIONS, roleRank } from '../src/server/authz.ts';
import { apiAs, startTestBerth, type TestBerth } from './helpers.ts';

let t: TestBerth;
const as = (token: string) => apiAs(t, token);
let admin: ReturnType<typeof as>;
let envA: { id: string; name: string };
const tokens: Record<string, string> = {};

before(async () => {
  // About the API and roles, not the sandbox: the fake runner is enough.
  t = await startTestBerth({ fake: true });
  admin = as(t.client.token);
  // Org A is 'default' (the admin owns it); org B is another team's.
  assert.equal((await admin('POST', '/api/orgs', { name: 'team-b' })).status, 201);
  envA = (await admin('POST', '/api/orgs/default/environments', { name: 'secret-project' })).body;
  for (const role of ['viewer', 'member', 'admin', 'owner']) {
    const made = await admin('POST', '/api/orgs/default/tokens', { role, name: `a-${role}` });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    tokens[`a-${role}`] = made.body.token;
  }
  tokens['b-owner'] = (await admin('POST', '/api/orgs/team-b/tokens', { role: 'owner' })).body.token;
});
after(async () => {
  await t?.destroy();
});

/** A concrete URL for a route template, pointing at org A's objects. */
function urlFor(template: string, org: string, envId = envA.id): string {
  return template
    .replace(':org', org)
    .replace(':id', envId)
    .replace(':email', 'nobody%40example.com')
    .replace(':name', 'SOME_SECRET');
}

describe('tenancy', () => {
  test('every org route answers 404 to another org, for its objects and its name', async () => {
    const b = as(tokens['b-owner']!);
    const routes = t.berth.app.routeTable.filter((r) => r.url.startsWith('/api/orgs/:org'));
    assert.ok(routes.length >= 10, `found ${routes.length} org routes`);
    for (const route of routes) {
      for (const org of ['default', (await admin('GET', '/api/orgs')).body.items.find((o: { name: string }) => o.name === 'default').id]) {
        const res = await b(route.method, urlFor(route.url, org), route.method === 'GET' || route.method === 'DELETE' ? undefined : {});
        assert.equal(res.status, 404, `${route.method} ${route.url} as org B -> ${res.status} ${JSON.stringify(res.body)}`);
        assert.doesNotMatch(JSON.stringify(res.body), /secret-project|env_/, 'nothing about org A leaks');
      }
    }
    // Org B's own view of environments does not include A's.
    const list = await b('GET', '/api/orgs/team-b/environments');
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.items, []);
    assert.equal((await b('GET', `/api/orgs/team-b/environments/${envA.id}`)).status, 404);
    assert.deepEqual((await b('GET', '/api/orgs')).body.items.map((o: { name: string }) => o.name), ['team-b']);
  });

  test('each route refuses roles below its permission with 403 and accepts the rest', async () => {
    const routes = t.berth.app.routeTable.filter((r) => r.url.startsWith('/api/orgs/:org') && !r.websocket);
    // Allowed calls really happen (a stop, a delete): aim them at an environment of their own.
    const victim = (await admin('POST', '/api/orgs/default/environments', { name: 'victim' })).body;
    for (const route of routes) {
      const need = PERMISSIONS[route.permission!];
      for (const role of ['viewer', 'member', 'admin'] as const) {
        const res = await as(tokens[`a-${role}`]!)(route.method, urlFor(route.url, 'default', victim.id), route.method === 'GET' || route.method === 'DELETE' ? undefined : {});
        if (roleRank(role) < roleRank(need)) {
          assert.equal(res.status, 403, `${role} ${route.method} ${route.url} -> ${res.status}`);
          assert.match(res.body.error.message, new RegExp(`needs ${need}`));
        } else {
          assert.notEqual(res.status, 403, `${role} ${route.method} ${route.url} should be allowed (${JSON.stringify(res.body)})`);
        }
      }
    }
  });

  test('a viewer can read but not exec, stop or create', async () => {
    const viewer = as(tokens['a-viewer']!);
    assert.equal((await viewer('GET', `/api/orgs/default/environments/${envA.id}`)).status, 200);
    assert.equal((await viewer('POST', `/api/orgs/default/environments/${envA.id}/exec`, { cmd: ['true'] })).status, 403);
    assert.equal((await viewer('POST', `/api/orgs/default/environments/${envA.id}/stop`)).status, 403);
    assert.equal((await viewer('POST', '/api/orgs/default/environments', {})).status, 403);
    const member = as(tokens['a-member']!);
    assert.equal((await member('POST', `/api/orgs/default/environments/${envA.id}/exec`, { cmd: ['true'] })).body.exitCode, 0);
    assert.equal((await member('PUT', '/api/orgs/default/members/x%40example.com', { role: 'member' })).status, 403);
  });
});

describe('tokens', () => {
  test('shown once, stored as a hash, revocable, and they expire', async () => {
    const made = await admin('POST', '/api/orgs/default/tokens', { role: 'viewer', name: 'ci', expires: '30d' });
    assert.equal(made.status, 201);
    const stored = await t.berth.database.db.selectFrom('tokens').selectAll().where('id', '=', made.body.id).executeTakeFirstOrThrow();
    assert.notEqual(stored.hash, made.body.token);
    assert.doesNotMatch(JSON.stringify(stored), new RegExp(made.body.token));
    const listed = await admin('GET', '/api/orgs/default/tokens');
    assert.doesNotMatch(JSON.stringify(listed.body), new RegExp(made.body.token), 'never shown again');

    const ci = as(made.body.token);
    assert.equal((await ci('GET', '/api/orgs/default/environments')).status, 200);
    const used = await admin('GET', '/api/orgs/default/tokens');
    assert.ok(used.body.items.find((x: { id: string }) => x.id === made.body.id).lastUsedAt);

    await t.berth.database.db.updateTable('tokens').set({ expires_at: new Date(Date.now() - 1000) }).where('id', '=', made.body.id).execute();
    // A verified token is remembered for a second; an edit behind the server's back shows after it.
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal((await ci('GET', '/api/orgs/default/environments')).status, 401);

    const other = await admin('POST', '/api/orgs/default/tokens', { role: 'member' });
    assert.equal((await admin('DELETE', `/api/orgs/default/tokens/${other.body.id}`)).status, 204);
    const revoked = await as(other.body.token)('GET', '/api/orgs/default/environments');
    assert.equal(revoked.status, 401);
    assert.match(revoked.body.error.message, /revoked or expired/);
  });

  test('a token cannot outrank its maker, and bad lifetimes are refused', async () => {
    const member = as(tokens['a-member']!);
    const res = await member('POST', '/api/orgs/default/tokens', { role: 'admin' });
    assert.equal(res.status, 403);
    assert.equal((await admin('POST', '/api/orgs/default/tokens', { role: 'viewer', expires: 'forever' })).status, 400);
  });
});

describe('members', () => {
  test('admins manage members but not owners; the last owner stays', async () => {
    const adminOfA = as(tokens['a-admin']!);
    assert.equal((await adminOfA('PUT', '/api/orgs/default/members/dev%40example.com', { role: 'member' })).status, 200);
    assert.equal((await adminOfA('PUT', '/api/orgs/default/members/boss%40example.com', { role: 'owner' })).status, 403);
    const members = await adminOfA('GET', '/api/orgs/default/members');
    assert.deepEqual(members.body.items.map((m: { email: string; role: string }) => `${m.email}:${m.role}`).sort(), ['admin@localhost:owner', 'dev@example.com:member']);
    const last = await admin('DELETE', '/api/orgs/default/members/admin%40localhost');
    assert.equal(last.status, 409);
    assert.match(last.body.error.message, /needs an owner/);
    assert.equal((await adminOfA('DELETE', '/api/orgs/default/members/dev%40example.com')).status, 204);
  });
});
