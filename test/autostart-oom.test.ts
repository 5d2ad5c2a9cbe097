// Environments that start by themselves when exec, a terminal or a copy reaches them while
// stopped (unless the org turns that off), and commands the OOM killer ends that say so:
// in exec results (plain and streamed), the CLI, `env show`, the audit log and a task's
// transcript. Real environments, a real memory limit, the real CLI.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createBareRepo } from './fakes/git-server.ts';
import { startModelServer, type ModelServer, type ScriptRequest } from './fakes/model-server.ts';
import { startTestBerth, waitFor, type TestBerth } from './helpers.ts';

/** Touches 512 MiB: past a 64m limit the OOM killer ends it. */
const HOG = 'python3 -c "a = bytearray(512 * 1024 * 1024)"';
const OOM_64M = 'killed: out of memory (limit 64m)';

let t: TestBerth;
let model: ModelServer;
const seen: { toolResult?: string } = {};
const local = mkdtempSync(join(tmpdir(), 'berth-autostart-'));

before(async () => {
  // The task's model runs the hog once, then finishes.
  model = await startModelServer([
    { toolCalls: [{ name: 'run_command', args: { command: HOG } }] },
    (req: ScriptRequest) => {
      seen.toolResult = req.lastToolResult;
      return { toolCalls: [{ name: 'finish', args: { summary: 'ran it' } }] };
    },
  ]);
  t = await startTestBerth({ modelEnv: { OPENAI_BASE_URL: model.url, OPENAI_API_KEY: 'sk-test', BERTH_MODEL: 'gpt-4o-mini' } });
});
after(async () => {
  await t?.destroy();
  await model?.close();
  rmSync(local, { recursive: true, force: true });
});

async function create(body: Record<string, unknown>) {
  const res = await t.api('POST', '/api/orgs/default/environments', body);
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body as { id: string; name: string };
}

async function state(env: string): Promise<string> {
  return (await t.api('GET', `/api/orgs/default/environments/${env}`)).body.state;
}

async function stop(env: string): Promise<void> {
  assert.equal((await t.api('POST', `/api/orgs/default/environments/${env}/stop`)).status, 200);
  assert.equal(await state(env), 'stopped');
}

/** A request with the test's token that keeps the response's headers. */
function call(path: string, init: RequestInit = {}, token = t.client.token): Promise<Response> {
  return fetch(`${t.client.url}${path}`, { ...init, headers: { authorization: `Bearer ${token}`, ...(init.headers as Record<string, string>) } });
}

const execJson = (env: string, cmd: string[], token?: string) =>
  call(`/api/orgs/default/environments/${env}/exec`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ cmd }) }, token);

const execStream = (env: string, cmd: string[]) =>
  call(`/api/orgs/default/environments/${env}/exec`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'text/event-stream' }, body: JSON.stringify({ cmd }) });

/** The `exit` event of a streamed exec. */
function exitEvent(sse: string): Record<string, unknown> {
  const m = /event: exit\ndata: (.*)\n/.exec(sse);
  assert.ok(m, `no exit event in ${sse}`);
  return JSON.parse(m[1]!);
}

async function autoStarts(env: string): Promise<{ details: Record<string, unknown>; actor: string }[]> {
  const res = await t.api('GET', `/api/orgs/default/audit?action=environment.start&limit=100`);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return (res.body.items as { target: string; details: Record<string, unknown>; actor: string }[]).filter((e) => e.target === env && e.details.auto === true);
}

describe('a stopped environment starts when reached', () => {
  test('exec (JSON and streamed), a terminal and copies in and out start it, say so and put it on record', async () => {
    const env = await create({ name: 'demo' });

    // Running: nothing to say.
    let res = await execJson(env.id, ['echo', 'up']);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-berth-started'), null);

    await stop(env.id);
    res = await execJson(env.id, ['sh', '-c', 'echo hello; cat /proc/1/comm']);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-berth-started'), 'demo');
    assert.equal(((await res.json()) as { stdout: string }).stdout.split('\n')[0], 'hello');
    assert.equal(await state(env.id), 'running');

    await stop(env.id);
    res = await execStream(env.id, ['echo', 'streamed']);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-berth-started'), 'demo');
    const sse = await res.text();
    assert.match(sse, /event: stdout\ndata: \{"data":"streamed\\n"\}/);
    assert.equal(exitEvent(sse).exitCode, 0);

    // berth env exec goes over the attach WebSocket: a `started` frame, said on stderr.
    await stop(env.id);
    let r = await t.cli(['env', 'exec', 'demo', '--', 'echo', 'from-cli']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'from-cli\n');
    assert.match(r.stderr, /^berth: environment demo was stopped; starting it$/m);
    // Running now: said only when it was stopped.
    r = await t.cli(['env', 'exec', 'demo', '--', 'true']);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /starting it/);

    await stop(env.id);
    writeFileSync(join(local, 'in.txt'), 'copied in\n');
    r = await t.cli(['env', 'cp', join(local, 'in.txt'), 'demo:/workspace/']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /berth: environment demo was stopped; starting it/);

    await stop(env.id);
    r = await t.cli(['env', 'cp', 'demo:/workspace/in.txt', join(local, 'out.txt')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /berth: environment demo was stopped; starting it/);
    assert.equal(readFileSync(join(local, 'out.txt'), 'utf8'), 'copied in\n');

    // The files route itself says so, for any client.
    await stop(env.id);
    res = await call(`/api/orgs/default/environments/${env.id}/files?path=/workspace/in.txt`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-berth-started'), 'demo');
    await res.arrayBuffer();

    // Each start is on record as the caller's, with how the environment was reached (a copy
    // in first asks, with an exec, whether its destination is a folder: that exec starts it).
    const starts = await autoStarts(env.id);
    assert.deepEqual(starts.map((s) => s.details.via).sort(), ['copy', 'copy', 'exec', 'exec', 'exec', 'terminal']);
    assert.ok(starts.every((s) => s.actor.startsWith('user:')));
  });

  test('with auto-start off in the org: 409 with what to do, and it stays stopped', async () => {
    const env = await create({ name: 'sleepy' });
    await stop(env.id);

    // Owners and admins set it; a member may read it but not change it.
    const member = (await t.api('POST', '/api/orgs/default/tokens', { role: 'member' })).body.token as string;
    const asMember = await call('/api/orgs/default/settings', { method: 'PATCH', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ autoStart: false }) }, member);
    assert.equal(asMember.status, 403);
    assert.deepEqual(await (await call('/api/orgs/default/settings', {}, member)).json(), { autoStart: true });
    // Bad input changes nothing.
    assert.equal((await t.api('PATCH', '/api/orgs/default/settings', { autoStart: 'no' })).status, 400);
    let r = await t.cli(['org', 'set', '--auto-start', 'maybe']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--auto-start is on or off, got 'maybe'/);
    assert.deepEqual((await t.api('GET', '/api/orgs/default/settings')).body, { autoStart: true });

    r = await t.cli(['org', 'set', '--auto-start', 'off']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /auto-start\s+off/);
    r = await t.cli(['org', 'show', '--json']);
    assert.deepEqual(JSON.parse(r.stdout), { autoStart: false });
    const changed = await t.api('GET', '/api/orgs/default/audit?action=org.settings&limit=10');
    assert.equal(changed.body.items[0].details.autoStart, false);

    try {
      const before = (await autoStarts(env.id)).length;
      const res = await execJson(env.id, ['true'], member);
      assert.equal(res.status, 409);
      const body = (await res.json()) as { error: { message: string } };
      assert.match(body.error.message, /environment 'sleepy' is stopped, and this org does not start environments by themselves \(auto-start is off\): start it with `berth env start sleepy`/);
      assert.equal((await execStream(env.id, ['true'])).status, 409);
      assert.equal((await call(`/api/orgs/default/environments/${env.id}/files?path=/workspace`)).status, 409);

      r = await t.cli(['env', 'exec', 'sleepy', '--', 'true']);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /auto-start is off\): start it with `berth env start sleepy`/);
      assert.doesNotMatch(r.stderr, /starting it/);
      writeFileSync(join(local, 'x.txt'), 'x\n');
      r = await t.cli(['env', 'cp', join(local, 'x.txt'), 'sleepy:/workspace/']);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /auto-start is off/);

      assert.equal(await state(env.id), 'stopped');
      assert.equal((await autoStarts(env.id)).length, before);
      // Starting it by hand still works.
      r = await t.cli(['env', 'start', 'sleepy']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal((await execJson(env.id, ['true'])).status, 200);
    } finally {
      r = await t.cli(['org', 'set', '--auto-start', 'on']);
      assert.equal(r.code, 0, r.stderr);
    }
  });
});

describe('an out-of-memory kill says so', () => {
  test('in exec results, the stream, the CLI, env show and the audit log', async () => {
    const env = await create({ name: 'tight', memory: '64m' });

    // Within the limit: nothing said.
    let res = await execJson(env.id, ['python3', '-c', 'a = bytearray(8 * 1024 * 1024)']);
    let body = (await res.json()) as Record<string, unknown>;
    assert.equal(body.exitCode, 0);
    assert.equal(body.oomKilled, false);
    assert.equal(body.message, null);
    let shown = (await t.api('GET', `/api/orgs/default/environments/${env.id}`)).body;
    assert.equal(shown.usage.oomKills, 0);
    assert.equal(shown.lastOomKillAt, null);

    res = await execJson(env.id, ['sh', '-c', HOG]);
    body = (await res.json()) as Record<string, unknown>;
    assert.equal(body.exitCode, 137, JSON.stringify(body));
    assert.equal(body.oomKilled, true);
    assert.equal(body.message, OOM_64M);

    const sse = await (await execStream(env.id, ['sh', '-c', HOG])).text();
    assert.deepEqual({ ...exitEvent(sse), durationMs: 0 }, { exitCode: 137, timedOut: false, oomKilled: true, message: OOM_64M, durationMs: 0 });

    // A process of the command's killed while the command itself ends otherwise: said of the environment.
    body = (await (await execJson(env.id, ['sh', '-c', `${HOG}; exit 3`])).json()) as Record<string, unknown>;
    assert.equal(body.exitCode, 3);
    assert.equal(body.oomKilled, false);
    assert.equal(body.message, 'a process in the environment was killed: out of memory (limit 64m)');

    const r = await t.cli(['env', 'exec', 'tight', '--', 'sh', '-c', HOG]);
    assert.equal(r.code, 137);
    assert.match(r.stderr, /^berth: killed: out of memory \(limit 64m\)$/m);

    shown = (await t.api('GET', `/api/orgs/default/environments/${env.id}`)).body;
    assert.equal(shown.usage.oomKills, 4);
    assert.ok(Date.now() - Date.parse(shown.lastOomKillAt) < 600_000, shown.lastOomKillAt);
    const text = await t.cli(['env', 'show', 'tight']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^out of memory\s+4 processes killed since it started \(limit 64M\); last \S+ \(\S+ ago\)$/m);

    const runs = await t.api('GET', '/api/orgs/default/audit?action=command.run&limit=100');
    const killed = (runs.body.items as { target: string; details: Record<string, unknown> }[]).filter((e) => e.target === env.id && e.details.oomKilled === true);
    assert.equal(killed.length, 3);
    assert.ok(killed.every((e) => e.details.message === OOM_64M));

    // A new start is a new count; the last time seen stays.
    await stop(env.id);
    assert.equal((await t.api('POST', `/api/orgs/default/environments/${env.id}/start`)).status, 200);
    shown = (await t.api('GET', `/api/orgs/default/environments/${env.id}`)).body;
    assert.equal(shown.usage.oomKills, 0);
    assert.ok(shown.lastOomKillAt);
  });

  test("in a task's transcript: the agent's command and the check", async () => {
    const repo = await createBareRepo({ root: local, name: 'hog.git', files: { 'README.md': '# hog\n', 'berth.yaml': 'limits:\n  memory: 64m\n' } });
    const created = await t.api('POST', '/api/orgs/default/tasks', { goal: 'Run the hog', repo: repo.path, check: HOG, budget: { maxCheckRetries: 0 } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const id = created.body.id as string;
    const ended = await waitFor(`task ${id} to end`, async () => {
      const task = (await t.api('GET', `/api/orgs/default/tasks/${id}`)).body;
      return ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(task.state) ? task : null;
    }, 300_000);
    assert.equal(ended.state, 'failed', JSON.stringify(ended));

    // What the model read: the tool's result ends with it.
    assert.match(seen.toolResult ?? '', /\[killed: out of memory \(limit 64m\): exit code 137, [\d.]+ s\]$/);

    const events = (await t.api('GET', `/api/orgs/default/tasks/${id}/events`)).body.items as { data: Record<string, any> }[];
    const tool = events.find((e) => e.data.type === 'tool' && e.data.tool === 'run_command');
    assert.ok(tool, 'the run_command call is in the transcript');
    assert.match(tool.data.output, /killed: out of memory \(limit 64m\): exit code 137/);
    const check = events.find((e) => e.data.type === 'command' && e.data.phase === 'check');
    assert.ok(check, 'the check command is in the transcript');
    assert.equal(check.data.exitCode, 137);
    assert.equal(check.data.message, OOM_64M);
    assert.match(check.data.output, /\[berth: killed: out of memory \(limit 64m\)\]\n$/);
    const verdict = events.find((e) => e.data.type === 'check');
    assert.equal(verdict?.data.summary, `exited with 137 (${OOM_64M})`);
  });
});
