// Environments and tasks belong to whoever made them (a task's environment to the task's
// owner): members use their own, admins and owners everyone's, a share lets others use one,
// and everyone in the org reads them. The route walk is generated from the app's route table,
// as test/tenancy.test.ts is: a new route on an environment or a task is covered the moment
// it exists, and one without an ownership decision fails here (and the app refuses to start).
// sandbox: none (test/fakes/fake-runner.ts; scripts/test.ts runs these more at once)
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import type { Environment } from '../src/shared/api.ts';
import { OWNED_ROUTE } from '../src/server/app.ts';
import { TokenService } from '../src/server/auth.ts';
import { PERMISSIONS, roleRank, type Scope } from '../src/server/authz.ts';
import { OWNERSHIPS, ownerIdOf } from '../src/server/ownership.ts';
import { taskScope } from '../src/server/tasks/sandbox.ts';
import { DEFAULT_BUDGET } from '../src/server/tasks/service.ts';
import { createBareRepo } from './fakes/git-server.ts';
import { runCli, startTestBerth, waitFor, type TestBerth } from './helpers.ts';

let t: TestBerth;
let orgId: string;
let repoRoot: string;
/** Tokens by who holds them: user tokens of alice and bob (members), carol (admin), vic (viewer); alice's org token. */
const tokens: Record<string, string> = {};
const users: Record<string, string> = {};
/** alice's environment, made through the API: the one every route walks over. */
let envA: Environment;

interface Reply {
  status: number;
  body: any;
}

async function call(who: string, method: string, path: string, o: { body?: unknown; raw?: { type: string; data: Uint8Array } } = {}): Promise<Reply> {
  const headers: Record<string, string> = { authorization: `Bearer ${tokens[who]}` };
  let body: string | Uint8Array | undefined;
  if (o.raw) {
    headers['content-type'] = o.raw.type;
    body = o.raw.data;
  } else if (o.body !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(o.body);
  }
  const res = await fetch(`${t.client.url}${path}`, { method, headers, body: body as BodyInit | undefined });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON (a tar archive, a file)
  }
  return { status: res.status, body: parsed };
}

const cli = (who: string, args: string[]) => runCli(args, { BERTH_URL: t.client.url, BERTH_TOKEN: tokens[who]!, BERTH_ORG: 'default', NO_COLOR: '1' });

/** The caller got past the ownership check: not refused, and the object was found. */
function through(r: Reply, what: string): void {
  assert.notEqual(r.status, 403, `${what} -> 403 ${JSON.stringify(r.body)}`);
  assert.notEqual(r.status, 401, `${what} -> 401`);
  assert.ok(!(r.status === 404 && /no (environment|task) /.test(r.body?.error?.message ?? '')), `${what} -> ${r.status} ${JSON.stringify(r.body)}`);
}

function refused(r: Reply, what: string, message: RegExp): void {
  assert.equal(r.status, 403, `${what} -> ${r.status} ${JSON.stringify(r.body)}`);
  assert.match(r.body.error.message, message, what);
}

before(async () => {
  // About who may do what, not the sandbox: the fake runner is enough.
  t = await startTestBerth({ fake: true });
  const admin = async (method: string, path: string, body?: unknown) => t.api(method, path, body);
  orgId = (await admin('GET', '/api/orgs')).body.items.find((o: { name: string }) => o.name === 'default').id;
  const made = new TokenService(t.berth.database.db);
  for (const [name, role] of [['alice', 'member'], ['bob', 'member'], ['carol', 'admin'], ['vic', 'viewer']] as const) {
    const m = await admin('PUT', `/api/orgs/default/members/${name}%40example.com`, { role });
    assert.equal(m.status, 200, JSON.stringify(m.body));
    users[name] = m.body.userId;
    tokens[name] = (await made.create({ kind: 'user', userId: m.body.userId, name: `${name}'s sign-in` })).token;
  }
  // An org token alice made acts with her ownership.
  const orgToken = await call('alice', 'POST', '/api/orgs/default/tokens', { body: { role: 'member', name: 'alice-ci' } });
  assert.equal(orgToken.status, 201, JSON.stringify(orgToken.body));
  tokens['alice-ci'] = orgToken.body.token;

  const created = await call('alice', 'POST', '/api/orgs/default/environments', { body: { name: 'alice-env' } });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  envA = created.body;
  repoRoot = await mkdtemp(join(tmpdir(), 'berth-ownership-'));
});

after(async () => {
  await t?.destroy();
  if (repoRoot) await rm(repoRoot, { recursive: true, force: true });
});

describe('who owns what', () => {
  test('an environment belongs to its maker; everyone in the org sees it and whose it is', async () => {
    assert.equal(envA.owner?.email, 'alice@example.com');
    assert.deepEqual(envA.sharedWith, { org: false, users: [] });
    for (const [who, mayUse] of [['alice', true], ['alice-ci', true], ['carol', true], ['bob', false], ['vic', false]] as const) {
      const list = await call(who, 'GET', '/api/orgs/default/environments');
      assert.equal(list.status, 200);
      const seen = list.body.items.find((e: { id: string }) => e.id === envA.id);
      assert.equal(seen?.owner.email, 'alice@example.com', `${who} sees alice's environment and whose it is`);
      assert.equal(seen.mayUse, mayUse, `${who} may use it: ${mayUse}`);
      assert.equal((await call(who, 'GET', `/api/orgs/default/environments/${envA.name}`)).body.owner.email, 'alice@example.com');
    }
    const listed = await cli('bob', ['env', 'list']);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /OWNER/);
    assert.match(listed.stdout, /alice-env\s+running\s+alice@example\.com/);
  });

  test("whom a caller's things belong to: its user, an org token's maker, a makerless token itself, a task's owner", () => {
    const scope = (caller: Partial<Scope['caller']>): Scope => ({
      orgId,
      orgName: 'default',
      role: 'member',
      actor: 'x',
      caller: { tokenId: 'tok_x', kind: 'org', userId: null, orgId, role: 'member', instanceAdmin: false, ...caller },
    });
    assert.equal(ownerIdOf(scope({ kind: 'user', userId: 'usr_a' })), 'usr_a');
    assert.equal(ownerIdOf(scope({ kind: 'org', userId: 'usr_a', tokenId: 'tok_made' })), 'usr_a');
    assert.equal(ownerIdOf(scope({ kind: 'org', userId: null, tokenId: 'tok_alone' })), 'tok_alone');
    assert.equal(ownerIdOf(taskScope(orgId, 'task_1', 'usr_a')), 'usr_a');
  });

  test('a makerless org token owns what it makes; others in the org do not use it', async () => {
    const ci = await new TokenService(t.berth.database.db).create({ kind: 'org', orgId, role: 'member', userId: null, name: 'ci' });
    tokens.ci = ci.token;
    // A row as create writes it for that token (no sandbox needed to check who may use it).
    await t.berth.database.db
      .insertInto('environments')
      .values({ id: 'env_ci0000000001', org_id: orgId, name: 'ci-env', image: 'x', image_digest: null, state: 'stopped', state_reason: null, cpus: 1, memory_bytes: '1', disk_bytes: '1', pids_limit: 1, idle_timeout_ms: null, max_lifetime_ms: null, started_at: null, last_active_at: null, owner_id: ci.id })
      .execute();
    through(await call('ci', 'GET', '/api/orgs/default/environments/ci-env/network'), 'the token reads its own network log');
    refused(await call('bob', 'GET', '/api/orgs/default/environments/ci-env/network'), 'bob', /belongs to the token ci/);
    through(await call('carol', 'GET', '/api/orgs/default/environments/ci-env/network'), 'an admin');
    refused(await call('ci', 'GET', `/api/orgs/default/environments/${envA.id}/network`), 'the token, on alice\'s', /belongs to alice@example\.com/);
  });
});

describe('sharing', () => {
  test('the owner shares with a member or the org and takes it back; a share is to use, not to remove or reshare', async () => {
    const exec = (who: string) => call(who, 'POST', `/api/orgs/default/environments/${envA.id}/exec`, { body: { cmd: ['true'] } });
    const before = await exec('bob');
    refused(before, 'bob before a share', /belongs to alice@example\.com: members use their own environments and those shared with them/);
    assert.match(before.body.error.message, /`berth env share alice-env --with bob@example\.com`/);
    const cliRefusal = await cli('bob', ['env', 'exec', envA.name, '--', 'true']);
    assert.notEqual(cliRefusal.code, 0);
    assert.match(cliRefusal.stderr, /ask alice@example\.com or an admin to share it/);

    let r = await cli('alice', ['env', 'share', envA.name, '--with', 'bob@example.com']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /alice-env is shared with bob@example\.com/);
    assert.equal((await exec('bob')).body.exitCode, 0);
    through(await call('bob', 'GET', `/api/orgs/default/environments/${envA.id}/network`), 'bob reads its network log');
    refused(await call('bob', 'DELETE', `/api/orgs/default/environments/${envA.id}`), 'bob removing it', /is shared with you to use: only its owner or an admin may remove it/);
    refused(await call('bob', 'PUT', `/api/orgs/default/environments/${envA.id}/shares/org`), 'bob resharing it', /only its owner or an admin/);
    // What the UI offers follows the same rule: bob may use it, not remove or share it.
    const asBob = (await call('bob', 'GET', `/api/orgs/default/environments/${envA.id}`)).body;
    assert.deepEqual([asBob.mayUse, asBob.mayManage], [true, false]);
    for (const who of ['alice', 'carol'] as const) assert.equal((await call(who, 'GET', `/api/orgs/default/environments/${envA.id}`)).body.mayManage, true, `${who} may remove it`);
    const shown = await cli('bob', ['env', 'show', envA.name]);
    assert.match(shown.stdout, /owner\s+alice@example\.com/);
    assert.match(shown.stdout, /shared with\s+bob@example\.com/);

    // A viewer it is shared with reads what it reached, and still runs nothing.
    refused(await call('vic', 'GET', `/api/orgs/default/environments/${envA.id}/network`), 'vic before', /belongs to alice/);
    r = await cli('alice', ['env', 'share', envA.name, '--everyone', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).sharedWith.org, true);
    through(await call('vic', 'GET', `/api/orgs/default/environments/${envA.id}/network`), 'vic with the org share');
    refused(await exec('vic'), 'vic exec', /needs member/);

    // Taken back: new calls are refused again.
    assert.equal((await cli('alice', ['env', 'unshare', envA.name, '--with', 'bob@example.com'])).code, 0);
    assert.equal((await cli('alice', ['env', 'unshare', envA.name, '--everyone'])).code, 0);
    refused(await exec('bob'), 'bob after unshare', /belongs to alice/);
    refused(await call('vic', 'GET', `/api/orgs/default/environments/${envA.id}/network`), 'vic after unshare', /belongs to alice/);
    const again = await cli('alice', ['env', 'unshare', envA.name, '--everyone']);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /is not shared with the org/);

    // Bad input: a clear error, nothing changed.
    const stranger = await call('alice', 'PUT', `/api/orgs/default/environments/${envA.id}/shares/nobody%40example.com`);
    assert.equal(stranger.status, 404);
    assert.match(stranger.body.error.message, /no member 'nobody@example.com'.*berth member list/);
    const neither = await cli('alice', ['env', 'share', envA.name]);
    assert.notEqual(neither.code, 0);
    assert.match(neither.stderr, /give --with EMAIL or --everyone/);
    assert.deepEqual((await call('alice', 'GET', `/api/orgs/default/environments/${envA.id}`)).body.sharedWith, { org: false, users: [] });

    // An admin may share anyone's; it is on record.
    assert.equal((await call('carol', 'PUT', `/api/orgs/default/environments/${envA.id}/shares/bob%40example.com`)).status, 200);
    assert.equal((await call('carol', 'DELETE', `/api/orgs/default/environments/${envA.id}/shares/bob%40example.com`)).status, 200);
    const audit = await t.api('GET', `/api/orgs/default/audit?action=environment.share&actor=user:${users.carol}`);
    assert.equal(audit.status, 200, JSON.stringify(audit.body));
    assert.ok(JSON.stringify(audit.body).includes(envA.id), JSON.stringify(audit.body).slice(0, 500));
  });

  test('the terminal (WebSocket) follows the same rule', async () => {
    const attach = (who: string) =>
      new Promise<Record<string, any>[]>((resolve, reject) => {
        const ws = new WebSocket(`${t.client.url.replace(/^http/, 'ws')}/api/orgs/default/environments/${envA.id}/attach`, { headers: { authorization: `Bearer ${tokens[who]}` } });
        const frames: Record<string, any>[] = [];
        ws.on('open', () => ws.send(JSON.stringify({ type: 'start', cmd: ['true'] })));
        ws.on('message', (data, binary) => {
          if (!binary) frames.push(JSON.parse(String(data)));
        });
        ws.on('close', () => resolve(frames));
        ws.on('error', reject);
      });
    const bob = await attach('bob');
    assert.equal(bob.at(-1)?.type, 'error', JSON.stringify(bob));
    assert.equal(bob.at(-1)?.error.kind, 'forbidden');
    assert.match(bob.at(-1)?.error.message, /belongs to alice@example\.com/);
    for (const who of ['alice', 'carol']) {
      const frames = await attach(who);
      assert.deepEqual(frames.filter((f) => f.type === 'exit').map((f) => f.exitCode), [0], `${who}: ${JSON.stringify(frames)}`);
    }
  });
});

describe("a task's environment", () => {
  test("belongs to the task's creator: they (and admins) use it, other members read it, the task uses only its own", async () => {
    const bare = (await createBareRepo({ root: repoRoot, name: 'owned.git', files: { 'README.md': 'hello\n' } })).path;
    const project = await t.api('POST', '/api/orgs/default/projects', { name: 'owned', repoUrl: bare });
    assert.equal(project.status, 201, JSON.stringify(project.body));
    const made = await call('alice', 'POST', '/api/orgs/default/tasks', { body: { goal: 'look around', project: 'owned', agent: 'command', command: 'true' } });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const task = await waitFor('the task to end', async () => {
      const r = await call('alice', 'GET', `/api/orgs/default/tasks/${made.body.id}`);
      return ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(r.body.state) ? r.body : null;
    }, 180_000);
    assert.ok(task.environmentId, JSON.stringify(task));
    const envPath = `/api/orgs/default/environments/${task.environmentId}`;
    // The task's end is written before its environment is stopped: wait for that stop, or it races the start below.
    await waitFor('the environment to be stopped', async () => (await call('alice', 'GET', envPath)).body.state === 'stopped', 60_000);
    const env = await call('bob', 'GET', envPath);
    assert.equal(env.status, 200, 'other members read it');
    assert.equal(env.body.owner.email, 'alice@example.com');
    assert.equal(env.body.mayUse, false);

    refused(await call('bob', 'POST', `${envPath}/start`), 'bob starting it', /belongs to alice@example\.com/);
    through(await call('alice', 'POST', `${envPath}/start`), 'alice starting it');
    refused(await call('bob', 'POST', `${envPath}/exec`, { body: { cmd: ['true'] } }), 'bob in it', /belongs to alice/);
    assert.equal((await call('alice', 'POST', `${envPath}/exec`, { body: { cmd: ['true'] } })).body.exitCode, 0);
    assert.equal((await call('carol', 'POST', `${envPath}/exec`, { body: { cmd: ['true'] } })).body.exitCode, 0);

    // The task acts as itself: its own environment, nobody else's.
    const own = await t.berth.environments.exec(taskScope(orgId, task.id, users.alice!), task.environmentId, { cmd: ['true'] });
    own.stdin.end();
    // Its output is read (exited waits for the streams to drain).
    own.stdout.resume();
    own.stderr.resume();
    assert.equal((await own.exited).exitCode, 0);
    await assert.rejects(t.berth.environments.exec(taskScope(orgId, 'task_other0000000', users.alice!), task.environmentId, { cmd: ['true'] }), (e: Error & { kind?: string }) => e.kind === 'forbidden');
    await assert.rejects(t.berth.environments.exec(taskScope(orgId, task.id, users.alice!), envA.id, { cmd: ['true'] }), (e: Error & { kind?: string }) => e.kind === 'forbidden');

    // The task itself: others read it, only alice (or an admin) acts on it.
    for (const path of ['', '/diff', '/events']) assert.equal((await call('bob', 'GET', `/api/orgs/default/tasks/${task.id}${path}`)).status, 200);
    refused(await call('bob', 'POST', `/api/orgs/default/tasks/${task.id}/retry`), 'bob retrying it', /task task_\w+ belongs to alice@example\.com/);
    await call('alice', 'POST', `${envPath}/stop`);
  });

  test("a task an org token makes is its maker's", async () => {
    const made = await call('alice-ci', 'POST', '/api/orgs/default/tasks', { body: { goal: 'nothing', repo: 'http://127.0.0.1:9/none.git', agent: 'command', command: 'true' } });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const row = await t.berth.database.db.selectFrom('tasks').select(['owner_id', 'created_by']).where('id', '=', made.body.id).executeTakeFirstOrThrow();
    assert.equal(row.owner_id, users.alice);
    assert.match(row.created_by, /^token:/);
    through(await call('alice', 'POST', `/api/orgs/default/tasks/${made.body.id}/cancel`), 'alice cancels what her token made');
  });
});

/** A request each route accepts, so that only ownership decides (not validation). */
const SAMPLES: Record<string, { query?: string; body?: unknown; raw?: { type: string; data: Uint8Array } }> = {
  'POST /api/orgs/:org/environments/:id/exec': { body: { cmd: ['true'] } },
  'GET /api/orgs/:org/environments/:id/files': { query: 'path=/etc/hostname' },
  // Two zero blocks: an empty tar archive.
  'PUT /api/orgs/:org/environments/:id/files': { query: 'path=/tmp/owned', raw: { type: 'application/x-tar', data: new Uint8Array(1024) } },
  'GET /api/orgs/:org/environments/:id/files/list': { query: 'path=/' },
  'GET /api/orgs/:org/environments/:id/files/download': { query: 'path=/etc/hostname' },
  'PATCH /api/orgs/:org/policies/environments/:id': { body: { maxConnections: 50 } },
  'POST /api/orgs/:org/tasks/:id/approve': { body: {} },
  'POST /api/orgs/:org/tasks/:id/continue': { body: { instruction: 'and the docs' } },
};
/** Routes that end what the others need run last, in this order. */
const LAST = [
  'PUT /api/orgs/:org/environments/:id/shares/:grantee',
  'DELETE /api/orgs/:org/environments/:id/shares/:grantee',
  'POST /api/orgs/:org/environments/:id/stop',
  'DELETE /api/orgs/:org/environments/:id',
];

describe('every route on an environment or a task', () => {
  test('declares its ownership', () => {
    const routes = t.berth.app.routeTable.filter((r) => OWNED_ROUTE.test(r.url));
    assert.ok(routes.length >= 20, `found ${routes.length}: ${routes.map((r) => r.url).join(', ')}`);
    for (const r of routes) assert.ok(OWNERSHIPS.includes(r.ownership!), `${r.method} ${r.url} declares no ownership`);
    // Reading stays the org's; nothing that changes or runs anything is 'org'.
    for (const r of routes.filter((r) => r.ownership === 'org')) assert.equal(r.method, 'GET', `${r.method} ${r.url} acts but declares 'org'`);
    // And the rule does not leak into other routes.
    assert.ok(!OWNED_ROUTE.test('/api/orgs/:org/environments') && !OWNED_ROUTE.test('/api/orgs/:org/tasks'));
  });

  test('a member who is not the owner is refused (403, whom to ask); the owner, their org token and an admin get through; a viewer reads only', async () => {
    // alice's task, as the API would have made it: ended, on a repository nothing can clone (a retry fails without a sandbox).
    const project = await t.api('POST', '/api/orgs/default/projects', { name: 'unreachable', repoUrl: 'http://127.0.0.1:9/none.git' });
    assert.equal(project.status, 201, JSON.stringify(project.body));
    const taskId = 'task_ownedwalk001';
    await t.berth.database.db
      .insertInto('tasks')
      .values({ id: taskId, org_id: orgId, project_id: project.body.id, repo_url: 'http://127.0.0.1:9/none.git', base_branch: null, goal: 'walk', agent: 'command', command: 'true', model: null, budget: JSON.stringify(DEFAULT_BUDGET), check_command: null, state: 'failed', state_reason: 'for the walk', step: null, created_by: `user:${users.alice}`, owner_id: users.alice, finished_at: new Date() })
      .execute();

    const key = (r: { method: string; url: string }) => `${r.method} ${r.url}`;
    const routes = t.berth.app.routeTable
      .filter((r) => OWNED_ROUTE.test(r.url) && !r.websocket)
      .sort((a, b) => LAST.indexOf(key(a)) - LAST.indexOf(key(b)));
    for (const route of routes) {
      const sample = SAMPLES[key(route)] ?? {};
      const path = route.url
        .replace(':org', 'default')
        .replace(':id', route.url.includes('/tasks/') ? taskId : envA.id)
        .replace(':grantee', 'vic%40example.com');
      const url = sample.query ? `${path}?${sample.query}` : path;
      const need = PERMISSIONS[route.permission!];
      const what = (who: string) => `${who} ${key(route)}`;
      const owner = route.url.includes('/tasks/') ? /task task_ownedwalk001 belongs to alice@example\.com/ : /environment 'alice-env' belongs to alice@example\.com/;
      // The admin first: what an admin set (an egress policy) a member may not undo, for reasons that are not ownership.
      for (const [who, role] of [['carol', 'admin'], ['bob', 'member'], ['vic', 'viewer'], ['alice', 'member'], ['alice-ci', 'member']] as const) {
        const r = await call(who, route.method, url, sample);
        if (roleRank(role) < roleRank(need)) {
          refused(r, what(who), new RegExp(`needs ${need}`));
        } else if (route.ownership === 'org' || who === 'carol' || who.startsWith('alice')) {
          through(r, what(who));
        } else {
          refused(r, what(who), owner);
          if (route.ownership === 'shared' && !route.url.includes('/tasks/')) assert.match(r.body.error.message, new RegExp(`berth env share alice-env --with ${who}@example\\.com`));
        }
      }
    }
    // The walk really acted: alice's environment is gone.
    const gone = await t.api('GET', `/api/orgs/default/environments/${envA.id}`);
    assert.equal(gone.body.state, 'deleted');
  });
});
