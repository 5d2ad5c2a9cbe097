// Attacks on `berth env cp` from inside a real environment. The sandbox controls the
// archive a copy out reads (here: a fake `tar` earlier in PATH that sends whatever archive
// the test planted), so every entry name, link, owner and mode in it is hostile input. The
// host decides every path: nothing lands outside the one name asked for, nothing keeps a
// foreign owner, a setuid bit or a device node, no copy is unbounded, and a file holding
// one of the environment's secrets does not leave at all.
import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Header } from 'tar';
import { CopyChecker, DEFAULT_COPY_LIMITS } from '../../src/shared/copy-archive.ts';
import { runCli, sh, startTestBerth, type TestBerth } from '../helpers.ts';

// Small limits, so the caps can be reached with a few files (read when the control plane
// starts; the CLI inherits them too).
process.env.BERTH_COPY_MAX_ENTRIES = '200';
process.env.BERTH_COPY_MAX_BYTES = '4m';

// Modes come out as they were inside, less the special bits, through the invoking user's umask.
const UMASK = process.umask();
const SECRET = 'ct-9f8e7d6c5b4a3928170615';
const ENV = 'cp-evil';
let t: TestBerth;
let scratch: string;

interface Entry {
  path: string;
  type?: 'File' | 'Directory' | 'SymbolicLink' | 'Link' | 'CharacterDevice' | 'BlockDevice' | 'FIFO';
  body?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  linkpath?: string;
}

/** A tar archive with exactly these entries, as a hostile `tar` would write it. */
function tarOf(entries: Entry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.body ?? '');
    const type = e.type ?? 'File';
    const header = Buffer.alloc(512);
    new Header({
      path: e.path,
      type,
      mode: e.mode ?? (type === 'Directory' ? 0o755 : 0o644),
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      size: type === 'File' ? body.length : 0,
      mtime: new Date(),
      linkpath: e.linkpath,
      devmaj: type.endsWith('Device') ? 1 : 0,
      devmin: type.endsWith('Device') ? 3 : 0,
    }).encode(header, 0);
    blocks.push(header);
    if (type === 'File' && body.length) blocks.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

/** From now on the environment's `tar -cf` sends this archive, whatever it is asked for. */
async function plant(env: string, archive: Buffer): Promise<void> {
  const r = await sh(t, env, 'mkdir -p /tmp/evil && base64 -d > /tmp/evil/next.tar', { stdin: archive.toString('base64') });
  assert.equal(r.exitCode, 0, r.stderr);
}

/** A fake tar first in PATH: `-cf` (what a copy out runs) answers with the planted archive. */
async function installFakeTar(env: string): Promise<void> {
  const fake = '#!/bin/sh\nif [ "$1" = "-cf" ] && [ -f /tmp/evil/next.tar ]; then exec cat /tmp/evil/next.tar; fi\nexec /usr/bin/tar "$@"\n';
  const done = await t.api('POST', `/api/orgs/default/environments/${env}/exec`, {
    cmd: ['sh', '-c', 'first=${PATH%%:*}; mkdir -p "$first"; printf "%s" "$1" > "$first/tar"; chmod 755 "$first/tar"; command -v tar', 'sh', fake],
  });
  assert.equal(done.status, 200, JSON.stringify(done.body));
  assert.notEqual(done.body.stdout.trim(), '/usr/bin/tar', 'the fake tar comes first in PATH');
}

/** A home folder on the host with the files an attacker wants to replace. */
function hostHome(): { home: string; dest: string } {
  const home = mkdtempSync(join(scratch, 'home-'));
  const dest = join(home, 'dest');
  mkdirSync(join(dest, '.ssh'), { recursive: true });
  writeFileSync(join(home, '.bashrc'), 'mine\n');
  writeFileSync(join(dest, '.bashrc'), 'mine\n');
  writeFileSync(join(dest, '.ssh', 'authorized_keys'), 'ssh-ed25519 mine\n');
  return { home, dest };
}

function assertUntouched({ home, dest }: { home: string; dest: string }, extra: string[] = []): void {
  assert.equal(readFileSync(join(home, '.bashrc'), 'utf8'), 'mine\n');
  assert.equal(readFileSync(join(dest, '.bashrc'), 'utf8'), 'mine\n');
  assert.equal(readFileSync(join(dest, '.ssh', 'authorized_keys'), 'utf8'), 'ssh-ed25519 mine\n');
  assert.deepEqual(readdirSync(home).sort(), ['.bashrc', 'dest']);
  assert.deepEqual(readdirSync(dest).sort(), ['.bashrc', '.ssh', ...extra].sort());
}

before(async () => {
  t = await startTestBerth();
  scratch = mkdtempSync(join(tmpdir(), 'berth-copy-'));
  assert.equal((await t.cli(['env', 'create', '--name', ENV])).code, 0);
  await installFakeTar(ENV);
  // What the user asks for exists inside: the fake tar then answers for it.
  await sh(t, ENV, 'echo report > /workspace/report.txt');
});
after(async () => {
  await t?.destroy();
  rmSync(scratch, { recursive: true, force: true });
});

describe('env cp out: the host decides every path', () => {
  const hostile: [string, Entry[]][] = [
    ['a different top-level name', [{ path: '.bashrc', body: 'pwned\n' }]],
    ['a second top-level entry', [{ path: 'report.txt', body: 'ok\n' }, { path: '.ssh/', type: 'Directory' }, { path: '.ssh/authorized_keys', body: 'ssh-ed25519 attacker\n' }]],
    ['a climb out of the requested name', [{ path: 'report.txt', body: 'ok\n' }, { path: '../.bashrc', body: 'pwned\n' }]],
    ['an absolute entry', [{ path: '/tmp/pwned', body: 'pwned\n' }]],
    ['a symlink pointing out of the requested name', [{ path: 'report.txt', type: 'SymbolicLink', linkpath: '../.bashrc' }]],
    ['an absolute symlink', [{ path: 'report.txt', type: 'SymbolicLink', linkpath: '/etc/shadow' }]],
    ['a symlink then a file through it', [{ path: 'report.txt/', type: 'Directory' }, { path: 'report.txt/up', type: 'SymbolicLink', linkpath: '..' }, { path: 'report.txt/up/.bashrc', body: 'pwned\n' }]],
    ['a hard link to a host path', [{ path: 'report.txt', type: 'Link', linkpath: '/etc/passwd' }]],
    ['the same entry twice, as a file and as a link', [{ path: 'report.txt', body: 'ok\n' }, { path: 'report.txt', type: 'SymbolicLink', linkpath: '/root/.bashrc' }]],
  ];
  for (const [what, entries] of hostile) {
    test(`a sandbox's archive with ${what} is refused and writes nothing`, async () => {
      await plant(ENV, tarOf(entries));
      const home = hostHome();
      const r = await t.cli(['env', 'cp', `${ENV}:/workspace/report.txt`, home.dest]);
      assert.equal(r.code, 4, `refused as not allowed: ${r.stdout + r.stderr}`);
      assert.match(r.stderr, /refus/i);
      assert.doesNotMatch(r.stderr, /at .*\.ts:\d+/, 'a message, not a stack trace');
      assertUntouched(home);
    });
  }

  test('the API refuses it too (not only our CLI), with a clear 4xx and an audit entry', async () => {
    await plant(ENV, tarOf([{ path: '.bashrc', body: 'pwned\n' }]));
    const res = await fetch(`${t.client.url}/api/orgs/default/environments/${ENV}/files?path=/workspace/report.txt`, { headers: { authorization: `Bearer ${t.client.token}` } });
    assert.equal(res.status, 403);
    const body = (await res.json()) as { error: { message: string } };
    assert.match(body.error.message, /\.bashrc.*not under report\.txt/);
    const audit = await t.api('GET', '/api/orgs/default/audit?action=file.copy_refused');
    assert.ok(audit.body.items.some((e: { details: { path: string } }) => e.details.path === '/workspace/report.txt'), JSON.stringify(audit.body));
  });

  test('a well-formed archive still copies, into a folder and under a new name', async () => {
    await plant(ENV, tarOf([{ path: 'report.txt/', type: 'Directory' }, { path: 'report.txt/a', body: 'alpha\n' }, { path: 'report.txt/link', type: 'SymbolicLink', linkpath: 'a' }, { path: 'report.txt/hard', type: 'Link', linkpath: 'report.txt/a' }]));
    const home = hostHome();
    const r = await t.cli(['env', 'cp', `${ENV}:/workspace/report.txt`, home.dest]);
    assert.equal(r.code, 0, r.stderr);
    assertUntouched(home, ['report.txt']);
    assert.equal(readFileSync(join(home.dest, 'report.txt', 'link'), 'utf8'), 'alpha\n');
    assert.equal(readFileSync(join(home.dest, 'report.txt', 'hard'), 'utf8'), 'alpha\n');
  });
});

describe('env cp out: owners, setuid bits and device nodes stay inside', () => {
  test('a setuid-root binary made inside comes out without its setuid bit, owned by the invoking user', async () => {
    await sh(t, ENV, 'rm -f /tmp/evil/next.tar; mkdir -p /workspace/kit/sticky && cp /bin/sh /workspace/kit/rootshell && chmod 4755 /workspace/kit/rootshell && chmod 2755 /workspace/kit && chmod 1777 /workspace/kit/sticky && chown 0:0 /workspace/kit/rootshell');
    const out = mkdtempSync(join(scratch, 'out-'));
    const r = await t.cli(['env', 'cp', `${ENV}:/workspace/kit`, out]);
    assert.equal(r.code, 0, r.stderr);
    for (const [path, perm] of [['kit/rootshell', 0o755], ['kit', 0o755], ['kit/sticky', 0o777]] as const) {
      const st = statSync(join(out, path));
      assert.equal(st.mode & 0o7777, perm & ~UMASK, `${path}: mode ${(st.mode & 0o7777).toString(8)}`);
      assert.equal(st.uid, process.getuid!(), path);
      assert.equal(st.gid, process.getgid!(), path);
    }
  });

  test('foreign owners, setuid/setgid bits, device nodes and FIFOs in a hostile archive never reach the host', async () => {
    await plant(ENV, tarOf([
      { path: 'kit/', type: 'Directory', mode: 0o3777, uid: 1234, gid: 1234 },
      { path: 'kit/su', body: '#!/bin/sh\nid\n', mode: 0o6755, uid: 0, gid: 0 },
      { path: 'kit/theirs', body: 'x\n', mode: 0o644, uid: 1234, gid: 4321 },
      { path: 'kit/null', type: 'CharacterDevice', mode: 0o666 },
      { path: 'kit/disk', type: 'BlockDevice', mode: 0o666 },
      { path: 'kit/pipe', type: 'FIFO', mode: 0o666 },
    ]));
    const out = mkdtempSync(join(scratch, 'out-'));
    const r = await t.cli(['env', 'cp', `${ENV}:/workspace/kit`, out]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readdirSync(join(out, 'kit')).sort(), ['su', 'theirs']);
    assert.match(r.stderr, /skipped 3 device nodes or FIFOs/);
    for (const [path, perm] of [['kit', 0o777], ['kit/su', 0o755], ['kit/theirs', 0o644]] as const) {
      const st = lstatSync(join(out, path));
      assert.equal(st.mode & 0o7777, perm & ~UMASK, `${path}: mode ${(st.mode & 0o7777).toString(8)}`);
      assert.equal(st.uid, process.getuid!(), path);
      assert.equal(st.gid, process.getgid!(), path);
    }
  });
});

describe('env cp out: bounded', () => {
  test('more entries than BERTH_COPY_MAX_ENTRIES is refused with the limit named, and nothing written', async () => {
    await sh(t, ENV, 'rm -f /tmp/evil/next.tar; mkdir -p /workspace/many && cd /workspace/many && for i in $(seq 1 300); do : > f$i; done');
    const out = mkdtempSync(join(scratch, 'out-'));
    const r = await t.cli(['env', 'cp', `${ENV}:/workspace/many`, out]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /more than 200 entries.*BERTH_COPY_MAX_ENTRIES/);
    assert.deepEqual(readdirSync(out), []);
  });

  test('an archive larger than BERTH_COPY_MAX_BYTES is refused with the limit named, and nothing written', async () => {
    await sh(t, ENV, 'rm -f /tmp/evil/next.tar; head -c 6000000 /dev/zero > /workspace/big');
    const out = mkdtempSync(join(scratch, 'out-'));
    const r = await t.cli(['env', 'cp', `${ENV}:/workspace/big`, out]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /larger than 4M.*BERTH_COPY_MAX_BYTES/);
    assert.deepEqual(readdirSync(out), []);
  });
});

describe('env cp out: secrets', () => {
  before(async () => {
    assert.equal((await t.cli(['secret', 'set', 'COPY_TOKEN'], { input: `${SECRET}\n` })).code, 0);
    assert.equal((await t.cli(['project', 'create', 'vault', '--repo', 'http://127.0.0.1:9/acme/app.git', '--secret', 'COPY_TOKEN'])).code, 0);
    const env = await t.api('POST', '/api/orgs/default/environments', { name: 'cp-secret', project: 'vault' });
    assert.equal(env.body.state, 'running', JSON.stringify(env.body));
  });

  const leaks: [string, string, string][] = [
    ['in a file', 'printf "token=%s\\n" "$COPY_TOKEN" > /workspace/leak.txt', '/workspace/leak.txt'],
    ['in base64, deep in a folder', 'mkdir -p /workspace/out/deep && printf %s "$COPY_TOKEN" | base64 > /workspace/out/deep/b64', '/workspace/out'],
    ['in a file name', 'mkdir -p /workspace/names && : > "/workspace/names/$COPY_TOKEN"', '/workspace/names'],
    ['in a symlink target', 'mkdir -p /workspace/links && ln -s "x-$COPY_TOKEN" /workspace/links/l', '/workspace/links'],
  ];
  for (const [where, script, path] of leaks) {
    test(`a copy out holding a secret ${where} is refused, naming the secret, never its value`, async () => {
      assert.equal((await sh(t, 'cp-secret', script)).exitCode, 0);
      const out = mkdtempSync(join(scratch, 'out-'));
      const r = await t.cli(['env', 'cp', `cp-secret:${path}`, out]);
      assert.equal(r.code, 4, `not allowed: ${r.stderr}`);
      assert.match(r.stderr, /secret COPY_TOKEN/);
      assert.doesNotMatch(r.stdout + r.stderr, new RegExp(SECRET));
      assert.deepEqual(readdirSync(out), []);
      const audit = await t.api('GET', '/api/orgs/default/audit?action=file.copy_refused');
      const entry = audit.body.items.find((e: { details: { path: string } }) => e.details.path === path);
      assert.ok(entry, JSON.stringify(audit.body));
      assert.deepEqual(entry.details.secrets, ['COPY_TOKEN']);
      assert.doesNotMatch(JSON.stringify(audit.body), new RegExp(SECRET));
    });
  }

  test('an error from a copy out or in never carries a secret either', async () => {
    await sh(t, 'cp-secret', 'touch /workspace/leak.txt');
    await installFakeTar('cp-secret');
    const fake = '#!/bin/sh\necho "cannot read: $COPY_TOKEN" >&2; exit 2\n';
    await t.api('POST', '/api/orgs/default/environments/cp-secret/exec', { cmd: ['sh', '-c', 'printf "%s" "$1" > "${PATH%%:*}/tar"', 'sh', fake] });
    const r = await t.cli(['env', 'cp', 'cp-secret:/workspace/leak.txt', scratch]);
    assert.equal(r.code, 1);
    assert.doesNotMatch(r.stderr, new RegExp(SECRET));
    assert.match(r.stderr, /\[secret:COPY_TOKEN\]/);
    // Copying in: the environment's tar fails the same way.
    const local = join(scratch, 'upload.txt');
    writeFileSync(local, 'hello\n');
    const up = await t.cli(['env', 'cp', local, 'cp-secret:/workspace/in/']);
    assert.equal(up.code, 1);
    assert.doesNotMatch(up.stderr, new RegExp(SECRET));
    assert.match(up.stderr, /could not unpack.*\[secret:COPY_TOKEN\]/);
  });

  test('a file that only names a secret, as Berth\'s own redacted logs do, copies out', async () => {
    await sh(t, ENV, 'rm -f /tmp/evil/next.tar');
    assert.equal((await sh(t, 'cp-secret', 'rm -f "${PATH%%:*}/tar"; echo "key=[secret:COPY_TOKEN]" > /workspace/log.txt')).exitCode, 0);
    const out = mkdtempSync(join(scratch, 'out-'));
    const r = await t.cli(['env', 'cp', 'cp-secret:/workspace/log.txt', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readFileSync(join(out, 'log.txt'), 'utf8'), 'key=[secret:COPY_TOKEN]\n');
  });
});

describe('env cp out: the CLI checks the archive itself', () => {
  // A server that passes the sandbox's archive through unchecked (an older or compromised
  // control plane): the CLI alone must still keep every path, owner and mode host-decided.
  let server: Server;
  let archive: Buffer = Buffer.alloc(0);
  before(async () => {
    server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-tar' });
      res.end(archive);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const cli = (args: string[]) => runCli(args, { BERTH_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, BERTH_TOKEN: 'x', BERTH_ORG: 'default', BERTH_DATA_DIR: scratch });

  test('a top-level name other than the one asked for is refused', async () => {
    archive = tarOf([{ path: 'report.txt', body: 'ok\n' }, { path: '.ssh/', type: 'Directory' }, { path: '.ssh/authorized_keys', body: 'ssh-ed25519 attacker\n' }]);
    const home = hostHome();
    const r = await cli(['env', 'cp', 'x:/workspace/report.txt', home.dest]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /refusing .*\.ssh.*not under report\.txt/);
    assertUntouched(home);
    archive = tarOf([{ path: 'report.txt', type: 'SymbolicLink', linkpath: '/root/.bashrc' }]);
    const link = await cli(['env', 'cp', 'x:/workspace/report.txt', home.dest]);
    assert.equal(link.code, 1, link.stderr);
    assertUntouched(home);
  });

  test('owners, setuid bits and device nodes are dropped', async () => {
    archive = tarOf([
      { path: 'kit/', type: 'Directory', mode: 0o3777, uid: 1234, gid: 1234 },
      { path: 'kit/su', body: '#!/bin/sh\n', mode: 0o4755, uid: 1234, gid: 1234 },
      { path: 'kit/null', type: 'CharacterDevice', mode: 0o666 },
    ]);
    const out = mkdtempSync(join(scratch, 'out-'));
    const r = await cli(['env', 'cp', 'x:/workspace/kit', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readdirSync(join(out, 'kit')), ['su']);
    const st = statSync(join(out, 'kit', 'su'));
    assert.equal(st.mode & 0o7777, 0o755);
    assert.equal(st.uid, process.getuid!());
    assert.equal(statSync(join(out, 'kit')).mode & 0o7000, 0);
    assert.ok(!existsSync(join(out, 'kit', 'null')));
  });
});

describe('env cp in: the archive lands under the folder asked for, inside the environment', () => {
  test('entries climbing out or absolute, and a symlink the sandbox planted, never reach the host', async () => {
    // The sandbox plants a link to its own root where the upload goes; the upload climbs and is absolute.
    assert.equal((await sh(t, ENV, 'rm -f /tmp/evil/next.tar; mkdir -p /workspace/in && ln -sfn / /workspace/in/root')).exitCode, 0);
    const marker = `berth-copy-in-${process.pid}`;
    const archive = tarOf([{ path: `../../${marker}-up`, body: 'x\n' }, { path: `/${marker}-abs`, body: 'x\n' }, { path: `root${scratch}/${marker}-through`, body: 'x\n' }]);
    const res = await fetch(`${t.client.url}/api/orgs/default/environments/${ENV}/files?path=/workspace/in`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${t.client.token}`, 'content-type': 'application/x-tar' },
      body: new Uint8Array(archive),
    });
    // tar inside refuses the climbing entry; the rest stays in the environment.
    assert.equal(res.status, 400, await res.text());
    for (const host of [`/${marker}-up`, `/${marker}-abs`, join(scratch, `${marker}-through`), `/workspace/${marker}-up`]) assert.ok(!existsSync(host), host);
    const inside = await sh(t, ENV, `ls /${marker}-up /workspace/${marker}-up 2>&1; cat /workspace/in/${marker}-abs ${scratch}/${marker}-through`);
    assert.match(inside.stdout, /No such file/);
    assert.equal(inside.stdout.split('\n').filter((l) => l === 'x').length, 2, inside.stdout);
  });
});

describe('the copy rule itself', () => {
  test('a symlink may climb only with leading ..: a .. after a name could climb out of where that name, a link, points', () => {
    const c = new CopyChecker('r', DEFAULT_COPY_LIMITS);
    c.check({ path: 'r/', type: 'Directory' });
    c.check({ path: 'r/sub/lib', type: 'File' });
    assert.equal(c.check({ path: 'r/s', type: 'SymbolicLink', linkpath: '.' }).kind, 'symlink');
    assert.equal(c.check({ path: 'r/sub/up', type: 'SymbolicLink', linkpath: '../sub/lib' }).kind, 'symlink');
    // r/s is r, so r/s/s/.. is r's parent: out of the copy, though it reads as inside.
    assert.throws(() => c.check({ path: 'r/t', type: 'SymbolicLink', linkpath: 's/s/..' }), /outside r/);
    assert.throws(() => c.check({ path: 'r/sub/x', type: 'SymbolicLink', linkpath: '../../etc' }), /outside r/);
    assert.throws(() => c.check({ path: 'r/s/inner', type: 'File' }), /not a folder/);
    assert.throws(() => c.check({ path: 'r/sub', type: 'SymbolicLink', linkpath: 'lib' }), /appears twice/);
  });
});
