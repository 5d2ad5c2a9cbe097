// The `berth` CLI against a real control plane: what a user types, what they see.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { startTestBerth, type TestBerth } from './helpers.ts';

let t: TestBerth;
let scratch: string;
before(async () => {
  t = await startTestBerth();
  scratch = mkdtempSync(join(tmpdir(), 'berth-cli-'));
});
after(async () => {
  await t?.destroy();
  rmSync(scratch, { recursive: true, force: true });
});

describe('berth env', () => {
  test('create, list, show, stop, start, rm by name and id, with --json', async () => {
    const created = await t.cli(['env', 'create', '--name', 'cli-one', '--memory', '512m', '--json']);
    assert.equal(created.code, 0, created.stderr);
    const env = JSON.parse(created.stdout) as { id: string; name: string; state: string };
    assert.deepEqual({ name: env.name, state: env.state }, { name: 'cli-one', state: 'running' });

    const plain = await t.cli(['env', 'create']);
    assert.equal(plain.code, 0, plain.stderr);
    assert.match(plain.stdout.trim(), /^env_[0-9a-z]{12}$/);

    const list = JSON.parse((await t.cli(['env', 'list', '--json'])).stdout) as { id: string }[];
    assert.ok(list.some((e) => e.id === env.id));
    const table = await t.cli(['env', 'list']);
    assert.match(table.stdout, /^ID\s+NAME\s+STATE/);
    assert.match(table.stdout, /cli-one\s+running/);

    const shown = await t.cli(['env', 'show', 'cli-one']);
    assert.match(shown.stdout, /state\s+running/);
    assert.match(shown.stdout, /512M memory/);
    assert.equal(JSON.parse((await t.cli(['env', 'show', env.id, '--json'])).stdout).name, 'cli-one');

    assert.match((await t.cli(['env', 'stop', 'cli-one'])).stdout, /stopped/);
    assert.match((await t.cli(['env', 'start', env.id])).stdout, /running/);
    assert.match((await t.cli(['env', 'rm', 'cli-one'])).stdout, /deleted/);
    const gone = await t.cli(['env', 'show', 'cli-one']);
    assert.equal(gone.code, 3, 'not found');
    assert.match(gone.stderr, /no environment 'cli-one'/);
  });

  test('exec streams output, passes stdin with -i and exits with the command\'s code', async () => {
    await t.cli(['env', 'create', '--name', 'cli-exec']);
    const r = await t.cli(['env', 'exec', 'cli-exec', '--env', 'X=1', '--cwd', '/etc', '--', 'sh', '-c', 'echo out $X $(pwd); echo err >&2; exit 7']);
    assert.equal(r.code, 7);
    assert.equal(r.stdout, 'out 1 /etc\n');
    assert.equal(r.stderr, 'err\n');

    const piped = await t.cli(['env', 'exec', '-i', 'cli-exec', '--', 'sh', '-c', 'tr a-z A-Z'], { input: 'shout\n' });
    assert.equal(piped.stdout, 'SHOUT\n');
    assert.equal(piped.code, 0);

    const timed = await t.cli(['env', 'exec', '--timeout', '1s', 'cli-exec', '--', 'sleep', '20']);
    assert.equal(timed.code, 124);
    assert.match(timed.stderr, /timeout/);
  });

  test('exec -t gives a real terminal under a terminal', async () => {
    await t.cli(['env', 'create', '--name', 'cli-tty']);
    // script(1) gives the CLI a terminal of its own, as a person's shell would.
    const out = await new Promise<string>((resolve) => {
      const child = spawn('script', ['-qec', `${join(process.cwd(), 'bin', 'berth')} env exec -t cli-tty -- sh -c 'tty; stty size'`, '/dev/null'], {
        env: { ...process.env, BERTH_DATA_DIR: t.dataDir, BERTH_NODE: process.execPath, COLUMNS: '100', LINES: '30' },
      });
      let text = '';
      child.stdout.on('data', (d) => (text += d));
      child.on('close', () => resolve(text));
    });
    assert.match(out, /\/dev\/pts\/\d+/);
  });

  test('cp copies files and folders in and out, and never follows a symlink onto the host', async () => {
    await t.cli(['env', 'create', '--name', 'cli-cp']);
    const src = join(scratch, 'project');
    mkdirSync(join(src, 'sub'), { recursive: true });
    writeFileSync(join(src, 'a.txt'), 'alpha\n');
    writeFileSync(join(src, 'sub', 'b.txt'), 'beta\n');

    assert.equal((await t.cli(['env', 'cp', src, 'cli-cp:/workspace/'])).code, 0);
    assert.equal((await t.cli(['env', 'cp', join(src, 'a.txt'), 'cli-cp:/workspace/renamed.txt'])).code, 0);
    const listing = await t.cli(['env', 'exec', 'cli-cp', '--', 'sh', '-c', 'cat /workspace/project/a.txt /workspace/project/sub/b.txt /workspace/renamed.txt']);
    assert.equal(listing.stdout, 'alpha\nbeta\nalpha\n');

    const out = join(scratch, 'out');
    mkdirSync(out);
    assert.equal((await t.cli(['env', 'cp', 'cli-cp:/workspace/project', out])).code, 0);
    assert.equal(readFileSync(join(out, 'project', 'sub', 'b.txt'), 'utf8'), 'beta\n');
    assert.equal((await t.cli(['env', 'cp', 'cli-cp:/workspace/renamed.txt', join(out, 'single.txt')])).code, 0);
    assert.equal(readFileSync(join(out, 'single.txt'), 'utf8'), 'alpha\n');

    // A symlink inside pointing at a host path never comes out: not as the host file, not as a
    // link to it (the host decides every path; test/security/copy.test.ts has the rest).
    await t.cli(['env', 'exec', 'cli-cp', '--', 'sh', '-c', 'ln -s /etc/shadow /workspace/link && mkdir -p /workspace/trap && ln -s / /workspace/trap/root']);
    const link = await t.cli(['env', 'cp', 'cli-cp:/workspace/link', join(out, 'link')]);
    assert.equal(link.code, 4, 'not allowed');
    assert.match(link.stderr, /refusing archive entry "link": link is a symbolic link/);
    assert.ok(!existsSync(join(out, 'link')));
    // Copying *into* a path that is a symlink inside lands inside the environment, never on the host.
    const marker = join(scratch, 'host-marker');
    writeFileSync(marker, 'host\n');
    assert.equal((await t.cli(['env', 'cp', marker, `cli-cp:/workspace/trap/root${scratch}/`])).code, 0);
    assert.equal(readFileSync(marker, 'utf8'), 'host\n');
    const inside = await t.cli(['env', 'exec', 'cli-cp', '--', 'cat', `${scratch}/host-marker`]);
    assert.equal(inside.stdout, 'host\n');

    const missing = await t.cli(['env', 'cp', 'cli-cp:/no/such/file', out]);
    assert.equal(missing.code, 3, 'not found');
    assert.match(missing.stderr, /no file or folder \/no\/such\/file/);
  });

  test('bad input gets a clear message and a non-zero exit', async () => {
    const cases: [string[], RegExp][] = [
      [['env', 'create', '--image', 'nope'], /image 'nope' not found/],
      [['env', 'create', '--memory', '9t'], /memory must be between/],
      [['env', 'create', '--cpus', 'many'], /--cpus must be a number/],
      [['env', 'show', 'env_zzzzzzzzzzzz'], /no environment/],
      [['env', 'exec', 'nope', '--', 'true'], /no environment 'nope'/],
      [['env', 'frobnicate'], /unknown command/],
    ];
    for (const [args, message] of cases) {
      const r = await t.cli(args);
      assert.notEqual(r.code, 0, args.join(' '));
      assert.match(r.stderr, message, args.join(' '));
      assert.doesNotMatch(r.stderr, /at .*\.ts:\d+/, 'no stack trace');
    }
    const elsewhere = await t.cli(['env', 'list'], { env: { BERTH_URL: 'http://127.0.0.1:1', BERTH_TOKEN: 'x', BERTH_ORG: 'default' } });
    assert.equal(elsewhere.code, 1);
    assert.match(elsewhere.stderr, /cannot reach Berth at http:\/\/127.0.0.1:1/);
    const noServer = await t.cli(['env', 'list'], { env: { BERTH_DATA_DIR: join(scratch, 'empty') } });
    assert.match(noServer.stderr, /start one with `berth up`/);
  });
});

describe('terminal over the API', () => {
  test('a terminal session runs a shell, resizes, and reports the exit code', async () => {
    const created = await t.api('POST', '/api/orgs/default/environments', { name: 'term' });
    assert.equal(created.status, 201);
    const ws = new WebSocket(`${t.client.url.replace('http', 'ws')}/api/orgs/default/environments/term/attach`, {
      headers: { authorization: `Bearer ${t.client.token}` },
    });
    let screen = '';
    const exit = new Promise<number>((resolve) => {
      ws.on('message', (data, binary) => {
        if (binary) screen += (data as Buffer).subarray(1).toString();
        else {
          const m = JSON.parse(data.toString());
          if (m.type === 'exit') resolve(m.exitCode);
        }
      });
    });
    await new Promise((r) => ws.on('open', r));
    ws.send(JSON.stringify({ type: 'start', cmd: ['bash', '--norc', '-i'], tty: true, stdin: true, cols: 100, rows: 30 }));
    const type = (s: string) => ws.send(Buffer.concat([Buffer.of(0), Buffer.from(s)]));
    const waitFor = async (re: RegExp) => {
      for (let i = 0; i < 100 && !re.test(screen); i++) await new Promise((r) => setTimeout(r, 50));
      assert.match(screen, re);
    };
    type('stty size\r');
    await waitFor(/30 100/);
    ws.send(JSON.stringify({ type: 'resize', cols: 132, rows: 50 }));
    await new Promise((r) => setTimeout(r, 200));
    type('stty size\r');
    await waitFor(/50 132/);
    type('exit 5\r');
    assert.equal(await exit, 5);
  });
});
