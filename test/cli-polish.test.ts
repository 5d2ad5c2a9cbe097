// The `berth` CLI as a whole (issue #12): piping into head, exit statuses, errors in the
// command's own flags, --json and a description everywhere, colour only on a terminal, shell
// completion, and what loads at start-up. No sandbox: tasks here are rows written as they end.
// sandbox: none (test/fakes/fake-runner.ts; scripts/test.ts runs these more at once)
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Command } from 'commander';
import { loadAllCommands } from '../src/cli/main.ts';
import { REPO, startTestBerth, type TestBerth } from './helpers.ts';

let t: TestBerth;
let orgId: string;
let seq = 0;
const BERTH = join(REPO, 'bin', 'berth');
const ESC = /\x1b\[/;

/** A task row written straight to the table (no worker runs: taskConcurrency 0), with `events` log lines. */
async function insertTask(o: { state?: 'queued' | 'succeeded'; summary?: string; diff?: string; events?: number } = {}) {
  const id = `task_pol${String(++seq).padStart(9, '0')}`;
  const db = t.berth.database.db;
  await db
    .insertInto('tasks')
    .values({
      id,
      org_id: orgId,
      project_id: null,
      repo_url: 'http://127.0.0.1:9/acme/shop.git',
      base_branch: 'main',
      goal: `goal of ${id}`,
      agent: 'command',
      command: 'true',
      model: null,
      budget: JSON.stringify({ maxSteps: 1, maxTokens: null, maxCostUsd: null, timeoutMs: 60_000, maxCheckRetries: 0 }),
      check_command: null,
      state: o.state ?? 'succeeded',
      trigger: 'api',
      created_by: 'token:someone',
      summary: o.summary ?? null,
      diff: o.diff ?? null,
    } as never)
    .execute();
  const rows = Array.from({ length: o.events ?? 0 }, (_, i) => ({
    task_id: id,
    seq: i + 1,
    data: JSON.stringify({ type: 'log', level: 'info', message: `line ${i + 1} ${'x'.repeat(100)}` }),
  }));
  for (let i = 0; i < rows.length; i += 500) await db.insertInto('task_events').values(rows.slice(i, i + 500) as never).execute();
  return id;
}

/** `berth ARGS | head -1` in bash: the CLI's own exit status (PIPESTATUS), its stderr, what head printed. */
function pipedToHead(args: string[]): Promise<{ status: number; stderr: string; first: string }> {
  return new Promise((resolve) => {
    const script = `"$0" "$@" 2>"$BERTH_STDERR" | head -1; echo "status=\${PIPESTATUS[0]}"; cat "$BERTH_STDERR" >&2`;
    const stderrFile = join(t.dataDir, `stderr-${++seq}`);
    const child = spawn('bash', ['-c', script, BERTH, ...args], {
      env: { ...process.env, FORCE_COLOR: undefined, BERTH_NODE: process.execPath, BERTH_DATA_DIR: t.dataDir, BERTH_STDERR: stderrFile },
    });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('close', () => {
      const m = /status=(\d+)\n$/.exec(out);
      resolve({ status: Number(m?.[1] ?? -1), stderr: err, first: out.slice(0, m?.index ?? out.length) });
    });
  });
}

/** Runs a program without blocking this process, which serves the API the CLI talks to. */
function run(cmd: string, args: string[], env: Record<string, string | undefined>): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: { ...process.env, FORCE_COLOR: undefined, BERTH_NODE: process.execPath, BERTH_DATA_DIR: t.dataDir, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdin.end();
    child.on('close', (status) => resolve({ status: status ?? -1, stdout, stderr }));
  });
}

before(async () => {
  t = await startTestBerth({ fake: true, taskConcurrency: 0 });
  orgId = (await t.api('GET', '/api/orgs')).body.items.find((o: { name: string }) => o.name === 'default').id;
});
after(async () => {
  await t?.destroy();
});

describe('piping into head', () => {
  test('`task logs ID | head -1` and `task show ID | head -1` end quietly with status 0', async () => {
    // More than a pipe holds (64 KiB), so the CLI is still writing when head goes away.
    const id = await insertTask({ events: 3000, summary: `${'a long summary line\n'.repeat(20_000)}` });
    for (const args of [['task', 'logs', id], ['task', 'show', id], ['task', 'logs', id, '--json']]) {
      const r = await pipedToHead(args);
      assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stderr, '', args.join(' '));
      assert.doesNotMatch(r.stderr, /EPIPE|at .*\.ts:\d+/);
      assert.ok(r.first.split('\n').filter(Boolean).length === 1, r.first.slice(0, 200));
    }
  });
});

describe('exit statuses', () => {
  test('2 for usage, 3 for not found, 4 for a bad token, 1 for the rest', async () => {
    const cases: [string[], number, Record<string, string>?][] = [
      [['frobnicate'], 2],
      [['env', 'frobnicate'], 2],
      [['env', 'create', '--cpus', 'many'], 2],
      [['env', 'create', '--memory', 'lots'], 2],
      [['completion', 'tcsh'], 2],
      [['env', 'show', 'env_zzzzzzzzzzzz'], 3],
      [['env', 'show', 'no-such-name'], 3],
      [['task', 'show', 'task_zzzzzzzzzzzz'], 3],
      [['env', 'list'], 4, { BERTH_URL: t.client.url, BERTH_TOKEN: 'brt_not-a-token', BERTH_ORG: 'default' }],
      [['env', 'list'], 1, { BERTH_URL: 'http://127.0.0.1:1', BERTH_TOKEN: 'x', BERTH_ORG: 'default' }],
      [['--version'], 0],
      [['--help'], 0],
    ];
    for (const [args, code, env] of cases) {
      const r = await t.cli(args, { env });
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /at .*\.ts:\d+/, 'no stack trace');
    }
  });

  test('berth --help lists the exit statuses', async () => {
    const help = await t.cli(['--help']);
    assert.match(help.stdout, /Exit status:\n\s+0\s+done\n\s+1\s+failed.*\n\s+2\s+usage.*\n\s+3\s+not found.*\n\s+4\s+not signed in, or not allowed/);
  });
});

describe('errors speak in flags', () => {
  test("the API's field becomes the command's flag or argument, never body., params. or querystring.", async () => {
    const cases: [string[], RegExp][] = [
      [['env', 'create', '--memory', 'lots'], /^berth: --memory: expected a size such as 512m/],
      [['env', 'create', '--memory', '9t'], /^berth: --memory must be between 64M and 256G, got 9T/],
      [['env', 'create', '--idle-timeout', 'forever'], /^berth: --idle-timeout: expected a duration/],
      [['task', 'show', 'nope'], /^berth: <id> 'nope': a task id such as task_/],
      [['task', 'list', '--state', 'bogus'], /^berth: --state: invalid option: expected one of "queued"/],
      [['policy', 'set', '--allow-domain', 'http://example.com'], /^berth: --allow-domain: 'http:\/\/example.com' is not an allowed domain/],
    ];
    for (const [args, message] of cases) {
      const r = await t.cli(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr.split('\n').find((l) => l.startsWith('berth:')) ?? '', message, args.join(' '));
      assert.doesNotMatch(r.stderr, /\b(body|params|querystring)\./, args.join(' '));
    }
  });

  test('`secret set` with empty standard input says what to do, and stores nothing', async () => {
    for (const input of ['', '\n']) {
      const r = await t.cli(['secret', 'set', 'EMPTY_ONE'], { input });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /pipe the value on standard input .* or use --from-file/);
      assert.doesNotMatch(r.stderr, /body\.value|Too small/);
    }
    const list = JSON.parse((await t.cli(['secret', 'list', '--json'])).stdout) as { name: string }[];
    assert.ok(!list.some((s) => s.name === 'EMPTY_ONE'));
  });
});

describe('--json', () => {
  test('task cancel, retry, diff; secret set and rm; token revoke print JSON with --json', async () => {
    const queued = await insertTask({ state: 'queued' });
    const cancelled = await t.cli(['task', 'cancel', queued, '--json']);
    assert.equal(cancelled.code, 0, cancelled.stderr);
    assert.deepEqual((({ id, state }) => ({ id, state }))(JSON.parse(cancelled.stdout)), { id: queued, state: 'cancelled' });

    const retried = await t.cli(['task', 'retry', queued, '--detach', '--json']);
    assert.equal(retried.code, 0, retried.stderr);
    const fresh = JSON.parse(retried.stdout) as { id: string; state: string; goal: string };
    assert.notEqual(fresh.id, queued);
    assert.equal(fresh.goal, `goal of ${queued}`);

    const diff = '--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\n';
    const withDiff = await insertTask({ diff });
    assert.deepEqual(JSON.parse((await t.cli(['task', 'diff', withDiff, '--json'])).stdout), { diff });
    assert.deepEqual(JSON.parse((await t.cli(['task', 'diff', queued, '--json'])).stdout), { diff: null });

    const set = await t.cli(['secret', 'set', 'JSON_ONE', '--json'], { input: 'v4lue-not-shown' });
    assert.equal(set.code, 0, set.stderr);
    assert.equal(JSON.parse(set.stdout).name, 'JSON_ONE');
    assert.doesNotMatch(set.stdout, /v4lue-not-shown/);
    assert.deepEqual(JSON.parse((await t.cli(['secret', 'rm', 'JSON_ONE', '--json'])).stdout), { name: 'JSON_ONE', project: null, removed: true });

    const token = JSON.parse((await t.cli(['token', 'create', '--role', 'viewer', '--json'])).stdout) as { id: string };
    const revoked = await t.cli(['token', 'revoke', token.id, '--json']);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.deepEqual(JSON.parse(revoked.stdout), { id: token.id, revoked: true });
  });
});

/** Every command below the root, with its path. */
function leaves(program: Command): { path: string; command: Command }[] {
  const out: { path: string; command: Command }[] = [];
  const walk = (c: Command, path: string[]) => {
    for (const sub of c.commands) {
      out.push({ path: [...path, sub.name()].join(' '), command: sub });
      walk(sub, [...path, sub.name()]);
    }
  };
  walk(program, []);
  return out;
}

// What these print is the thing itself (a server's log, a command's output, a file, a script), or
// nothing on standard output (logout says what it did on stderr).
const NO_JSON = new Set(['up', 'runner join', 'completion', 'env exec', 'env cp', 'audit checkpoint', 'audit export', 'logout']);

describe('the command tree', () => {
  test('every command and subcommand has a one-line description', async () => {
    const missing = leaves(await loadAllCommands()).filter(({ command }) => !command.description().trim() || command.description().includes('\n'));
    assert.deepEqual(missing.map((m) => m.path), []);
  });

  test('every command that prints something takes --json', async () => {
    const without = leaves(await loadAllCommands())
      .filter(({ command }) => command.commands.length === 0)
      .filter(({ path, command }) => !NO_JSON.has(path) && !command.options.some((o) => o.long === '--json'));
    assert.deepEqual(without.map((m) => m.path), []);
  });
});

describe('colour', () => {
  test('state words and diffs are coloured with FORCE_COLOR, plain when piped or with NO_COLOR', async () => {
    const id = await insertTask({ diff: '--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\n' });
    const forced = await t.cli(['task', 'list'], { env: { FORCE_COLOR: '1' } });
    assert.match(forced.stdout, /\x1b\[32msucceeded\x1b\[39m/);
    // The columns line up on what shows, not on the escape codes.
    const header = forced.stdout.split('\n')[0]!;
    const row = forced.stdout.split('\n').find((l) => l.includes(id))!.replace(/\x1b\[\d+m/g, '');
    assert.equal(row.indexOf('-'), header.indexOf('STEP'));
    const diff = await t.cli(['task', 'diff', id], { env: { FORCE_COLOR: '1' } });
    assert.match(diff.stdout, /\x1b\[32m\+new\x1b\[39m/);
    assert.match(diff.stdout, /\x1b\[31m-old\x1b\[39m/);

    const piped = await t.cli(['task', 'list']);
    assert.doesNotMatch(piped.stdout + piped.stderr, ESC);
    const plainDiff = await t.cli(['task', 'diff', id]);
    assert.equal(plainDiff.stdout, '--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\n');
    const error = await t.cli(['env', 'show', 'nope'], { env: { FORCE_COLOR: '1' } });
    assert.match(error.stderr, /^\x1b\[31mberth:\x1b\[39m no environment/);
  });

  test('on a terminal: colour, unless NO_COLOR', { skip: spawnSync('script', ['--version']).status !== 0 && 'util-linux script is not installed' }, async () => {
    await insertTask();
    // script(1) gives the CLI a real terminal for standard output.
    // As on a person's terminal: a TERM that has colours, and no CI variable (node turns
    // colour off under an unknown CI, as CI runs this suite).
    const onTty = (env: Record<string, string | undefined>) => run('script', ['-qec', `${BERTH} task list`, '/dev/null'], { NO_COLOR: undefined, CI: undefined, TERM: 'xterm-256color', ...env });
    const coloured = await onTty({});
    assert.equal(coloured.status, 0, coloured.stderr);
    assert.match(coloured.stdout, /\x1b\[32msucceeded/);
    const plain = await onTty({ NO_COLOR: '1' });
    assert.equal(plain.status, 0, plain.stderr);
    assert.match(plain.stdout, /succeeded/);
    assert.doesNotMatch(plain.stdout, ESC);
  });
});

describe('shell completion', () => {
  test('bash: sourced, it completes commands, subcommands, aliases and flags from the command tree', async () => {
    const complete = (words: string[]) => {
      // As a user would: source <(berth completion bash), then what bash does on Tab.
      const r = spawnSync('bash', ['-c', `source <("${BERTH}" completion bash); COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _berth; printf '%s\\n' "\${COMPREPLY[@]}"`], {
        env: { ...process.env, BERTH_NODE: process.execPath },
        encoding: 'utf8',
      });
      assert.equal(r.status, 0, r.stderr);
      return r.stdout.split('\n').filter(Boolean);
    };
    assert.deepEqual(complete(['berth', 'en']), ['env']);
    assert.deepEqual(complete(['berth', 'env', 'cr']), ['create']);
    assert.deepEqual(complete(['berth', '--org', 'default', 'env', 'create', '--me']), ['--memory']);
    assert.deepEqual(complete(['berth', 'env', 'create', '--memory', '2g', '--id']), ['--idle-timeout']);
    assert.ok(complete(['berth', 'env', 'ls', '--']).includes('--json'));
    assert.ok(complete(['berth', 'task', '']).includes('cancel'));
    assert.ok(complete(['berth', '']).includes('completion'));
  });

  test('zsh and fish scripts name the same commands and flags, with their descriptions', async () => {
    const zsh = await t.cli(['completion', 'zsh']);
    assert.equal(zsh.code, 0);
    assert.match(zsh.stdout, /^#compdef berth\n/);
    assert.match(zsh.stdout, /'env'\) printf '%s\\n' 'create:create and start an environment/);
    const fish = await t.cli(['completion', 'fish']);
    assert.equal(fish.code, 0);
    assert.match(fish.stdout, /complete -c berth -n '__berth_path_is '\\''env'\\''' -a 'create' -d 'create and start an environment/);
    assert.match(fish.stdout, /-l memory -r -F -d 'memory limit/);
    for (const [shell, r] of [['zsh', zsh], ['fish', fish]] as const) {
      if (spawnSync(shell, ['--version']).status !== 0) continue;
      const check = spawnSync(shell, ['-n'], { input: r.stdout, encoding: 'utf8' });
      assert.equal(check.status, 0, `${shell} -n: ${check.stderr}`);
    }
  });
});

describe('start-up', () => {
  /** The files `berth ARGS` loads, through a loader hook that lists them. */
  async function loaded(args: string[]): Promise<string[]> {
    const hook = `data:text/javascript,${encodeURIComponent(`
      import { registerHooks } from 'node:module';
      const seen = [];
      registerHooks({ load(url, ctx, next) { seen.push(url); return next(url, ctx); } });
      process.on('exit', () => process.stderr.write('LOADED ' + JSON.stringify([...seen, ...process.moduleLoadList.map((m) => 'node:' + m)]) + '\\n'));
    `)}`;
    const r = await run(process.execPath, ['--disable-warning=ExperimentalWarning', '--import', hook, join(REPO, 'src/cli/main.ts'), ...args], {});
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(/^LOADED (.*)$/m.exec(r.stderr)![1]!) as string[];
  }

  test('--version loads no command module; `env list` loads its own and none of zod, tar, ws, undici', async () => {
    const version = await loaded(['--version']);
    assert.deepEqual(version.filter((u) => /\/src\/cli\/commands\//.test(u)), []);
    const list = await loaded(['env', 'list']);
    assert.deepEqual(list.filter((u) => /\/src\/cli\/commands\//.test(u)).map((u) => u.replace(/^.*\/commands\//, '')), ['env.ts']);
    assert.deepEqual(list.filter((u) => /node_modules\/(zod|tar|ws|eventsource-parser)\//.test(u)), []);
    // fetch's undici is most of a request's start-up: one JSON request goes through node:http.
    assert.deepEqual(list.filter((u) => /undici/.test(u)), []);
  });
});
