// berth backup / berth restore: a real berth (real sandbox; embedded or PostgreSQL) with an org,
// a secret, a project, a task and an environment with a file, backed up while the environment
// runs, restored into a fresh data dir (and a fresh database), started again: the same rows,
// the secret readable, the audit chain whole, the environment started with its file. Where the
// host has btrfs the environment is in the runner's state store with a snapshot of it: the
// backup pauses it only for a snapshot, and the restore brings back both, the snapshot whole
// (an environment made from it sees its files, not the later ones).
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { storeSupport } from '../src/runner/store.ts';
import { openDatabase } from '../src/server/db/index.ts';
import { SecretBox } from '../src/server/secrets/crypto.ts';
import { SecretService } from '../src/server/secrets/service.ts';
import { createBareRepo } from './fakes/git-server.ts';
import { removeRunnerHostState, runCli, sh, startTestBerth, waitFor, type TestBerth } from './helpers.ts';
import { freshDatabase, ON_POSTGRES, type TestDatabase } from './postgres.ts';

const root = mkdtempSync(join(tmpdir(), 'berth-backup-'));
const backupDir = join(root, 'backup');
const SECRET = 'restored-secret-value-7f3a';
const TABLES = ['orgs', 'users', 'memberships', 'projects', 'secrets', 'tasks', 'audit_entries', 'audit_heads', 'environments', 'snapshots'] as const;
type Rows = Record<string, Record<string, unknown>[]>;

let original: TestBerth;
let restored: TestBerth | undefined;
let restoredDb: TestDatabase | undefined;
let envId: string;
/** A snapshot of the environment in the state store, taken before /workspace/later was written. */
let snapId: string | undefined;
const STORE = storeSupport().available;
let before_: Rows;
const dbEnv = (db: TestDatabase | undefined): Record<string, string> => (db ? { DATABASE_URL: db.url } : {});

/** Every row of the tables a restore must bring back, as JSON sees them. */
async function rows(handle: Awaited<ReturnType<typeof openDatabase>>): Promise<Rows> {
  const out: Rows = {};
  for (const table of TABLES) out[table] = JSON.parse(JSON.stringify(await handle.db.selectFrom(table).selectAll().execute())).sort((a: any, b: any) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
  return out;
}

before(async () => {
  original = await startTestBerth();
  assert.equal((await original.api('POST', '/api/orgs', { name: 'acme' })).status, 201);
  assert.equal((await original.api('PUT', '/api/orgs/default/secrets/DEPLOY_TOKEN', { value: SECRET })).status, 200);
  const repo = await createBareRepo({ root, name: 'shop.git', files: { 'README.md': '# shop\n' } });
  const project = await original.api('POST', '/api/orgs/default/projects', { name: 'shop', repoUrl: repo.path, agent: { kind: 'command', command: 'true' } });
  assert.equal(project.status, 201, JSON.stringify(project.body));
  const task = await original.api('POST', '/api/orgs/default/tasks', { project: 'shop', goal: 'keep me' });
  assert.equal(task.status, 201, JSON.stringify(task.body));
  await original.api('POST', `/api/orgs/default/tasks/${task.body.id}/cancel`);
  await waitFor('the task to end', async () => ['succeeded', 'failed', 'cancelled', 'timed_out'].includes((await original.api('GET', `/api/orgs/default/tasks/${task.body.id}`)).body.state), 120_000);
  const env = await original.api('POST', '/api/orgs/default/environments', { name: 'keep', disk: '300m' });
  assert.equal(env.status, 201, JSON.stringify(env.body));
  envId = env.body.id;
  assert.equal((await sh(original, envId, 'mkdir -p /workspace && echo kept-through-restore > /workspace/proof && head -c 3000000 /dev/urandom > /workspace/blob && sha256sum /workspace/blob > /workspace/blob.sum')).exitCode, 0);
  if (STORE) {
    assert.ok(existsSync(join(original.dataDir, 'environments', envId, 'stored')), 'the environment is in the state store');
    const snap = await original.api('POST', `/api/orgs/default/environments/${envId}/snapshot`, { name: 'before-later' });
    assert.equal(snap.status, 201, JSON.stringify(snap.body));
    snapId = snap.body.id as string;
    assert.equal((await sh(original, envId, 'echo after-the-snapshot > /workspace/later')).exitCode, 0);
  }
});

after(async () => {
  await restored?.destroy();
  await original.close();
  await removeRunnerHostState(original.dataDir);
  await original.database?.drop();
  rmSync(original.dataDir, { recursive: true, force: true });
  rmSync(root, { recursive: true, force: true });
});

test('a backup of a running berth up is refused, and says to stop it', async () => {
  const r = await runCli(['backup', join(root, 'live')], { BERTH_DATA_DIR: original.dataDir, ...dbEnv(original.database) });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /berth up is running on .*stop it/);
  assert.equal(existsSync(join(root, 'live')), false);
});

test('berth backup writes the database, the keys and the running environment, with checksums', async () => {
  await original.close(); // the environment keeps running: the backup pauses it while copying
  const r = await runCli(['backup', backupDir], { BERTH_DATA_DIR: original.dataDir, ...dbEnv(original.database) });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, STORE ? /backed up .* 1 environment, 1 snapshot,/ : /backed up .* 1 environment/);
  assert.match(r.stderr, /holds the keys \(secret\.key, audit\.key\)/);
  assert.equal(statSync(backupDir).mode & 0o777, 0o700);
  const manifest = JSON.parse(readFileSync(join(backupDir, 'manifest.json'), 'utf8'));
  assert.equal(manifest.database.kind, ON_POSTGRES ? 'postgres' : 'pglite');
  assert.deepEqual(manifest.environments.map((e: any) => [e.id, e.copied]), [[envId, STORE ? 'paused for a snapshot' : 'paused while copied']]);
  if (STORE) {
    // The state store's image is not copied whole: each environment's and snapshot's files are.
    assert.deepEqual(manifest.environments[0].stored, { file: `environments/${envId}.state.tar`, limitBytes: 300 * 1024 ** 2 });
    assert.deepEqual(manifest.snapshots.map((s: any) => s.id), [snapId]);
    assert.ok(manifest.snapshots[0].bytes > 3_000_000, JSON.stringify(manifest.snapshots));
    assert.ok(manifest.files.some((f: any) => f.path === `snapshots/${snapId}.tar` && f.bytes > 3_000_000));
    assert.ok(!manifest.files.some((f: any) => /store/.test(f.path)));
  }
  for (const f of manifest.files) assert.equal(statSync(join(backupDir, f.path)).size, f.bytes, f.path);
  // The environment runs again after its copy: not left frozen.
  const freezer = [`/sys/fs/cgroup/berth/${envId}/cgroup.events`, `/sys/fs/cgroup/freezer/berth/${envId}/freezer.state`].find((p) => existsSync(p));
  if (freezer) assert.doesNotMatch(readFileSync(freezer, 'utf8'), /frozen 1|^FROZEN/m);

  // What the restore must bring back, read from the original database now that it is closed.
  const handle = await openDatabase({ dataDir: original.dataDir, databaseUrl: original.database?.url });
  before_ = await rows(handle);
  await handle.close();
  // The original host is gone: its environment, mounts and network with it.
  await removeRunnerHostState(original.dataDir);
});

test('a damaged backup is refused, naming the file, and nothing is written', async () => {
  const damaged = join(root, 'damaged');
  cpSync(backupDir, damaged, { recursive: true });
  const file = join(damaged, 'environments', `${envId}.tar`);
  const fd = openSync(file, 'r+');
  const at = Math.floor(statSync(file).size / 2);
  writeSync(fd, Buffer.from([readFileSync(file)[at]! ^ 0xff]), 0, 1, at);
  closeSync(fd);
  const target = join(root, 'never');
  const db = ON_POSTGRES ? await freshDatabase() : undefined;
  try {
    const r = await runCli(['restore', damaged], { BERTH_DATA_DIR: target, ...dbEnv(db) });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`environments/${envId}\\.tar is damaged .*nothing was restored`));
    assert.equal(existsSync(target), false);
    if (db) {
      const handle = new pg.Client({ connectionString: db.url });
      await handle.connect();
      const { rows: tables } = await handle.query(`select table_name from information_schema.tables where table_schema = 'public'`);
      await handle.end();
      assert.deepEqual(tables, [], 'the database is left empty');
    }
  } finally {
    await db?.drop();
  }
});

test('a restore into a data dir that is not empty is refused', async () => {
  const busy = join(root, 'busy');
  mkdirSync(busy);
  writeFileSync(join(busy, 'something'), 'x');
  const r = await runCli(['restore', backupDir], { BERTH_DATA_DIR: busy, ...(ON_POSTGRES ? { DATABASE_URL: 'postgres://unused' } : {}) });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /is not empty: restore into a new data dir/);
  assert.deepEqual(readdirSync(busy), ['something']);
});

test('berth restore into a fresh data dir brings back rows, secrets, the audit chain and the environment with its files', async () => {
  const dataDir = join(root, 'restored');
  restoredDb = ON_POSTGRES ? await freshDatabase() : undefined;
  const r = await runCli(['restore', backupDir], { BERTH_DATA_DIR: dataDir, ...dbEnv(restoredDb) });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, STORE ? /restored the backup .* 1 environment, 1 snapshot,/ : /restored the backup .* 1 environment/);

  // The rows, before berth up touches them: the same but for the runner the environment is on.
  const handle = await openDatabase({ dataDir, databaseUrl: restoredDb?.url });
  const after_ = await rows(handle);
  await handle.close();
  const moved = (rs: Rows) => ({ ...rs, environments: rs.environments!.map((e) => ({ ...e, runner_id: null })), tasks: rs.tasks!.map((e) => ({ ...e, runner_id: null })), snapshots: rs.snapshots!.map((e) => ({ ...e, runner_id: null })) });
  assert.deepEqual(moved(after_), moved(before_));
  assert.ok(before_.tasks!.length >= 1 && before_.projects!.some((p) => p.name === 'shop') && before_.orgs!.some((o) => o.name === 'acme'));
  assert.equal(after_.environments!.find((e) => e.id === envId)!.runner_id, `local:${dataDir}`);
  if (STORE) assert.deepEqual(after_.snapshots!.map((s) => s.runner_id), [`local:${dataDir}`]);

  restored = await startTestBerth({ dataDir, database: restoredDb });
  const orgs = (await restored.api('GET', '/api/orgs')).body.items.map((o: any) => o.name).sort();
  assert.deepEqual(orgs, ['acme', 'default']);
  const verify = await restored.cli(['audit', 'verify'], { env: dbEnv(restoredDb) });
  assert.equal(verify.code, 0, verify.stderr + verify.stdout);

  const orgId = (before_.orgs!.find((o) => o.name === 'default') as { id: string }).id;
  const secrets = new SecretService({ db: restored.berth.database.db, box: SecretBox.load({ env: {}, dataDir }) });
  assert.equal(await secrets.forgeSecret(orgId, null, 'DEPLOY_TOKEN'), SECRET);

  const listed = (await restored.api('GET', '/api/orgs/default/environments')).body.items as { id: string; state: string }[];
  assert.ok(listed.some((e) => e.id === envId), JSON.stringify(listed));
  const state = (await restored.api('GET', `/api/orgs/default/environments/${envId}`)).body.state;
  if (state !== 'running') {
    const started = await restored.api('POST', `/api/orgs/default/environments/${envId}/start`);
    assert.ok(started.status < 300, JSON.stringify(started.body));
  }
  await waitFor('the environment to run', async () => (await restored!.api('GET', `/api/orgs/default/environments/${envId}`)).body.state === 'running', 120_000);
  const proof = await sh(restored, envId, 'cat /workspace/proof && sha256sum -c /workspace/blob.sum');
  assert.equal(proof.exitCode, 0, proof.stderr);
  assert.match(proof.stdout, /^kept-through-restore\n/);
  if (!STORE) return;
  assert.ok(existsSync(join(dataDir, 'environments', envId, 'stored')), 'restored into the state store');
  assert.equal((await sh(restored, envId, 'cat /workspace/later')).stdout, 'after-the-snapshot\n');
  // Its disk limit holds again (the store's qgroup limit, restored).
  const fill = await sh(restored, envId, `head -c 310M /dev/zero > /workspace/fill; echo "exit=$?"; rm -f /workspace/fill`);
  assert.match(fill.stdout + fill.stderr, /Disk quota exceeded/);
  assert.match(fill.stdout, /exit=1/);
});

test('the snapshot is restored whole: an environment made from it has its files, not the later ones', { skip: !STORE && 'no btrfs state store on this host' }, async () => {
  assert.ok(restored && snapId);
  assert.equal(await restored.berth.runner.hasSnapshot(snapId), true);
  const made = await restored.api('POST', `/api/orgs/default/snapshots/${snapId}/environments`, { name: 'from-backup' });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  await waitFor('the environment from the snapshot to run', async () => (await restored!.api('GET', `/api/orgs/default/environments/${made.body.id}`)).body.state === 'running', 120_000);
  const files = await sh(restored, made.body.id, 'cat /workspace/proof && sha256sum -c /workspace/blob.sum >/dev/null && test ! -e /workspace/later && echo no-later');
  assert.equal(files.exitCode, 0, files.stderr);
  assert.equal(files.stdout, 'kept-through-restore\nno-later\n');
});
