// `berth env export` / `berth env import` over the control plane: the archive's framing, its
// checks (a damaged archive, a hostile state) and who may export. The real runner's round
// trip (owners, modes, xattrs on a real sandbox) is in test/env-export-sandbox.test.ts.
// sandbox: none (test/fakes/fake-runner.ts; scripts/test.ts runs these more at once)
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chownSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync, chmodSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as tar from 'tar';
import { TokenService } from '../src/server/auth.ts';
import { startTestBerth, type TestBerth } from './helpers.ts';

let t: TestBerth;
let work: string;
const tokens: Record<string, string> = {};
let sourceId: string;
let archive: Buffer;
let manifest: any;

/** A tar built by hand, entry by entry, so it can hold what no honest tar would. */
function rawTar(entries: { path: string; type?: 'File' | 'SymbolicLink' | 'Directory' | 'CharacterDevice'; body?: string; linkpath?: string; uid?: number }[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.body ?? '');
    const header = new tar.Header({ path: e.path, type: e.type ?? 'File', size: body.length, mode: e.type === 'Directory' ? 0o755 : 0o644, mtime: new Date(0), uid: e.uid ?? 0, gid: e.uid ?? 0, linkpath: e.linkpath ?? '', devmaj: 1, devmin: 3 } as never);
    const block = Buffer.alloc(512);
    header.encode(block, 0);
    blocks.push(block, body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

/** An export holding `state` as its state, with a manifest that matches it (size and checksum right). */
function exportOf(state: Buffer): Buffer {
  const m = { ...manifest, state: { file: 'state.tar', bytes: state.length, sha256: createHash('sha256').update(state).digest('hex') } };
  return outer(Buffer.from(JSON.stringify(m)), state);
}

function outer(manifestJson: Buffer, state: Buffer): Buffer {
  const entry = (path: string, body: Buffer) => {
    const block = Buffer.alloc(512);
    new tar.Header({ path, type: 'File', size: body.length, mode: 0o600, mtime: new Date(0) } as never).encode(block, 0);
    return [block, body, Buffer.alloc((512 - (body.length % 512)) % 512)];
  };
  return Buffer.concat([...entry('manifest.json', manifestJson), ...entry('state.tar', state), Buffer.alloc(1024)]);
}

async function importRaw(who: string, body: Buffer, query = '') {
  const res = await fetch(`${t.client.url}/api/orgs/default/environments/import${query}`, { method: 'POST', headers: { authorization: `Bearer ${tokens[who]}`, 'content-type': 'application/x-tar' }, body: new Uint8Array(body) });
  return { status: res.status, body: (await res.json()) as any };
}

const envCount = async () => (await t.api('GET', '/api/orgs/default/environments?includeDeleted=true&limit=200')).body.items.length as number;
const fakeDirs = () => readdirSync(join(t.fake!.dir, 'environments')).sort();

before(async () => {
  t = await startTestBerth({ fake: true });
  work = mkdtempSync(join(tmpdir(), 'berth-env-export-'));
  const made = new TokenService(t.berth.database.db);
  for (const [name, role] of [['alice', 'member'], ['bob', 'member'], ['vic', 'viewer']] as const) {
    const m = await t.api('PUT', `/api/orgs/default/members/${name}%40example.com`, { role });
    assert.equal(m.status, 200, JSON.stringify(m.body));
    tokens[name] = (await made.create({ kind: 'user', userId: m.body.userId, name: `${name}'s sign-in` })).token;
  }
  const created = await fetch(`${t.client.url}/api/orgs/default/environments`, { method: 'POST', headers: { authorization: `Bearer ${tokens.alice}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'source', disk: '2g' }) });
  const env = (await created.json()) as any;
  assert.equal(created.status, 201, JSON.stringify(env));
  sourceId = env.id;
  // Its files, straight into the fake's "/": a folder, a file of another owner, a symlink, modes.
  const ws = t.fake!.hostPath(sourceId, '/workspace');
  mkdirSync(join(ws, 'src'), { recursive: true });
  writeFileSync(join(ws, 'src', 'main.ts'), 'console.log("hello")\n');
  writeFileSync(join(ws, 'run.sh'), '#!/bin/sh\necho hi\n');
  chmodSync(join(ws, 'run.sh'), 0o750);
  writeFileSync(join(ws, 'owned'), 'by 1000\n');
  chownSync(join(ws, 'owned'), 1000, 1000);
  symlinkSync('src/main.ts', join(ws, 'link'));
});

after(async () => {
  await t?.destroy();
  if (work) rmSync(work, { recursive: true, force: true });
});

const cli = (who: string, args: string[]) => t.cli(args, { env: { BERTH_URL: t.client.url, BERTH_TOKEN: tokens[who]!, BERTH_ORG: 'default', NO_COLOR: '1' } });

describe('berth env export / import', () => {
  test('export writes manifest.json then state.tar with its size and sha256; import makes a new environment with the same files, owners and modes', async () => {
    const file = join(work, 'source.berth.tar');
    const exported = await cli('alice', ['env', 'export', 'source', file, '--json']);
    assert.equal(exported.code, 0, exported.stderr);
    assert.match(exported.stderr, /exported \d/);
    archive = readFileSync(file);
    assert.deepEqual(JSON.parse(exported.stdout), { environment: 'source', file, bytes: archive.length });
    const names: string[] = [];
    const unpacked = join(work, 'unpacked');
    mkdirSync(unpacked);
    await tar.x({ file, cwd: unpacked, onReadEntry: (e: { path: string }) => void names.push(e.path) } as never);
    assert.deepEqual(names, ['manifest.json', 'state.tar']);
    manifest = JSON.parse(readFileSync(join(unpacked, 'manifest.json'), 'utf8'));
    const state = readFileSync(join(unpacked, 'state.tar'));
    assert.equal(manifest.format, 'berth-environment');
    assert.equal(manifest.version, 1);
    assert.equal(manifest.environment.name, 'source');
    assert.match(manifest.image.digest, /^sha256:[0-9a-f]{64}$/);
    assert.equal(manifest.limits.diskBytes, 2 * 1024 ** 3);
    assert.equal(manifest.state.bytes, state.length);
    assert.equal(manifest.state.sha256, createHash('sha256').update(state).digest('hex'));

    const imported = await cli('alice', ['env', 'import', file, '--name', 'copy']);
    assert.equal(imported.code, 0, imported.stderr);
    const newId = imported.stdout.trim();
    assert.match(newId, /^env_[0-9a-z]{12}$/);
    assert.notEqual(newId, sourceId);
    const shown = (await t.api('GET', `/api/orgs/default/environments/${newId}`)).body;
    assert.equal(shown.name, 'copy');
    assert.equal(shown.state, 'running');
    assert.equal(shown.limits.diskBytes, 2 * 1024 ** 3);
    assert.equal(shown.owner.email, 'alice@example.com');

    const a = t.fake!.hostPath(sourceId, '/workspace');
    const b = t.fake!.hostPath(newId, '/workspace');
    assert.equal(readFileSync(join(b, 'src', 'main.ts'), 'utf8'), 'console.log("hello")\n');
    assert.equal(lstatSync(join(b, 'run.sh')).mode & 0o7777, 0o750);
    assert.equal(lstatSync(join(b, 'owned')).uid, 1000);
    assert.equal(lstatSync(join(b, 'owned')).gid, 1000);
    assert.equal(readlinkSync(join(b, 'link')), 'src/main.ts');
    // Writes to the copy stay in the copy; the source is as it was.
    writeFileSync(join(b, 'src', 'main.ts'), 'changed\n');
    assert.equal(readFileSync(join(a, 'src', 'main.ts'), 'utf8'), 'console.log("hello")\n');
    assert.equal((await t.api('GET', `/api/orgs/default/environments/${sourceId}`)).body.state, 'running');

    // Both on record.
    const audit = (await t.api('GET', '/api/orgs/default/audit?limit=50')).body.items as { action: string; target: string | null }[];
    assert.ok(audit.some((e) => e.action === 'environment.export' && e.target === 'source'), JSON.stringify(audit.slice(0, 5)));
    assert.ok(audit.some((e) => e.action === 'environment.import' && e.target === newId), JSON.stringify(audit.slice(0, 5)));
  });

  test('a damaged archive (one byte of its state changed, or cut short) is refused and nothing is made', async () => {
    const before = { envs: await envCount(), dirs: fakeDirs() };
    const damaged = Buffer.from(archive);
    // The state's bytes start after the manifest entry: change one well inside it.
    const at = damaged.length - 2048 - 700;
    damaged[at] = damaged[at]! ^ 0xff;
    const r = await importRaw('alice', damaged);
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.match(r.body.error.message, /damaged|not a valid tar/);
    const cut = await importRaw('alice', archive.subarray(0, archive.length - 3000));
    assert.equal(cut.status, 400, JSON.stringify(cut.body));
    const notOurs = await importRaw('alice', rawTar([{ path: 'hello.txt', body: 'hi' }]));
    assert.equal(notOurs.status, 400);
    assert.match(notOurs.body.error.message, /not a Berth environment export/);
    assert.equal(await envCount(), before.envs);
    assert.deepEqual(fakeDirs(), before.dirs);
  });

  test('a hostile state is refused whole: ../escape, an absolute path, a file through a symlink to /etc, a device', async () => {
    const before = { envs: await envCount(), dirs: fakeDirs() };
    const cases: [string, Buffer, RegExp][] = [
      ['../escape', rawTar([{ path: './', type: 'Directory' }, { path: '../escape', body: 'x' }]), /not a path under/],
      ['/abs', rawTar([{ path: './', type: 'Directory' }, { path: '/etc/cron.d/x', body: 'x' }]), /not a path under/],
      ['link then through it', rawTar([{ path: './', type: 'Directory' }, { path: './etc', type: 'SymbolicLink', linkpath: '/etc' }, { path: './etc/berth-escape', body: 'x' }]), /not a folder: nothing is written through a link/],
      ['device', rawTar([{ path: './', type: 'Directory' }, { path: './mem', type: 'CharacterDevice' }]), /CharacterDevice/],
    ];
    for (const [what, state, message] of cases) {
      const r = await importRaw('alice', exportOf(state));
      assert.equal(r.status, 400, `${what}: ${JSON.stringify(r.body)}`);
      assert.match(r.body.error.message, message, what);
    }
    assert.equal(existsSync('/etc/berth-escape'), false);
    assert.equal(existsSync(join(t.fake!.dir, 'escape')), false);
    assert.equal(await envCount(), before.envs);
    assert.deepEqual(fakeDirs(), before.dirs);
  });

  test('an image the org may not use, a different digest under its name, or a disk past the bounds is refused before anything is made', async () => {
    const before = await envCount();
    const state = rawTar([{ path: './', type: 'Directory' }]);
    const other = { ...manifest };
    manifest = { ...other, image: { ref: '/srv/images/host-path.tar', digest: other.image.digest } };
    const hostPath = await importRaw('alice', exportOf(state), '?name=other');
    manifest = { ...other, image: { ref: other.image.ref, digest: `sha256:${'0'.repeat(64)}` } };
    const wrongDigest = await importRaw('alice', exportOf(state), '?name=other');
    manifest = { ...other, limits: { ...other.limits, diskBytes: 100 * 1024 ** 4 } };
    const huge = await importRaw('alice', exportOf(state), '?name=other');
    manifest = other;
    assert.equal(huge.status, 400, JSON.stringify(huge.body));
    assert.match(huge.body.error.message, /disk must be between/);
    assert.equal(hostPath.status, 403, JSON.stringify(hostPath.body));
    assert.match(hostPath.body.error.message, /only an instance administrator/);
    assert.equal(wrongDigest.status, 400, JSON.stringify(wrongDigest.body));
    assert.match(wrongDigest.body.error.message, /was exported on sha256:0000/);
    assert.equal(await envCount(), before);
  });

  test("only its owner or an admin exports it: a viewer and another member are refused", async () => {
    for (const who of ['vic', 'bob']) {
      const res = await fetch(`${t.client.url}/api/orgs/default/environments/source/export`, { headers: { authorization: `Bearer ${tokens[who]}` } });
      assert.equal(res.status, 403, `${who}: ${await res.text()}`);
    }
    const viewerImport = await importRaw('vic', archive);
    assert.equal(viewerImport.status, 403);
    const admin = await t.api('GET', '/api/orgs/default/environments/source');
    assert.equal(admin.status, 200);
    const res = await fetch(`${t.client.url}/api/orgs/default/environments/source/export`, { headers: { authorization: `Bearer ${t.client.token}` } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/x-tar');
    await res.arrayBuffer();
  });

  test('/openapi.json describes both routes', async () => {
    const doc = (await (await fetch(`${t.client.url}/openapi.json`)).json()) as { paths: Record<string, Record<string, unknown>> };
    assert.ok(doc.paths['/api/orgs/{org}/environments/{id}/export']?.get);
    assert.ok(doc.paths['/api/orgs/{org}/environments/import']?.post);
  });
});
