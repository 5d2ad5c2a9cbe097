// Disk quota. In the runner's btrfs state store (the default where the host has btrfs) an
// environment's --disk is a qgroup limit on its subvolume, so writing past it fails inside
// with EDQUOT ("Disk quota exceeded"); on the older layout (BERTH_STATE_STORE=image) it is
// the size of its own ext4 image, and the write fails with ENOSPC. Either way the
// environment, its neighbours and the host carry on.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { storeSupport } from '../src/runner/store.ts';
import { sh, startTestBerth, type TestBerth } from './helpers.ts';

const MiB = 1024 ** 2;
const STORE = storeSupport();
/** On disk images: the runner reads BERTH_STATE_STORE at each start, restarts in these tests among them. */
let t: TestBerth;
const stateStore = process.env.BERTH_STATE_STORE;
before(async () => {
  process.env.BERTH_STATE_STORE = 'image';
  t = await startTestBerth();
});
after(async () => {
  await t?.destroy();
  if (stateStore === undefined) delete process.env.BERTH_STATE_STORE;
  else process.env.BERTH_STATE_STORE = stateStore;
});

test('in the state store, writes past --disk fail with EDQUOT inside; usage shows at once; the environment, its neighbours and the host keep working', { skip: !STORE.available && STORE.reason }, async () => {
  process.env.BERTH_STATE_STORE = 'btrfs';
  let s: TestBerth;
  try {
    s = await startTestBerth();
  } finally {
    process.env.BERTH_STATE_STORE = 'image';
  }
  try {
    const created = await s.cli(['env', 'create', '--name', 'small', '--disk', '300m']);
    assert.equal(created.code, 0, created.stderr);
    const id = created.stdout.trim();
    assert.ok(existsSync(join(s.dataDir, 'environments', id, 'stored')), 'kept in the state store');
    assert.ok(!existsSync(join(s.dataDir, 'environments', id, 'disk.img')));

    const dd = await sh(s, 'small', 'dd if=/dev/zero of=/workspace/fill bs=1M count=400 2>&1; echo "exit=$?"');
    assert.match(dd.stdout, /Disk quota exceeded/);
    assert.match(dd.stdout, /exit=1/);
    // Another path (the image's own files) is bounded just the same: at the limit not even a new file is made.
    const other = await sh(s, 'small', '{ head -c 10M /dev/zero > /root/more; } 2>&1; echo "exit=$?"');
    assert.match(other.stdout, /Disk quota exceeded/);
    assert.match(other.stdout, /exit=[12]/);

    // Read right after the write: the runner has btrfs commit before it reads the qgroup.
    const usage = JSON.parse((await s.cli(['env', 'show', 'small', '--json'])).stdout).usage.diskBytes;
    assert.ok(usage > 250 * MiB && usage <= 300 * MiB, `usage ${usage}`);
    assert.match((await s.cli(['env', 'show', 'small'])).stdout, /usage .*M written/);

    // Freeing space inside makes writing work again, and the usage falls at once.
    const freed = await sh(s, 'small', 'rm -f /workspace/fill /root/more && echo hello > /workspace/note && cat /workspace/note');
    assert.equal(freed.stdout, 'hello\n', freed.stderr);
    assert.ok(JSON.parse((await s.cli(['env', 'show', 'small', '--json'])).stdout).usage.diskBytes < 50 * MiB);

    // A neighbour is untouched by one that hit its limit.
    assert.equal((await s.api('POST', '/api/orgs/default/environments', { name: 'neighbour' })).body.state, 'running');
    assert.equal((await sh(s, 'neighbour', 'head -c 50M /dev/zero > /workspace/x && echo ok')).stdout, 'ok\n');

    // The limit and the files survive a stop and a start.
    assert.equal((await s.cli(['env', 'stop', 'small'])).code, 0);
    assert.equal((await s.cli(['env', 'start', 'small'])).code, 0);
    assert.equal((await sh(s, 'small', 'cat /workspace/note')).stdout, 'hello\n');
    const again = await sh(s, 'small', 'dd if=/dev/zero of=/workspace/fill bs=1M count=400 2>&1; echo "exit=$?"; rm -f /workspace/fill');
    assert.match(again.stdout, /Disk quota exceeded[\s\S]*exit=1/);

    // The host's side: the store's sparse image holds what was written, not what was asked for.
    const image = join(s.dataDir, 'runtime', 'store.img');
    assert.ok(statSync(image).blocks * 512 < 700 * MiB, `the store's image holds ${statSync(image).blocks * 512} bytes`);
  } finally {
    await s.destroy();
  }
});

test('on its own disk image (BERTH_STATE_STORE=image), writes past --disk fail with ENOSPC inside; the environment and the host keep working', async () => {
  const created = await t.cli(['env', 'create', '--name', 'small', '--disk', '300m']);
  assert.equal(created.code, 0, created.stderr);
  const id = created.stdout.trim();
  const image = join(t.dataDir, 'environments', id, 'disk.img');
  // Sparse: the host gives the environment only what it writes.
  assert.ok(statSync(image).blocks * 512 < 40 * MiB, `a fresh image takes ${statSync(image).blocks * 512} bytes`);

  const dd = await sh(t, 'small', 'dd if=/dev/zero of=/workspace/fill bs=1M count=400 2>&1; echo "exit=$?"');
  assert.match(dd.stdout, /No space left on device/);
  assert.match(dd.stdout, /exit=1/);
  // Writing through another path (the image's own files) is bounded just the same.
  const other = await sh(t, 'small', 'head -c 10M /dev/zero > /root/more 2>&1; echo "exit=$?"');
  assert.match(other.stdout, /No space left on device|exit=1/);

  // The host's side: the image never grows past the limit.
  assert.ok(statSync(image).size === 300 * MiB);
  assert.ok(statSync(image).blocks * 512 <= 300 * MiB, `the image holds ${statSync(image).blocks * 512} bytes`);

  const show = await t.cli(['env', 'show', 'small', '--json']);
  const usage = JSON.parse(show.stdout).usage.diskBytes;
  assert.ok(usage > 250 * MiB && usage <= 300 * MiB, `usage ${usage}`);
  assert.match((await t.cli(['env', 'show', 'small'])).stdout, /usage .*M written/);

  // Freeing space inside makes writing work again.
  const after = await sh(t, 'small', 'rm /workspace/fill && echo hello > /workspace/note && cat /workspace/note && df -m / | tail -1');
  assert.equal(after.exitCode, 0, after.stderr);
  assert.match(after.stdout, /^hello\n/);
  assert.ok(JSON.parse((await t.cli(['env', 'show', 'small', '--json'])).stdout).usage.diskBytes < 50 * MiB);

  // Other environments are untouched by one that filled its disk.
  const other2 = (await t.api('POST', '/api/orgs/default/environments', { name: 'neighbour' })).body;
  assert.equal(other2.state, 'running');
  assert.equal((await sh(t, 'neighbour', 'head -c 50M /dev/zero > /workspace/x && echo ok')).stdout, 'ok\n');
});

test('the quota and the files survive stop/start and a control-plane restart', async () => {
  const id = (await t.api('GET', '/api/orgs/default/environments/small')).body.id;
  assert.equal((await sh(t, 'small', 'echo kept > /workspace/kept')).exitCode, 0);
  assert.equal((await t.cli(['env', 'stop', 'small'])).code, 0);
  // Stopped: no processes, but its image stays mounted (an idle file system), so the
  // next start costs no mount.
  const image = join(t.dataDir, 'environments', id, 'disk.img');
  assert.match(loopDevicesOf(image), /^\/dev\/loop/);
  const stopped = JSON.parse((await t.cli(['env', 'show', 'small', '--json'])).stdout);
  assert.equal(typeof stopped.usage.diskBytes, 'number');
  assert.equal((await t.cli(['env', 'start', 'small'])).code, 0);
  assert.equal((await sh(t, 'small', 'cat /workspace/kept')).stdout, 'kept\n');

  // The control plane restarts while the environment runs; then it is stopped and started again.
  const dataDir = t.dataDir;
  const database = t.database;
  await t.close();
  t = await startTestBerth({ dataDir, database });
  assert.equal((await t.api('GET', `/api/orgs/default/environments/${id}`)).body.state, 'running');
  assert.equal((await sh(t, 'small', 'cat /workspace/kept')).stdout, 'kept\n');
  assert.equal((await t.cli(['env', 'stop', 'small'])).code, 0);
  assert.equal((await t.cli(['env', 'start', 'small'])).code, 0);
  assert.equal((await sh(t, 'small', 'cat /workspace/kept')).stdout, 'kept\n');
  const dd = await sh(t, 'small', 'dd if=/dev/zero of=/workspace/fill bs=1M count=400 2>&1; echo "exit=$?"');
  assert.match(dd.stdout, /No space left on device/);
  assert.equal((await sh(t, 'small', 'rm /workspace/fill; echo fine')).stdout, 'fine\n');

  // Removing it frees the image and its loop device.
  assert.equal((await t.cli(['env', 'rm', 'small'])).code, 0);
  assert.throws(() => statSync(join(dataDir, 'environments', id, 'disk.img')));
  await until(() => !execFileSync('losetup', ['-a']).toString().includes(id));
});

test('a create at the default size takes an image formatted and mounted ahead; the pool fills again', async () => {
  const pool = join(t.dataDir, 'runtime', 'disks');
  const ready = () => readdirSync(pool).filter((n) => n.endsWith('.img'));
  // Mounted ahead (a loop device each, autoclear: attached only while mounted).
  const mounted = () => ready().length === 2 && ready().every((n) => loopDevicesOf(join(pool, n)).trim().split('\n').length === 1 && loopDevicesOf(join(pool, n)).startsWith('/dev/loop'));
  await until(mounted);
  const before = ready();
  const created = await t.cli(['env', 'create', '--name', 'pooled']);
  assert.equal(created.code, 0, created.stderr);
  const id = created.stdout.trim();
  const taken = before.filter((n) => !ready().includes(n));
  assert.equal(taken.length, 1, 'one ready image was taken');
  // Its mount moved onto the environment's disk dir: the same single loop device, no mount point left.
  assert.ok(!existsSync(join(pool, taken[0]!.replace(/\.img$/, '.mnt'))));
  const image = join(t.dataDir, 'environments', id, 'disk.img');
  assert.equal(loopDevicesOf(image).trim().split('\n').length, 1);
  assert.equal(statSync(image).size, 10 * 1024 ** 3);
  assert.ok(existsSync(`${image}.base`));
  const df = await sh(t, 'pooled', 'echo hi > /workspace/x && cat /workspace/x && df -BG / | tail -1');
  assert.match(df.stdout, /^hi\n\S+\s+10G/, df.stderr);
  await until(mounted);
  assert.equal((await t.cli(['env', 'rm', 'pooled'])).code, 0);

  // A restart loses the pool's mounts with the old runner's namespace (and their loop
  // devices); the next runner finds the images unmounted and mounts them again.
  const dataDir = t.dataDir;
  const database = t.database;
  await t.close();
  t = await startTestBerth({ dataDir, database });
  await until(mounted);
  const again = await t.cli(['env', 'create', '--name', 'pooled-again']);
  assert.equal(again.code, 0, again.stderr);
  assert.equal((await sh(t, 'pooled-again', 'echo hi > /workspace/x && cat /workspace/x')).stdout, 'hi\n');
  assert.equal((await t.cli(['env', 'rm', 'pooled-again'])).code, 0);
});

function loopDevicesOf(image: string): string {
  return execFileSync('losetup', ['-j', image]).toString();
}

async function until(ok: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 50));
  }
}
