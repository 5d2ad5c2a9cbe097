// berth env export / import on a real sandbox: a running environment's files (a folder, a
// symlink, a file of a non-root user, modes, a file of its image deleted, a folder of its
// image replaced) exported while it runs, imported as a new environment: the same tree, owners
// and modes; the source unchanged and still running. The real runner refuses a hostile state
// itself too (owners outside its mapped range, a path out), leaving nothing behind.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, test } from 'node:test';
import * as tar from 'tar';
import { DEFAULT_IMAGE, type LocalRunner } from '../src/runner/index.ts';
import { DEFAULT_LIMITS } from '../src/shared/environment.ts';
import { sh, startTestBerth, type TestBerth } from './helpers.ts';

let t: TestBerth;
let work: string;
let sourceId: string;

const TREE = "find /workspace /etc/apt /etc/motd /etc/hostname.d -xdev -printf '%p %U:%G %m %y %l\\n' 2>/dev/null | sort; sha256sum /workspace/dir/data /workspace/dir/owned";

before(async () => {
  t = await startTestBerth();
  work = mkdtempSync(join(tmpdir(), 'berth-env-export-sandbox-'));
  const env = await t.api('POST', '/api/orgs/default/environments', { name: 'source' });
  assert.equal(env.status, 201, JSON.stringify(env.body));
  sourceId = env.body.id;
  const r = await sh(t, sourceId, [
    'set -e',
    'mkdir -p /workspace/dir',
    'head -c 200000 /dev/urandom > /workspace/dir/data',
    'echo mine > /workspace/dir/owned && chown 1000:1000 /workspace/dir/owned && chmod 640 /workspace/dir/owned',
    'ln -s dir/data /workspace/link',
    'ln -s /etc/os-release /workspace/abs-link',
    'chmod 750 /workspace/dir',
    // A file of the image deleted (a whiteout) and a folder of it replaced (an opaque folder).
    'rm -f /etc/motd',
    'rm -rf /etc/apt && mkdir /etc/apt && echo new > /etc/apt/only-this',
  ].join('\n'));
  assert.equal(r.exitCode, 0, r.stderr);
});

after(async () => {
  await t?.destroy();
  if (work) rmSync(work, { recursive: true, force: true });
});

test('a running environment exported and imported as a new one: the same files, owners and modes; the source unchanged', async () => {
  const before = await sh(t, sourceId, TREE);
  assert.equal(before.exitCode, 0, before.stderr);
  assert.match(before.stdout, /\/workspace\/dir\/owned 1000:1000 640 f/);
  assert.match(before.stdout, /\/workspace\/link 0:0 777 l dir\/data/);
  assert.doesNotMatch(before.stdout, /\/etc\/motd/);

  const file = join(work, 'source.berth.tar');
  const exported = await t.cli(['env', 'export', 'source', file]);
  assert.equal(exported.code, 0, exported.stderr);
  const imported = await t.cli(['env', 'import', file, '--name', 'copy']);
  assert.equal(imported.code, 0, imported.stderr);
  const copyId = imported.stdout.trim();
  assert.match(copyId, /^env_/);
  assert.notEqual(copyId, sourceId);
  assert.equal((await t.api('GET', `/api/orgs/default/environments/${copyId}`)).body.state, 'running');

  const after = await sh(t, copyId, TREE);
  assert.equal(after.exitCode, 0, after.stderr);
  assert.equal(after.stdout, before.stdout);
  // The image's own files are there beneath it, as in the source.
  assert.equal((await sh(t, copyId, 'test -f /etc/os-release && cat /etc/apt/only-this')).stdout, 'new\n');

  // The copy is its own: a write there does not show in the source, which kept running.
  assert.equal((await sh(t, copyId, 'echo changed > /workspace/dir/owned')).exitCode, 0);
  const source = await sh(t, sourceId, TREE);
  assert.equal(source.stdout, before.stdout);
  assert.equal((await t.api('GET', `/api/orgs/default/environments/${sourceId}`)).body.state, 'running');
});

test('a stopped environment exports as it was left, and stays stopped', async () => {
  const before = await sh(t, sourceId, TREE);
  assert.equal((await t.api('POST', `/api/orgs/default/environments/${sourceId}/stop`)).status, 200);
  const file = join(work, 'stopped.berth.tar');
  const exported = await t.cli(['env', 'export', 'source', file]);
  assert.equal(exported.code, 0, exported.stderr);
  assert.equal((await t.api('GET', `/api/orgs/default/environments/${sourceId}`)).body.state, 'stopped');
  const imported = await t.cli(['env', 'import', file, '--name', 'from-stopped']);
  assert.equal(imported.code, 0, imported.stderr);
  assert.equal((await sh(t, imported.stdout.trim(), TREE)).stdout, before.stdout);
});

test('the runner refuses a hostile state itself and leaves nothing: owners outside its mapped range, a path out', async () => {
  const runner = t.berth.runner as LocalRunner;
  const image = await runner.images.get(DEFAULT_IMAGE);
  assert.ok(image);
  const envDir = join(t.dataDir, 'environments');
  const entriesBefore = readdirSync(envDir).sort();
  const stateOf = (entries: { path: string; uid: number; type?: 'File' | 'Directory' }[]) => {
    const blocks: Buffer[] = [];
    for (const e of entries) {
      const block = Buffer.alloc(512);
      new tar.Header({ path: e.path, type: e.type ?? 'File', size: 0, mode: 0o755, uid: e.uid, gid: e.uid, mtime: new Date(0) } as never).encode(block, 0);
      blocks.push(block);
    }
    blocks.push(Buffer.alloc(1024));
    return Buffer.concat(blocks);
  };
  const cases: [string, Buffer, RegExp][] = [
    ['host root owner', stateOf([{ path: './', uid: 1_000_000_000, type: 'Directory' }, { path: './setuid-root', uid: 0 }]), /owned by 0:0, outside/],
    ['../', stateOf([{ path: './', uid: 1_000_000_000, type: 'Directory' }, { path: '../../escape', uid: 1_000_000_000 }]), /not a path under/],
  ];
  for (const [what, state, message] of cases) {
    const id = `env_${Math.random().toString(36).slice(2, 14).padEnd(12, '0')}`;
    await assert.rejects(runner.importState({ id, hostname: 'x', image, limits: DEFAULT_LIMITS }, Readable.from(state)), message, what);
    assert.equal(runner.exists(id), false, what);
  }
  assert.deepEqual(readdirSync(envDir).sort(), entriesBefore);
  assert.equal(existsSync(join(t.dataDir, 'escape')), false);
});
