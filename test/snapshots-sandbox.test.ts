// Snapshots and forks on real sandboxes, at the runner (LocalRunner and its btrfs state store,
// src/runner/store.ts): a snapshot of an environment being written to is one instant of it;
// forks of a snapshot see all of it and none of each other; a fork's limits are its own; the
// blocks a source, a snapshot and a fork share are freed with the last of them; a runner
// killed -9 mid-snapshot or mid-fork leaves nothing half-made; an environment kept on an ext4
// image is refused by a runner without the store and copied by one with it.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import pino from 'pino';
import { DEFAULT_IMAGE, ImageStore, LocalRunner, type ImageRecord } from '../src/runner/index.ts';
import type { EnvironmentSpec } from '../src/runner/port.ts';
import { Spawner } from '../src/runner/spawner/index.ts';
import { StateStore, storeSupport } from '../src/runner/store.ts';
import { DEFAULT_LIMITS, type EnvironmentLimits } from '../src/shared/environment.ts';
import { newId } from '../src/shared/ids.ts';
import { IMAGE_DIR, REPO, runToEnd, waitFor } from './helpers.ts';

const MiB = 1024 ** 2;
const logger = pino({ level: 'silent' });
const support = storeSupport();
const skip = support.available ? false : support.reason;

let dataDir: string;
let runner: LocalRunner;
/** The same store seen from the test (its own mount namespace): to look into it and count its bytes. */
let store: StateStore;
let storeSpawner: Spawner;
let image: ImageRecord;
const envs = new Set<string>();
const snapshots = new Set<string>();

before(async () => {
  if (skip) return;
  dataDir = mkdtempSync(join(tmpdir(), 'berth-snapshots-'));
  runner = new LocalRunner({ dataDir, images: new ImageStore({ dir: IMAGE_DIR, logger }), logger, agent: false });
  image = await runner.images.resolve(DEFAULT_IMAGE);
  // The runner mounts the store with its first environment; the test's view opens it after.
  await start(spec(newId('env')));
  storeSpawner = new Spawner({ privateMounts: { unmount: [] } });
  store = new StateStore({ dir: join(dataDir, 'runtime'), spawner: storeSpawner, logger });
  await store.ready();
});

after(async () => {
  if (skip || !runner) return;
  for (const id of envs) await runner.remove(id).catch(() => {});
  for (const id of snapshots) await runner.removeSnapshot(id).catch(() => {});
  runner.close();
  storeSpawner?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

function spec(id: string, limits: Partial<EnvironmentLimits> = {}): EnvironmentSpec {
  return { id, hostname: id.replace('_', '-'), image, limits: { ...DEFAULT_LIMITS, ...limits } };
}

async function start(s: EnvironmentSpec): Promise<EnvironmentSpec> {
  envs.add(s.id);
  await runner.start(s);
  return s;
}

async function snapshot(envId: string): Promise<string> {
  const id = newId('snap');
  snapshots.add(id);
  await runner.snapshot(envId, id);
  return id;
}

async function fork(snap: string, limits: Partial<EnvironmentLimits> = {}): Promise<EnvironmentSpec> {
  const s = spec(newId('env'), limits);
  envs.add(s.id);
  await runner.createFromSnapshot(s, snap);
  return start(s);
}

async function sh(s: EnvironmentSpec, script: string, r: LocalRunner = runner) {
  return runToEnd(r.exec(s, { cmd: ['sh', '-c', script] }));
}

async function ok(s: EnvironmentSpec, script: string, r: LocalRunner = runner): Promise<string> {
  const out = await sh(s, script, r);
  assert.equal(out.exitCode, 0, `${script}\n${out.stdout}${out.stderr}`);
  return out.stdout;
}

/** Writes file N whole (its content made from N), then records N in `count` by rename: whatever `count` says was written whole. */
const WRITER = 'mkdir -p /workspace/w && cd /workspace/w && i=0; while :; do i=$((i+1)); yes "$i" | head -c 100000 > "$i"; echo "$i" > count.tmp; mv count.tmp count; done';
/** Exit 0 when every file up to `count` is whole; prints the count. */
const CHECK_WRITTEN = 'cd /workspace/w && n=$(cat count) && [ "$n" -gt 0 ] && i=1 && while [ "$i" -le "$n" ]; do yes "$i" | head -c 100000 | cmp -s - "$i" || { echo "file $i of $n is not whole" >&2; exit 1; }; i=$((i+1)); done; echo "$n"';
const count = async (s: EnvironmentSpec) => Number((await sh(s, 'cat /workspace/w/count 2>/dev/null || echo 0')).stdout.trim());

// A file of the image deleted (a whiteout), a folder of it replaced (an opaque folder), files of
// a user and modes: what a fork must show as the source had it.
const SOURCE_FILES = [
  'set -e',
  'mkdir -p /workspace/dir',
  'head -c 300000 /dev/urandom > /workspace/dir/data',
  'echo mine > /workspace/dir/owned && chown 1000:1000 /workspace/dir/owned && chmod 640 /workspace/dir/owned',
  'ln -s dir/data /workspace/link',
  'echo original > /workspace/shared',
  'rm -f /etc/motd',
  'rm -rf /etc/apt && mkdir /etc/apt && echo new > /etc/apt/only-this',
].join('\n');
const TREE = "find /workspace /etc/apt /etc/motd -xdev -printf '%p %U:%G %m %y %l\\n' 2>/dev/null | sort; sha256sum /workspace/dir/data /workspace/shared";

test('a snapshot of an environment under write load is one instant of it; the source keeps running and writing', { skip }, async () => {
  const source = await start(spec(newId('env')));
  const writer = runner.exec(source, { cmd: ['sh', '-c', WRITER] });
  writer.stdin.end();
  let last = 0;
  try {
    const taken: [string, number][] = [];
    for (const atLeast of [10, 25, 40]) {
      await waitFor(`the writer's file ${atLeast}`, async () => (await count(source)) >= atLeast);
      taken.push([await snapshot(source.id), await count(source)]);
    }
    // Thawed: the source goes on writing after each snapshot.
    last = await count(source);
    await waitFor('the source to write on after the snapshots', async () => (await count(source)) > last + 5);
    assert.equal((await sh(source, 'cat /proc/1/status')).exitCode, 0);

    for (const [snap, countAfter] of taken) {
      assert.equal(await runner.hasSnapshot(snap), true);
      const f = await fork(snap);
      const n = Number((await ok(f, CHECK_WRITTEN)).trim());
      assert.ok(n >= 10 && n <= countAfter, `the fork counts ${n} files, the source had ${countAfter} just after the snapshot`);
      // Nothing of the source's later writes is in the fork.
      assert.equal((await sh(f, `test -e /workspace/w/${countAfter + 3}`)).exitCode, 1);
    }
  } finally {
    await writer.signal('SIGKILL').catch(() => {});
  }
  // The source is alive, with all it wrote.
  assert.equal(await ok(source, `cd /workspace/w && yes ${last} | head -c 100000 | cmp - ${last} && echo alive`), 'alive\n');
});

test('forks of one snapshot see all of the source and none of each other; the snapshot does not change', { skip }, async () => {
  const source = await start(spec(newId('env')));
  await ok(source, SOURCE_FILES);
  const tree = await ok(source, TREE);
  assert.doesNotMatch(tree, /\/etc\/motd/);
  assert.match(tree, /\/workspace\/dir\/owned 1000:1000 640 f/);
  const snap = await snapshot(source.id);

  const forks = [await fork(snap), await fork(snap), await fork(snap)];
  for (const f of forks) {
    assert.equal(await ok(f, TREE), tree);
    // The image's own files are beneath it, as in the source.
    assert.equal(await ok(f, 'test -f /etc/os-release && ls /etc/apt'), 'only-this\n');
  }
  for (const [i, f] of forks.entries()) await ok(f, `echo fork-${i} > /workspace/shared && echo ${i} > /workspace/mine-${i} && rm /workspace/dir/data && echo again > /etc/motd`);
  await ok(source, 'echo source-later > /workspace/shared && echo later > /workspace/source-only');

  for (const [i, f] of forks.entries()) {
    assert.equal(await ok(f, 'cat /workspace/shared; ls /workspace | grep -E "^(mine|source)" | tr "\\n" " "'), `fork-${i}\nmine-${i} `);
  }
  assert.equal(await ok(source, 'cat /workspace/shared; ls /workspace/mine-* 2>/dev/null; test -f /workspace/dir/data && ! test -e /etc/motd && echo unchanged'), 'source-later\nunchanged\n');
  // A later fork of the same snapshot is the source as it was.
  const later = await fork(snap);
  assert.equal(await ok(later, TREE), tree);
  assert.equal(await ok(later, 'ls /workspace'), 'dir\nlink\nshared\n');
});

test("a fork's limits are its own spec's: its disk and its memory", { skip }, async () => {
  const source = await start(spec(newId('env')));
  await ok(source, 'head -c 20000000 /dev/urandom > /workspace/base');
  const snap = await snapshot(source.id);
  const small = await fork(snap, { diskBytes: 256 * MiB, memoryBytes: 128 * MiB });
  const full = await sh(small, 'dd if=/dev/zero of=/workspace/fill bs=1M count=400 2>&1; echo "exit=$?"');
  assert.match(full.stdout, /Disk quota exceeded|No space left on device/);
  assert.match(full.stdout, /exit=1/);
  // Its memory: 300 MB in one buffer is past 128m.
  const oom = await sh(small, 'dd if=/dev/zero of=/dev/null bs=300M count=1');
  assert.notEqual(oom.exitCode, 0, `${oom.stdout}${oom.stderr}`);
  assert.ok(oom.oomKilled || oom.exitCode === 137, `exit ${oom.exitCode}: ${oom.message ?? oom.stderr}`);
  // The source (default limits) writes as much and more.
  await ok(source, 'dd if=/dev/zero of=/workspace/fill bs=1M count=400 2>&1 && dd if=/dev/zero of=/dev/null bs=300M count=1 2>&1 && rm /workspace/fill');
  // And a fork with the default limits from the same snapshot is not bounded by the small one's.
  const roomy = await fork(snap);
  await ok(roomy, 'dd if=/dev/zero of=/workspace/fill bs=1M count=400 2>&1 && rm /workspace/fill');
});

test('blocks shared by a source, its snapshot and a fork are freed with the last of them', { skip }, async () => {
  const source = await start(spec(newId('env')));
  const before = await store.used();
  const sum = await ok(source, 'head -c 104857600 /dev/urandom > /workspace/big && sha256sum /workspace/big');
  const written = await store.used();
  assert.ok(written - before > 90 * MiB, `100 MB written, the store grew by ${written - before}`);
  const snap = await snapshot(source.id);
  const f = await fork(snap);
  await runner.remove(source.id);
  await runner.removeSnapshot(snap);
  assert.equal(await runner.hasSnapshot(snap), false);
  assert.equal(await ok(f, 'sha256sum /workspace/big'), sum);
  // Still referenced by the fork: nothing of it freed (btrfs frees deleted subvolumes in the background; give it time to, wrongly).
  await new Promise((r) => setTimeout(r, 2000));
  const shared = await store.used();
  assert.ok(shared > written - 20 * MiB, `the fork's 100 MB: the store went from ${written} to ${shared}`);
  await runner.remove(f.id);
  await waitFor('the store to free the 100 MB', async () => (await store.used()) < written - 80 * MiB);
});

/** Starts tests/fixtures/store-child.ts and kills it (and its spawner and commands) `delayMs` after it says go. */
async function killMidway(op: 'snapshot' | 'fork', env: string, snap: string, delayMs: number): Promise<'killed' | 'done'> {
  const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', join(REPO, 'test', 'fixtures', 'store-child.ts'), dataDir, op, env, snap], { detached: true, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (b: Buffer) => {
      out += b;
      if (out.includes('go\n')) resolve();
    });
    void exited.then(() => reject(new Error(`the child runner ended before its go: ${out}`)));
  });
  await new Promise((r) => setTimeout(r, delayMs));
  try {
    process.kill(-child.pid!, 'SIGKILL');
  } catch {
    // Already gone with its group.
  }
  await exited;
  return out.includes('done\n') ? 'done' : 'killed';
}

function freezerState(id: string): string {
  for (const f of [`/sys/fs/cgroup/berth/${id}/cgroup.events`, `/sys/fs/cgroup/freezer/berth/${id}/freezer.state`]) {
    try {
      return readFileSync(f, 'utf8').trim().replace(/\n/g, ' ');
    } catch {
      // The other cgroup layout.
    }
  }
  return 'none';
}

const inStore = async (path: string) => (await storeSpawner.run('test', ['-e', path])).code === 0;
const DELAYS = [0, 3, 10, 20, 40, 80, 1000];

test('a runner killed -9 mid-snapshot leaves the snapshot whole or absent', { skip }, async (t) => {
  const source = await start(spec(newId('env')));
  await ok(source, 'mkdir /workspace/d && cd /workspace/d && for i in $(seq 200); do head -c 20000 /dev/urandom > $i; done && sha256sum * > ../sums');
  await runner.stop(source.id);
  const outcomes: string[] = [];
  for (const delay of DELAYS) {
    const snap = newId('snap');
    snapshots.add(snap);
    const ended = await killMidway('snapshot', source.id, snap, delay);
    if (await runner.hasSnapshot(snap)) {
      outcomes.push(`${delay}ms ${ended}: whole`);
      const r = await storeSpawner.run('sh', ['-c', 'cd "$1/upper/workspace/d" && sha256sum -c --quiet ../sums', 'sh', store.snapshotDir(snap)]);
      assert.equal(r.code, 0, `snapshot after a kill at ${delay} ms: ${r.stdout}${r.stderr}`);
    } else {
      outcomes.push(`${delay}ms ${ended}: absent`);
      assert.equal(ended, 'killed');
      assert.equal(await inStore(store.snapshotDir(snap)), false, `a kill at ${delay} ms left part of snapshot ${snap}`);
      // Its id is free for a snapshot made again.
      await runner.snapshot(source.id, snap);
      assert.equal(await runner.hasSnapshot(snap), true);
    }
  }
  t.diagnostic(outcomes.join(', '));
  assert.ok(outcomes.some((o) => o.endsWith('whole')), outcomes.join(', '));
});

test('a runner killed -9 mid-fork leaves no environment, or one the next create replaces', { skip }, async (t) => {
  const source = await start(spec(newId('env')));
  await ok(source, 'mkdir /workspace/d && cd /workspace/d && for i in $(seq 200); do head -c 20000 /dev/urandom > $i; done && sha256sum * > ../sums');
  const snap = await snapshot(source.id);
  const outcomes: string[] = [];
  for (const delay of DELAYS) {
    const s = spec(newId('env'));
    envs.add(s.id);
    const ended = await killMidway('fork', s.id, snap, delay);
    if (runner.exists(s.id)) {
      outcomes.push(`${delay}ms ${ended}: made`);
    } else {
      outcomes.push(`${delay}ms ${ended}: ${(await inStore(store.envDir(s.id))) ? 'leftover' : 'nothing'}`);
      await runner.createFromSnapshot(s, snap);
    }
    await runner.start(s);
    await ok(s, 'cd /workspace/d && sha256sum -c --quiet ../sums && ! test -e /workspace/extra && echo fresh > /workspace/extra');
  }
  t.diagnostic(outcomes.join(', '));
  assert.ok(outcomes.some((o) => o.endsWith('made')), outcomes.join(', '));
});

test("a runner killed -9 while a running environment's snapshot has it frozen: the next look at it (reconcile asks its status) thaws it, its processes alive", { skip }, async () => {
  const source = await start(spec(newId('env')));
  await ok(source, 'echo x > /workspace/x');
  for (const delay of [0, 1, 2, 5]) {
    const ended = await killMidway('snapshot', source.id, newId('snap'), delay);
    // What a restarted runner's reconcile does first.
    assert.equal(await runner.status(source.id), 'running', `after a kill at ${delay} ms (${ended})`);
    assert.doesNotMatch(freezerState(source.id), /FROZEN|FREEZING|frozen 1/);
    const r = await sh(source, 'echo alive');
    assert.equal(r.stdout, 'alive\n', `after a kill at ${delay} ms (${ended}), its freezer: ${freezerState(source.id)}; exec: ${r.exitCode} ${r.stderr}`);
  }
});

test('environments on an ext4 image: a runner without the store refuses to snapshot; one with it copies them', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-snapshots-image-'));
  const old = new LocalRunner({ dataDir: dir, images: new ImageStore({ dir: IMAGE_DIR, logger }), logger, agent: false, stateStore: 'image' });
  let auto: LocalRunner | undefined;
  const s = spec(newId('env'));
  try {
    assert.deepEqual(Object.keys(await old.snapshotSupport()), ['available', 'reason']);
    await old.start(s);
    await ok(s, SOURCE_FILES, old);
    const tree = await ok(s, TREE, old);
    await assert.rejects(old.snapshot(s.id, newId('snap')), (err: Error & { status?: number }) => /BERTH_STATE_STORE=image/.test(err.message));
    await assert.rejects(old.createFromSnapshot(spec(newId('env')), newId('snap')), /cannot keep snapshots/);

    // The same data dir opened by a runner with the store: the old environment is copied in.
    auto = new LocalRunner({ dataDir: dir, images: new ImageStore({ dir: IMAGE_DIR, logger }), logger, agent: false });
    const snap = newId('snap');
    const made = await auto.snapshot(s.id, snap);
    assert.equal(made.copied, true);
    assert.ok(made.pausedMs > 0, 'the source was running: paused for the copy');
    const f = spec(newId('env'));
    await auto.createFromSnapshot(f, snap);
    await auto.start(f);
    assert.equal(await ok(f, TREE, auto), tree);
    // The old environment still runs from its own image, on either runner.
    assert.equal(await ok(s, 'cat /workspace/shared', auto), 'original\n');
    await auto.remove(f.id);
    await auto.removeSnapshot(snap);
  } finally {
    await (auto ?? old).remove(s.id).catch(() => {});
    old.close();
    auto?.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
