// Malformed input at every route: a 4xx with a JSON error, never a 5xx, and nothing in
// the database changes. The routes come from the app's route table.
// sandbox: none (test/fakes/fake-runner.ts; scripts/test.ts runs these more at once)
import assert from 'node:assert/strict';
import { sql } from 'kysely';
import { after, before, test } from 'node:test';
import { startTestBerth, type TestBerth } from './helpers.ts';

let t: TestBerth;
before(async () => {
  t = await startTestBerth({ fake: true });
  await t.api('POST', '/api/orgs/default/environments', { name: 'fuzz-target' });
});
after(async () => {
  await t?.destroy();
});

/** Every table's rows, as one string: any change shows. */
async function snapshot(): Promise<string> {
  const tables = ['orgs', 'users', 'memberships', 'tokens', 'projects', 'secrets', 'environments', 'audit_entries', 'audit_heads'];
  const parts: string[] = [];
  for (const table of tables) {
    // last_used_at moves with every authenticated call: it is bookkeeping, not a change.
    const rows = await sql<Record<string, unknown>>`select * from ${sql.table(table)} order by 1`.execute(t.berth.database.db);
    parts.push(JSON.stringify(rows.rows.map((r) => ({ ...r, last_used_at: undefined, last_active_at: undefined, updated_at: table === 'environments' ? undefined : r.updated_at }))));
  }
  return parts.join('\n');
}

const BODIES: { body: string; type?: string }[] = [
  { body: '{"' },
  { body: '[]' },
  { body: '123' },
  { body: '"just a string"' },
  { body: 'null' },
  { body: '{"__proto__": {"admin": true}}' },
  { body: '{"constructor": {"prototype": {"x": 1}}}' },
  { body: JSON.stringify({ name: 123, value: [], role: 'god', cmd: 'x', image: {}, memory: -1, expires: {}, path: 7 }) },
  { body: JSON.stringify({ name: 'x'.repeat(100_000), role: null, cmd: [null], value: { a: 1 } }) },
  { body: '\u0000\u0001\u0002' },
  { body: 'name=x&role=owner', type: 'application/x-www-form-urlencoded' },
  { body: '<xml/>', type: 'text/xml' },
];

const PARAMS: Record<string, string[]> = {
  org: ['default', 'no-such-org', '%00', 'x'.repeat(300), '..%2F..'],
  id: ['env_000000000000', 'no-such-env', '%F0%9F%92%A9', 'x'.repeat(300)],
  name: ['NO_SUCH_SECRET', '%20', 'x'.repeat(300)],
  email: ['nobody%40example.com', 'not-an-email', 'x'.repeat(400)],
};

test('no route answers malformed input with a 5xx, and nothing changes', async () => {
  const before = await snapshot();
  // A DELETE with nothing in its path has no input to malform: it would just do its job
  // (DELETE /api/me/token signs the test's own token out).
  const routes = t.berth.app.routeTable.filter((r) => r.url.startsWith('/api/') && !r.websocket && !(r.method === 'DELETE' && !r.url.includes(':')));
  let requests = 0;
  for (const route of routes) {
    const urls = new Set<string>();
    for (const org of PARAMS.org!) {
      for (const id of PARAMS.id!) {
        urls.add(
          route.url
            .replace(':org', org)
            .replace(':id', id)
            .replace(':name', PARAMS.name![requests % 3]!)
            .replace(':email', PARAMS.email![requests % 3]!) + '?limit=-5&cursor=%%%&since=yesterday&state=sleepy&path=relative',
        );
      }
    }
    for (const url of urls) {
      for (const { body, type } of route.method === 'GET' || route.method === 'DELETE' ? [{ body: '' }] : BODIES) {
        const res = await fetch(`${t.client.url}${url}`, {
          method: route.method,
          headers: { authorization: `Bearer ${t.client.token}`, ...(body ? { 'content-type': type ?? 'application/json' } : {}) },
          body: body || undefined,
          redirect: 'manual',
        });
        requests++;
        const text = await res.text();
        assert.ok(res.status < 500, `${route.method} ${url} ${body.slice(0, 60)} -> ${res.status} ${text.slice(0, 200)}`);
        if (res.status >= 400) {
          const parsed = JSON.parse(text) as { error?: { message?: string } };
          assert.ok(parsed.error?.message, `${route.method} ${url}: a JSON error with a message`);
        }
      }
    }
  }
  assert.ok(requests > 500, `${requests} requests`);
  assert.equal(await snapshot(), before, 'the database is as it was');
});

test('bad fields are named in the error', async () => {
  const res = await t.api('POST', '/api/orgs/default/environments', { memory: {} });
  assert.equal(res.status, 400);
  assert.equal(res.body.error.field, 'body.memory');
  const q = await t.api('GET', '/api/orgs/default/environments?limit=0');
  assert.equal(q.status, 400);
  assert.equal(q.body.error.field, 'querystring.limit');
});
