// Snapshots and forks over the control plane (issue #16): `berth env snapshot`, `berth env fork`,
// `berth env create --from`, `berth snapshot list|show|rm`, who may do what, what keeps a
// snapshot, a runner without a store, and a control plane killed half-way. The fake runner
// copies an environment's "/" for a snapshot; the real btrfs store is in
// test/snapshots-sandbox.test.ts.
// sandbox: none (test/fakes/fake-runner.ts; scripts/test.ts runs these more at once)
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { TokenService } from '../src/server/auth.ts';
import { newId } from '../src/shared/ids.ts';
import { apiAs, startTestBerth, waitFor, type TestBerth } from './helpers.ts';

let t: TestBerth;
const tokens: Record<string, string> = {};
let orgId: string;
let projectId: string;
let source: any;

const api = (who: string) => apiAs(t, who === 'admin' ? t.client.token : tokens[who]!);
const cli = (who: string, args: string[]) => t.cli(args, { env: { BERTH_URL: t.client.url, BERTH_TOKEN: who === 'admin' ? t.client.token : tokens[who]!, BERTH_ORG: 'default', NO_COLOR: '1' } });
const file = (envId: string, path: string) => t.fake!.hostPath(envId, path);
const read = (envId: string, path: string) => readFileSync(file(envId, path), 'utf8');
const snapshotRows = () => t.berth.database.db.selectFrom('snapshots').selectAll().execute();
const envCount = async () => (await t.api('GET', '/api/orgs/default/environments?limit=200')).body.items.length as number;

async function makeEnv(who: string, name: string, files: Record<string, string> = {}) {
  const made = await api(who)('POST', '/api/orgs/default/environments', { name });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  for (const [path, body] of Object.entries(files)) {
    mkdirSync(join(file(made.body.id, path), '..'), { recursive: true });
    writeFileSync(file(made.body.id, path), body);
  }
  return made.body;
}

async function audit(action: string) {
  const res = await t.api('GET', `/api/orgs/default/audit?action=${action}&limit=100`);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.items as { action: string; target: string | null; details: Record<string, any> }[];
}

before(async () => {
  t = await startTestBerth({ fake: true, runnerHeartbeatMs: 500 });
  const made = new TokenService(t.berth.database.db);
  for (const [name, role] of [['alice', 'member'], ['bob', 'member'], ['vic', 'viewer']] as const) {
    const m = await t.api('PUT', `/api/orgs/default/members/${name}%40example.com`, { role });
    assert.equal(m.status, 200, JSON.stringify(m.body));
    tokens[name] = (await made.create({ kind: 'user', userId: m.body.userId, name: `${name}'s sign-in` })).token;
  }
  orgId = (await t.api('GET', '/api/orgs')).body.items.find((o: { name: string }) => o.name === 'default').id;
  const project = await t.api('POST', '/api/orgs/default/projects', { name: 'shop', repoUrl: 'http://127.0.0.1:9/acme/shop.git' });
  assert.equal(project.status, 201, JSON.stringify(project.body));
  projectId = project.body.id;
  source = await makeEnv('alice', 'source', { '/workspace/src/main.ts': 'console.log("v1")\n', '/root/.cache/built': 'deps\n' });
});

after(async () => {
  await t?.destroy();
});

describe('berth env snapshot', () => {
  test('a running environment: the snapshot is ready, names its source, and it goes on running', async () => {
    const made = await api('alice')('POST', `/api/orgs/default/environments/${source.id}/snapshot`, { name: 'running-one' });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const s = made.body;
    assert.match(s.id, /^snap_/);
    assert.equal(s.name, 'running-one');
    assert.equal(s.kind, 'manual');
    assert.equal(s.state, 'ready');
    assert.equal(s.environmentId, source.id);
    assert.equal(s.environmentName, 'source');
    assert.equal(s.image, source.image);
    assert.equal(s.createdBy.email, 'alice@example.com');
    assert.equal(s.copied, true);
    assert.ok(s.bytes > 0, JSON.stringify(s));
    assert.equal(s.environments, 0);
    assert.deepEqual(s.inUseBy, []);
    assert.equal((await t.api('GET', `/api/orgs/default/environments/${source.id}`)).body.state, 'running');
    assert.equal(await t.fake!.hasSnapshot(s.id), true);

    const [entry] = (await audit('environment.snapshot')).filter((e) => e.details.snapshot === s.id);
    assert.ok(entry, 'the snapshot is on record');
    assert.equal(entry.details.name, 'running-one');
    assert.equal(entry.details.copied, true);
  });

  test('a stopped environment, through the CLI (prints its id; --json the snapshot); it stays stopped', async () => {
    const stopped = await makeEnv('alice', 'stopped-source', { '/workspace/notes.txt': 'stopped\n' });
    assert.equal((await api('alice')('POST', `/api/orgs/default/environments/${stopped.id}/stop`)).status, 200);
    const plain = await cli('alice', ['env', 'snapshot', 'stopped-source', '--name', 'stopped-one']);
    assert.equal(plain.code, 0, plain.stderr);
    const id = plain.stdout.split('\n')[0]!;
    assert.match(id, /^snap_/);
    assert.match(plain.stdout, /stopped-one: .*copied/);
    const json = await cli('alice', ['env', 'snapshot', 'stopped-source', '--json']);
    assert.equal(json.code, 0, json.stderr);
    const s = JSON.parse(json.stdout);
    assert.equal(s.state, 'ready');
    assert.match(s.name, /^stopped-source-\d{8}-\d{6}$/, 'a default name: the environment and the time');
    assert.equal((await t.api('GET', `/api/orgs/default/environments/${stopped.id}`)).body.state, 'stopped');

    // An environment from it has the stopped one's files.
    const from = await api('alice')('POST', `/api/orgs/default/snapshots/${id}/environments`, { name: 'from-stopped' });
    assert.equal(from.status, 201, JSON.stringify(from.body));
    assert.equal(read(from.body.id, '/workspace/notes.txt'), 'stopped\n');
  });

  test('bad input is refused with a 4xx and changes nothing', async () => {
    const before = (await snapshotRows()).length;
    for (const name of ['Bad Name', '-dash', 'x'.repeat(64), '']) {
      const r = await api('alice')('POST', `/api/orgs/default/environments/${source.id}/snapshot`, { name });
      assert.equal(r.status, 400, `${name}: ${JSON.stringify(r.body)}`);
    }
    const extra = await api('alice')('POST', `/api/orgs/default/environments/${source.id}/snapshot`, { name: 'ok', image: 'x' });
    assert.equal(extra.status, 400, JSON.stringify(extra.body));
    const taken = await api('alice')('POST', `/api/orgs/default/environments/${source.id}/snapshot`, { name: 'running-one' });
    assert.equal(taken.status, 409, JSON.stringify(taken.body));
    assert.match(taken.body.error.message, /running-one/);
    const unknown = await api('alice')('POST', '/api/orgs/default/environments/env_nosuchthing1/snapshot', {});
    assert.equal(unknown.status, 404, JSON.stringify(unknown.body));
    const rows = await snapshotRows();
    assert.equal(rows.length, before + 0, 'no row for a refused snapshot (a taken name leaves none either)');
  });

  test('a viewer cannot snapshot; a member cannot snapshot another member\'s environment; an admin can', async () => {
    const viewer = await api('vic')('POST', `/api/orgs/default/environments/${source.id}/snapshot`, {});
    assert.equal(viewer.status, 403, JSON.stringify(viewer.body));
    const other = await api('bob')('POST', `/api/orgs/default/environments/${source.id}/snapshot`, {});
    assert.ok([403, 404].includes(other.status), JSON.stringify(other));
    const otherFork = await api('bob')('POST', `/api/orgs/default/environments/${source.id}/fork`, { count: 1 });
    assert.ok([403, 404].includes(otherFork.status), JSON.stringify(otherFork));
    const admin = await api('admin')('POST', `/api/orgs/default/environments/${source.id}/snapshot`, { name: 'admins-one' });
    assert.equal(admin.status, 201, JSON.stringify(admin.body));
  });

  test('a runner without a state store: 409 with its reason, no row left behind, nothing made', async () => {
    const rows = (await snapshotRows()).length;
    const envs = await envCount();
    t.fake!.snapshotsAvailable = false;
    try {
      const r = await api('alice')('POST', `/api/orgs/default/environments/${source.id}/snapshot`, {});
      assert.equal(r.status, 409, JSON.stringify(r.body));
      assert.match(r.body.error.message, /cannot snapshot: the fake runner was told it has no state store/);
      const f = await api('alice')('POST', `/api/orgs/default/environments/${source.id}/fork`, { count: 2 });
      assert.equal(f.status, 409, JSON.stringify(f.body));
      assert.match(f.body.error.message, /no state store/);
      const c = await cli('alice', ['env', 'fork', 'source', '--count', '2']);
      assert.notEqual(c.code, 0);
      assert.match(c.stderr, /no state store/);
    } finally {
      t.fake!.snapshotsAvailable = true;
    }
    assert.equal((await snapshotRows()).length, rows, 'the runner said so before anything was written');
    assert.equal(await envCount(), envs);
    assert.equal((await t.api('GET', `/api/orgs/default/environments/${source.id}`)).body.state, 'running');
  });
});

describe('whether a runner can snapshot', () => {
  test('GET /api/runners and berth runner list say so, and why not where it cannot', async () => {
    const local = async () => (await t.api('GET', '/api/runners')).body.items.find((r: any) => r.id === source.runnerId);
    // (The test before told the runner it had no store for a moment: a heartbeat may still say so.)
    await waitFor('a heartbeat saying it can', async () => (await local()).snapshots?.available === true);
    assert.deepEqual((await local()).snapshots, { available: true });
    const listed = await cli('admin', ['runner', 'list']);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /^local snapshots: available$/m);
    t.fake!.snapshotsAvailable = false;
    try {
      // Said with its next heartbeat.
      await waitFor('a heartbeat saying it cannot', async () => (await local()).snapshots.available === false);
      assert.deepEqual((await local()).snapshots, { available: false, reason: 'the fake runner was told it has no state store' });
      const text = await cli('admin', ['runner', 'list']);
      assert.match(text.stdout, /^local snapshots: unavailable \(the fake runner was told it has no state store\)$/m);
      const json = JSON.parse((await cli('admin', ['runner', 'list', '--json'])).stdout);
      assert.equal(json.find((r: any) => r.id === source.runnerId).snapshots.available, false);
    } finally {
      t.fake!.snapshotsAvailable = true;
    }
  });
});

describe('berth env create --from', () => {
  test('an environment with the snapshot\'s files and image; limits and project from its own body', async () => {
    const made = await cli('alice', ['env', 'create', '--from', 'running-one', '--name', 'from-snap', '--cpus', '1', '--memory', '1g', '--disk', '3g', '--project', 'shop', '--json']);
    assert.equal(made.code, 0, made.stderr);
    const out = JSON.parse(made.stdout);
    assert.equal(out.name, 'from-snap');
    const snap = (await t.api('GET', '/api/orgs/default/snapshots/running-one')).body;
    assert.equal(out.snapshotId, snap.id);
    const env = (await t.api('GET', `/api/orgs/default/environments/${out.id}`)).body;
    assert.equal(env.state, 'running');
    assert.equal(env.snapshotId, snap.id);
    assert.equal(env.image, snap.image);
    assert.equal(env.limits.cpus, 1);
    assert.equal(env.limits.memoryBytes, 1024 ** 3);
    assert.equal(env.limits.diskBytes, 3 * 1024 ** 3);
    assert.equal(env.projectId, projectId);
    assert.equal(env.owner.email, 'alice@example.com');
    assert.equal(read(out.id, '/workspace/src/main.ts'), 'console.log("v1")\n');
    assert.equal(read(out.id, '/root/.cache/built'), 'deps\n');
    // Its writes are its own.
    writeFileSync(file(out.id, '/workspace/src/main.ts'), 'changed\n');
    assert.equal(read(source.id, '/workspace/src/main.ts'), 'console.log("v1")\n');
    assert.equal((await t.api('GET', `/api/orgs/default/snapshots/${snap.id}`)).body.environments, 1);

    const created = (await audit('environment.create')).find((e) => e.details.environment === out.id);
    assert.ok(created, 'made from a snapshot, on record with it');
    assert.equal(created.details.snapshot, 'running-one');
  });

  test('--image with --from, or --runner-label with --from, is refused by the CLI and nothing is made', async () => {
    const envs = await envCount();
    const image = await cli('alice', ['env', 'create', '--from', 'running-one', '--image', 'alpine']);
    assert.equal(image.code, 2, image.stderr);
    assert.match(image.stderr, /--from and --image cannot go together/);
    const label = await cli('alice', ['env', 'create', '--from', 'running-one', '--runner-label', 'gpu=true']);
    assert.equal(label.code, 2, label.stderr);
    assert.match(label.stderr, /--from and --runner-label/);
    // Through the API an image is not part of the body.
    const r = await api('alice')('POST', '/api/orgs/default/snapshots/running-one/environments', { image: 'alpine' });
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.equal(await envCount(), envs);
  });

  test('an unknown snapshot is 404; a bad body 400', async () => {
    const envs = await envCount();
    const r = await api('alice')('POST', '/api/orgs/default/snapshots/no-such-snap/environments', {});
    assert.equal(r.status, 404, JSON.stringify(r.body));
    assert.match(r.body.error.message, /no snapshot 'no-such-snap'/);
    const c = await cli('alice', ['env', 'create', '--from', 'no-such-snap']);
    assert.notEqual(c.code, 0);
    assert.match(c.stderr, /no snapshot 'no-such-snap'/);
    const bad = await api('alice')('POST', '/api/orgs/default/snapshots/running-one/environments', { name: 'Not A Name' });
    assert.equal(bad.status, 400, JSON.stringify(bad.body));
    assert.equal(await envCount(), envs);
  });

  test("a member cannot use another member's snapshot (403) but can use a prebuild's; an admin can use anyone's", async () => {
    const envs = await envCount();
    const other = await api('bob')('POST', '/api/orgs/default/snapshots/running-one/environments', { name: 'bobs-copy' });
    assert.equal(other.status, 403, JSON.stringify(other.body));
    assert.match(other.body.error.message, /another member's/);
    const viewer = await api('vic')('POST', '/api/orgs/default/snapshots/running-one/environments', {});
    assert.equal(viewer.status, 403, JSON.stringify(viewer.body));
    // Nor remove it.
    const rm = await api('bob')('DELETE', '/api/orgs/default/snapshots/running-one');
    assert.equal(rm.status, 403, JSON.stringify(rm.body));
    assert.equal(await envCount(), envs);

    const admin = await api('admin')('POST', '/api/orgs/default/snapshots/running-one/environments', { name: 'admins-copy' });
    assert.equal(admin.status, 201, JSON.stringify(admin.body));
    assert.equal(read(admin.body.id, '/workspace/src/main.ts'), 'console.log("v1")\n');

    // A project's prebuild is every member's to start from.
    const pre = (await api('admin')('POST', `/api/orgs/default/environments/${source.id}/snapshot`, { name: 'shop-prebuild' })).body;
    await t.berth.database.db.updateTable('snapshots').set({ kind: 'prebuild', project_id: projectId, created_by: 'system' }).where('id', '=', pre.id).execute();
    const bobs = await api('bob')('POST', '/api/orgs/default/snapshots/shop-prebuild/environments', { name: 'bobs-prebuilt', project: 'shop' });
    assert.equal(bobs.status, 201, JSON.stringify(bobs.body));
    assert.equal(bobs.body.owner.email, 'bob@example.com');
    assert.equal(read(bobs.body.id, '/workspace/src/main.ts'), 'console.log("v1")\n');
    // …but only an admin removes it.
    const bobRm = await api('bob')('DELETE', '/api/orgs/default/snapshots/shop-prebuild');
    assert.equal(bobRm.status, 403, JSON.stringify(bobRm.body));
    assert.match(bobRm.body.error.message, /an admin/);
    const listed = (await api('bob')('GET', '/api/orgs/default/snapshots?kind=prebuild')).body.items.map((s: any) => s.name);
    assert.deepEqual(listed, ['shop-prebuild']);
    const byProject = (await api('bob')('GET', '/api/orgs/default/snapshots?project=shop')).body.items.map((s: any) => s.name);
    assert.deepEqual(byProject, ['shop-prebuild']);
  });

  test("another org's snapshot is invisible (404)", async () => {
    assert.equal((await t.api('POST', '/api/orgs', { name: 'second' })).status, 201);
    const env = await t.api('POST', '/api/orgs/second/environments', { name: 'theirs' });
    assert.equal(env.status, 201, JSON.stringify(env.body));
    const theirs = await t.api('POST', `/api/orgs/second/environments/${env.body.id}/snapshot`, { name: 'theirs-snap' });
    assert.equal(theirs.status, 201, JSON.stringify(theirs.body));
    for (const ref of [theirs.body.id, 'theirs-snap']) {
      assert.equal((await t.api('GET', `/api/orgs/default/snapshots/${ref}`)).status, 404);
      assert.equal((await t.api('DELETE', `/api/orgs/default/snapshots/${ref}`)).status, 404);
      assert.equal((await t.api('POST', `/api/orgs/default/snapshots/${ref}/environments`, {})).status, 404);
    }
    assert.ok(!(await t.api('GET', '/api/orgs/default/snapshots')).body.items.some((s: any) => s.id === theirs.body.id));
    // Nor to a member of this org only, through the other org's path.
    assert.equal((await api('alice')('GET', `/api/orgs/second/snapshots/${theirs.body.id}`)).status, 404);
  });
});

describe('berth env fork', () => {
  test('--count 3: three environments, numbered, each with every file, writes isolated', async () => {
    const made = await cli('alice', ['env', 'fork', 'source', '--count', '3', '--name', 'trial', '--json']);
    assert.equal(made.code, 0, made.stderr);
    const { snapshot, environments } = JSON.parse(made.stdout);
    assert.equal(snapshot.kind, 'fork');
    assert.equal(snapshot.state, 'ready');
    assert.equal(snapshot.environmentId, source.id);
    assert.deepEqual(environments.map((e: any) => e.name), ['trial-1', 'trial-2', 'trial-3']);
    const ids = environments.map((e: any) => e.id) as string[];
    assert.equal(new Set(ids).size, 3);
    for (const id of ids) {
      const env = (await t.api('GET', `/api/orgs/default/environments/${id}`)).body;
      assert.equal(env.state, 'running');
      assert.equal(env.snapshotId, snapshot.id);
      assert.equal(env.owner.email, 'alice@example.com');
      assert.deepEqual(env.limits, (await t.api('GET', `/api/orgs/default/environments/${source.id}`)).body.limits);
      assert.equal(read(id, '/workspace/src/main.ts'), 'console.log("v1")\n');
      assert.equal(read(id, '/root/.cache/built'), 'deps\n');
    }
    // Each writes to its own files: not the others', not the source's, not the snapshot's.
    writeFileSync(file(ids[0]!, '/workspace/src/main.ts'), 'fork one\n');
    writeFileSync(file(ids[1]!, '/workspace/only-two'), 'two\n');
    writeFileSync(file(source.id, '/workspace/src/main.ts'), 'source moved on\n');
    assert.equal(read(ids[0]!, '/workspace/src/main.ts'), 'fork one\n');
    assert.equal(read(ids[1]!, '/workspace/src/main.ts'), 'console.log("v1")\n');
    assert.equal(read(ids[2]!, '/workspace/src/main.ts'), 'console.log("v1")\n');
    assert.equal(existsSync(file(ids[0]!, '/workspace/only-two')), false);
    assert.equal(existsSync(file(ids[2]!, '/workspace/only-two')), false);
    const fourth = await api('alice')('POST', `/api/orgs/default/snapshots/${snapshot.id}/environments`, { name: 'trial-4' });
    assert.equal(fourth.status, 201, JSON.stringify(fourth.body));
    assert.equal(read(fourth.body.id, '/workspace/src/main.ts'), 'console.log("v1")\n', 'the snapshot is as it was forked');
    writeFileSync(file(source.id, '/workspace/src/main.ts'), 'console.log("v1")\n');

    const shown = (await t.api('GET', `/api/orgs/default/snapshots/${snapshot.id}`)).body;
    assert.equal(shown.environments, 4);
    const [entry] = (await audit('environment.fork')).filter((e) => e.details.snapshot === snapshot.id);
    assert.ok(entry, 'the fork is on record');
    assert.deepEqual([...entry.details.environments].sort(), [...ids].sort());
  });

  test('without --count one environment, its id printed; a default name is the source\'s with -fork-', async () => {
    const made = await cli('alice', ['env', 'fork', 'source']);
    assert.equal(made.code, 0, made.stderr);
    const id = made.stdout.trim();
    assert.match(id, /^env_[0-9a-z]+$/);
    const env = (await t.api('GET', `/api/orgs/default/environments/${id}`)).body;
    assert.match(env.name, /^source-fork-[0-9a-f]{4}-1$/);
    const named = await api('alice')('POST', `/api/orgs/default/environments/${source.id}/fork`, { name: 'just-one' });
    assert.equal(named.status, 201, JSON.stringify(named.body));
    assert.deepEqual(named.body.environments.map((e: any) => e.name), ['just-one']);
  });

  test('count 0 or 101, a bad name or a taken one: refused, nothing frozen or made', async () => {
    const rows = (await snapshotRows()).length;
    const envs = await envCount();
    for (const count of [0, 101, 1.5, -1]) {
      const r = await api('alice')('POST', `/api/orgs/default/environments/${source.id}/fork`, { count });
      assert.equal(r.status, 400, `${count}: ${JSON.stringify(r.body)}`);
    }
    for (const count of ['0', '101', 'three']) {
      const c = await cli('alice', ['env', 'fork', 'source', '--count', count]);
      assert.equal(c.code, 2, c.stderr);
      assert.match(c.stderr, /--count takes a whole number from 1 to 100/);
    }
    const bad = await api('alice')('POST', `/api/orgs/default/environments/${source.id}/fork`, { count: 2, name: 'Trial' });
    assert.equal(bad.status, 400, JSON.stringify(bad.body));
    const taken = await api('alice')('POST', `/api/orgs/default/environments/${source.id}/fork`, { count: 3, name: 'trial' });
    assert.equal(taken.status, 409, JSON.stringify(taken.body));
    assert.match(taken.body.error.message, /the name 'trial-\d' is taken/);
    assert.equal((await api('vic')('POST', `/api/orgs/default/environments/${source.id}/fork`, {})).status, 403);
    assert.equal((await snapshotRows()).length, rows);
    assert.equal(await envCount(), envs);
  });
});

describe('berth snapshot list|show|rm', () => {
  test('list and show, as text and --json', async () => {
    const list = await cli('alice', ['snapshot', 'list', '--json']);
    assert.equal(list.code, 0, list.stderr);
    const items = JSON.parse(list.stdout) as any[];
    const names = items.map((s) => s.name);
    for (const n of ['running-one', 'stopped-one', 'admins-one', 'shop-prebuild']) assert.ok(names.includes(n), `${n} in ${names}`);
    assert.ok(!names.includes('theirs-snap'));
    const forks = JSON.parse((await cli('alice', ['snapshot', 'list', '--kind', 'fork', '--json'])).stdout) as any[];
    assert.ok(forks.length >= 2 && forks.every((s) => s.kind === 'fork'), JSON.stringify(forks));
    const table = await cli('alice', ['snapshot', 'ls']);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^ID +NAME +KIND +STATE +FROM +SIZE +ENVS +CREATED/);
    assert.match(table.stdout, /running-one +manual +ready +source /);

    const shown = await cli('alice', ['snapshot', 'show', 'running-one', '--json']);
    assert.equal(shown.code, 0, shown.stderr);
    const s = JSON.parse(shown.stdout);
    assert.equal(s.name, 'running-one');
    assert.equal(s.environments, 2);
    const text = await cli('alice', ['snapshot', 'show', s.id]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^from +source \(env_/m);
    assert.match(text.stdout, /^environments +2 made from it$/m);
    assert.match(text.stdout, /^in use +no$/m);
    const unknown = await cli('alice', ['snapshot', 'show', 'nope']);
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.stderr, /no snapshot 'nope'/);
    // A viewer sees them.
    assert.equal((await api('vic')('GET', '/api/orgs/default/snapshots')).status, 200);
    assert.equal((await api('vic')('DELETE', '/api/orgs/default/snapshots/running-one')).status, 403);
    assert.equal((await t.api('GET', '/api/orgs/default/snapshots?kind=other')).status, 400);
  });

  test('rm: gone from the list and the runner; environments made from it keep their files', async () => {
    const s = (await t.api('GET', '/api/orgs/default/snapshots/running-one')).body;
    const from = (await t.api('GET', '/api/orgs/default/environments?limit=200')).body.items.filter((e: any) => e.snapshotId === s.id);
    assert.equal(from.length, 2);
    const rm = await cli('alice', ['snapshot', 'rm', 'running-one', '--json']);
    assert.equal(rm.code, 0, rm.stderr);
    assert.equal(JSON.parse(rm.stdout).id, s.id);
    assert.equal(await t.fake!.hasSnapshot(s.id), false);
    assert.equal((await t.api('GET', `/api/orgs/default/snapshots/${s.id}`)).status, 404);
    assert.ok(!(await t.api('GET', '/api/orgs/default/snapshots')).body.items.some((x: any) => x.id === s.id));
    for (const e of from) assert.ok(existsSync(file(e.id, '/workspace/src/main.ts')), e.name);
    assert.equal((await t.api('GET', `/api/orgs/default/environments/${from[0].id}`)).body.snapshotId, s.id, 'it still says where it came from');
    const again = await cli('alice', ['snapshot', 'rm', s.id]);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /no snapshot/);
    const text = await cli('alice', ['snapshot', 'rm', 'stopped-one']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^removed stopped-one \(snap_/);

    const [entry] = (await audit('snapshot.delete')).filter((e) => e.target === s.id || e.target === 'running-one');
    assert.ok(entry, JSON.stringify(await audit('snapshot.delete')));
  });

  test("a project's current prebuild cannot be removed (409 naming the project); once a newer prebuild is ready, it can", async () => {
    const db = t.berth.database.db;
    const pre = (await t.api('GET', '/api/orgs/default/snapshots/shop-prebuild')).body;
    const prebuild = (id: string, snapshotId: string, at: Date) =>
      db.insertInto('prebuilds').values({ id, org_id: orgId, project_id: projectId, state: 'ready', trigger: 'manual', snapshot_id: snapshotId, runner_id: pre.runnerId, created_by: 'system', created_at: at } as never).execute();
    await prebuild(newId('pb'), pre.id, new Date(Date.now() - 60_000));
    const shown = (await t.api('GET', `/api/orgs/default/snapshots/${pre.id}`)).body;
    assert.deepEqual(shown.inUseBy, ["project shop's current prebuild"]);
    const refused = await t.api('DELETE', `/api/orgs/default/snapshots/${pre.id}`);
    assert.equal(refused.status, 409, JSON.stringify(refused.body));
    assert.match(refused.body.error.message, /in use \(project shop's current prebuild\)/);
    const cliRefused = await cli('admin', ['snapshot', 'rm', 'shop-prebuild']);
    assert.notEqual(cliRefused.code, 0);
    assert.match(cliRefused.stderr, /project shop's current prebuild/);
    assert.equal(await t.fake!.hasSnapshot(pre.id), true);
    assert.equal((await db.selectFrom('snapshots').select('state').where('id', '=', pre.id).executeTakeFirstOrThrow()).state, 'ready');

    // A newer ready prebuild replaces it.
    const newer = (await t.api('POST', `/api/orgs/default/environments/${source.id}/snapshot`, { name: 'shop-prebuild-2' })).body;
    await prebuild(newId('pb'), newer.id, new Date());
    assert.deepEqual((await t.api('GET', `/api/orgs/default/snapshots/${pre.id}`)).body.inUseBy, []);
    const removed = await t.api('DELETE', `/api/orgs/default/snapshots/${pre.id}`);
    assert.equal(removed.status, 200, JSON.stringify(removed.body));
    assert.equal(await t.fake!.hasSnapshot(pre.id), false);
    // The newer one is now the one in use.
    assert.equal((await t.api('DELETE', `/api/orgs/default/snapshots/${newer.id}`)).status, 409);
  });
});

describe('a control plane stopped while snapshots were made or removed', () => {
  test('on restart a creating snapshot the runner has whole is ready, one it lacks failed, one deleting removed', async () => {
    const db = t.berth.database.db;
    const runnerId = source.runnerId as string;
    const row = (id: string, name: string, state: 'creating' | 'deleting') => ({ id, org_id: orgId, name, kind: 'manual' as const, state, environment_id: source.id, runner_id: runnerId, image: source.image, image_digest: source.imageDigest, created_by: 'system' });
    const whole = newId('snap');
    const lacking = newId('snap');
    const deleting = newId('snap');
    await t.fake!.snapshot(source.id, whole);
    await t.fake!.snapshot(source.id, deleting);
    await db.insertInto('snapshots').values([row(whole, 'was-whole', 'creating'), row(lacking, 'was-lacking', 'creating'), row(deleting, 'was-deleting', 'deleting')]).execute();

    await t.close();
    t = await startTestBerth({ fake: t.fake, dataDir: t.dataDir, database: t.database, runnerHeartbeatMs: 500 });
    const state = async (id: string) => (await t.berth.database.db.selectFrom('snapshots').select(['state', 'state_reason', 'deleted_at']).where('id', '=', id).executeTakeFirstOrThrow());
    await waitFor('the interrupted snapshots settled', async () => (await state(whole)).state === 'ready' && (await state(lacking)).state === 'failed' && (await state(deleting)).deleted_at !== null);
    assert.match((await state(lacking)).state_reason ?? '', /interrupted/);
    assert.equal(await t.fake!.hasSnapshot(deleting), false);
    // The settled one makes environments; the failed one says why it does not.
    const from = await t.api('POST', `/api/orgs/default/snapshots/${whole}/environments`, { name: 'after-restart' });
    assert.equal(from.status, 201, JSON.stringify(from.body));
    assert.equal(read(from.body.id, '/workspace/src/main.ts'), 'console.log("v1")\n');
    const failed = await t.api('POST', `/api/orgs/default/snapshots/${lacking}/environments`, {});
    assert.equal(failed.status, 409, JSON.stringify(failed.body));
    assert.match(failed.body.error.message, /is failed: only a ready one makes environments/);
    // A failed one can be removed (nothing of it is on the runner).
    assert.equal((await t.api('DELETE', `/api/orgs/default/snapshots/${lacking}`)).status, 200);
  });
});
