// Agent tasks end to end: a real berth, real environments, real git remotes (git
// http-backend, a GitHub-shaped server) and a scripted model spoken to only through the
// OpenAI and Anthropic protocols.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createBareRepo, refSha, runGit, startGitServer, type GitServer } from './fakes/git-server.ts';
import { startFakeGitHub } from './fakes/github.ts';
import { startFakeGitLab } from './fakes/gitlab.ts';
import { startModelServer, type ModelServer, type ScriptRequest, type Step } from './fakes/model-server.ts';
import { REPO, startTestBerth, waitFor, type TestBerth } from './helpers.ts';

const MODEL_KEY = 'sk-model-key-never-inside-0123456789';
const FORGE_TOKEN = 'forge-token-never-inside-9876543210';

const FIXTURE = {
  'package.json': '{ "name": "fixture", "type": "module", "scripts": { "test": "node --test" } }\n',
  'sum.js': 'export function sum(a, b) {\n  return a - b;\n}\n',
  'sum.test.js': "import { test } from 'node:test';\nimport assert from 'node:assert/strict';\nimport { sum } from './sum.js';\n\ntest('sum adds', () => assert.equal(sum(2, 3), 5));\n",
};
const BERTH_YAML = 'check: node --test\nenv:\n  FIXTURE_MODE: from-berth-yaml\nsetup:\n  - echo "$FIXTURE_MODE" > /tmp/setup-ran\n';

/** The conversation of a model that reads the failure, fixes sum.js and finishes. */
function fixingScript(seen: { failure?: string; greenRun?: string }): Step[] {
  return [
    { text: 'Let me run the tests first.', toolCalls: [{ name: 'run_command', args: { command: 'node --test' } }] },
    (req: ScriptRequest) => {
      seen.failure = req.lastToolResult;
      return { toolCalls: [{ name: 'read_file', args: { path: 'sum.js' } }] };
    },
    { toolCalls: [{ name: 'edit_file', args: { path: 'sum.js', old_text: 'return a - b;', new_text: 'return a + b;' } }] },
    { toolCalls: [{ name: 'run_command', args: { command: 'node --test' } }] },
    (req: ScriptRequest) => {
      seen.greenRun = req.lastToolResult;
      return { toolCalls: [{ name: 'finish', args: { summary: 'sum() subtracted its arguments; it now adds them, and the test passes.' } }] };
    },
  ];
}

interface Events {
  items: { seq: number; data: Record<string, any> }[];
}

async function task(t: TestBerth, id: string) {
  return (await t.api('GET', `/api/orgs/default/tasks/${id}`)).body;
}

async function ended(t: TestBerth, id: string, timeoutMs = 120_000) {
  return waitFor(`task ${id} to end`, async () => {
    const body = await task(t, id);
    return ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(body.state) ? body : null;
  }, timeoutMs);
}

describe('plain git over http-backend, the OpenAI protocol and the CLI', () => {
  let model: ModelServer;
  let git: GitServer;
  let t: TestBerth;
  let bare: string;
  const seen: { failure?: string; greenRun?: string } = {};

  before(async () => {
    model = await startModelServer(fixingScript(seen), { apiKey: MODEL_KEY });
    git = await startGitServer({ authorize: `Basic ${Buffer.from(`git:${FORGE_TOKEN}`).toString('base64')}` });
    bare = (await createBareRepo({ root: git.root, name: 'acme/fixture.git', files: { ...FIXTURE, 'berth.yaml': BERTH_YAML } })).path;
    t = await startTestBerth({ modelEnv: { OPENAI_BASE_URL: model.url, OPENAI_API_KEY: MODEL_KEY, BERTH_MODEL: 'gpt-4o-mini' } });
  });
  after(async () => {
    await t?.destroy();
    await model?.close();
    await git?.close();
  });

  test('berth run follows the agent from the goal to a branch, and approve merges it', async () => {
    let r = await t.cli(['secret', 'set', 'GIT_TOKEN'], { input: FORGE_TOKEN });
    assert.equal(r.code, 0, r.stderr);
    r = await t.cli(['project', 'create', 'fixture', '--repo', `${git.url}/acme/fixture.git`, '--forge', 'git', '--token-secret', 'GIT_TOKEN']);
    assert.equal(r.code, 0, r.stderr);

    r = await t.cli(['run', 'Fix the sum function so the tests pass', '--project', 'fixture']);
    assert.equal(r.code, 0, `stdout: ${r.stdout}\nstderr: ${r.stderr}`);
    for (const line of ['cloning', 'starting the environment', 'running 1 setup command', 'the built-in agent is working', 'edit_file sum.js', 'running `node --test`', 'checks passed', 'pushing berth/task_', 'succeeded']) {
      assert.ok(r.stderr.includes(line), `the CLI showed '${line}':\n${r.stderr}`);
    }
    const id = /task (task_[0-9a-z]{12})/.exec(r.stderr)![1]!;
    const done = await task(t, id);
    assert.equal(done.state, 'succeeded', done.stateReason);
    assert.equal(done.checksPassed, true);
    assert.equal(done.changeRequest.kind, 'berth');
    assert.match(done.branch, new RegExp(`^berth/${id}-fix-the-sum-function-so-the-tests-pass$`));
    assert.ok(done.usage.inputTokens > 0 && done.usage.outputTokens > 0);
    assert.deepEqual(model.failures, []);

    // The model saw the real failure, then the green run, through the protocol alone.
    assert.match(seen.failure ?? '', /fail|not equal|AssertionError/i);
    assert.match(seen.greenRun ?? '', /pass 1/);
    assert.ok(model.requests.every((q) => q.apiKey === MODEL_KEY));

    // The branch is on the remote with the fix and a message that says what and why; main is untouched.
    const branchSha = await refSha(bare, `refs/heads/${done.branch}`);
    assert.ok(branchSha);
    assert.match(await runGit(['show', `${done.branch}:sum.js`], { cwd: bare }), /return a \+ b;/);
    assert.match(await runGit(['show', 'main:sum.js'], { cwd: bare }), /return a - b;/);
    const message = await runGit(['log', '-1', '--format=%B', done.branch], { cwd: bare });
    assert.match(message, /^Fix the sum function so the tests pass\n\nsum\(\) subtracted its arguments/);
    assert.match(message, new RegExp(`Task: http://127\\.0\\.0\\.1:\\d+/tasks/${id}`));
    assert.deepEqual((await runGit(['diff', '--name-only', 'main', done.branch], { cwd: bare })).trim().split('\n'), ['sum.js']);
    assert.ok(git.requests.some((q) => q.service === 'git-receive-pack' && q.authorization === 'accepted'));
    assert.ok(!git.requests.some((q) => q.authorization === 'refused'));

    // The transcript: every model call and tool call, the setup and the check.
    const { items } = (await t.api('GET', `/api/orgs/default/tasks/${id}/events`)).body as Events;
    assert.deepEqual(items.map((e) => e.seq), items.map((_, i) => i + 1));
    assert.equal(items.filter((e) => e.data.type === 'model').length, 5);
    assert.deepEqual(items.filter((e) => e.data.type === 'tool').map((e) => e.data.tool), ['run_command', 'read_file', 'edit_file', 'run_command', 'finish']);
    assert.ok(items.some((e) => e.data.type === 'command' && e.data.phase === 'setup' && e.data.exitCode === 0));
    assert.ok(items.some((e) => e.data.type === 'check' && e.data.passed));
    const diff = (await t.cli(['task', 'diff', id])).stdout;
    assert.match(diff, /-  return a - b;\n\+  return a \+ b;/);

    // Neither the forge token nor the model key was ever inside the environment.
    await t.api('POST', `/api/orgs/default/environments/${done.environmentId}/start`);
    const probe = await t.api('POST', `/api/orgs/default/environments/${done.environmentId}/exec`, {
      cmd: ['sh', '-c', 'cat /tmp/setup-ran; cat /workspace/fixture/.git/config; env; cat /proc/*/environ 2>/dev/null | tr "\\0" "\\n"; grep -rl -e "$1" -e "$2" / --exclude-dir=proc --exclude-dir=sys 2>/dev/null | grep -v "^/proc" | head', 'sh', FORGE_TOKEN.slice(0, 20), MODEL_KEY.slice(0, 20)],
    });
    const out: string = probe.body.stdout;
    assert.match(out, /from-berth-yaml/, 'setup ran with the berth.yaml environment');
    assert.match(out, /url = http:\/\/127\.0\.0\.1:\d+\/acme\/fixture\.git/);
    assert.ok(!out.includes(FORGE_TOKEN) && !out.includes(MODEL_KEY), out);
    assert.ok(!out.includes(Buffer.from(`git:${FORGE_TOKEN}`).toString('base64')));

    // Plain git keeps the change request in Berth: approve merges it into main.
    r = await t.cli(['task', 'approve', id]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(await runGit(['show', 'main:sum.js'], { cwd: bare }), /return a \+ b;/);
    r = await t.cli(['task', 'approve', id]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /already approved/);

    // Every file the agent changed is on record in the audit log.
    const audit = (await t.api('GET', '/api/orgs/default/audit?action=task.files_changed')).body;
    const entry = audit.items.find((e: any) => e.target === id);
    assert.deepEqual(entry?.details.files, ['sum.js']);
  });
});

describe('a GitHub-shaped forge, the Anthropic protocol and a devcontainer', () => {
  test('the pull request appears with the right branch, diff and body', async () => {
    const seen = {};
    const model = await startModelServer(fixingScript(seen), { apiKey: MODEL_KEY });
    const github = await startFakeGitHub({ tokens: [FORGE_TOKEN] });
    const devcontainer = '{\n  // comments are allowed\n  "image": "default",\n  "containerEnv": { "FIXTURE_MODE": "from-devcontainer" },\n  "postCreateCommand": "echo $FIXTURE_MODE > /tmp/setup-ran",\n  "initializeCommand": "touch /tmp/on-the-host",\n}\n';
    await github.createRepo('acme/widgets', { ...FIXTURE, '.devcontainer/devcontainer.json': devcontainer });
    const t = await startTestBerth({ modelEnv: { ANTHROPIC_BASE_URL: model.origin, ANTHROPIC_API_KEY: MODEL_KEY, BERTH_MODEL: 'claude-sonnet-4-5' } });
    try {
      await t.cli(['secret', 'set', 'GITHUB_TOKEN'], { input: FORGE_TOKEN });
      let r = await t.cli(['project', 'create', 'widgets', '--repo', github.repoUrl('acme/widgets'), '--forge', 'github', '--forge-url', github.apiUrl, '--token-secret', 'GITHUB_TOKEN', '--check', 'node --test']);
      assert.equal(r.code, 0, r.stderr);
      const created = await t.api('POST', '/api/orgs/default/tasks', { goal: 'Make sum() add', project: 'widgets' });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const done = await ended(t, created.body.id);
      assert.equal(done.state, 'succeeded', done.stateReason);
      assert.deepEqual(model.failures, []);
      assert.ok(model.requests.every((q) => q.protocol === 'anthropic' && q.apiKey === MODEL_KEY));

      assert.equal(github.pulls.length, 1);
      const pr = github.pulls[0]!;
      assert.equal(pr.repository, 'acme/widgets');
      assert.equal(pr.head, done.branch);
      assert.equal(pr.base, 'main');
      assert.equal(pr.draft, false);
      assert.equal(pr.token, FORGE_TOKEN);
      assert.match(pr.body ?? '', /## Goal\n\nMake sum\(\) add/);
      assert.match(pr.body ?? '', /✅ `node --test` passed/);
      assert.match(pr.body ?? '', new RegExp(`/tasks/${done.id}`));
      assert.equal(done.changeRequest.url, pr.htmlUrl);
      assert.equal(pr.headSha, await refSha(join(github.root, 'acme/widgets.git'), `refs/heads/${done.branch}`));

      const { items } = (await t.api('GET', `/api/orgs/default/tasks/${done.id}/events`)).body as Events;
      assert.ok(items.some((e) => e.data.type === 'log' && e.data.level === 'warn' && /initializeCommand is refused: it runs on the host/.test(e.data.message)), 'a devcontainer property Berth does not honour is reported');
      assert.ok(items.some((e) => e.data.type === 'command' && e.data.phase === 'setup' && e.data.cmd.includes('FIXTURE_MODE')));
    } finally {
      await t.destroy();
      await model.close();
      await github.close();
    }
  });
});

describe('a GitLab-shaped forge', () => {
  test('the merge request appears, a draft when the checks fail', async () => {
    const model = await startModelServer(
      Array.from({ length: 20 }, () => (req: ScriptRequest) =>
        req.toolResults.length ? { toolCalls: [{ name: 'finish', args: { summary: 'wrote a note' } }] } : { toolCalls: [{ name: 'write_file', args: { path: 'NOTE.md', content: 'note\n' } }] },
      ),
      { apiKey: MODEL_KEY },
    );
    const gitlab = await startFakeGitLab({ tokens: [FORGE_TOKEN] });
    await gitlab.createRepo('acme/tools/cli', FIXTURE);
    const t = await startTestBerth({ fake: true, modelEnv: { OPENAI_BASE_URL: model.url, OPENAI_API_KEY: MODEL_KEY, BERTH_MODEL: 'gpt-4o-mini' } });
    try {
      await t.cli(['secret', 'set', 'GITLAB_TOKEN'], { input: FORGE_TOKEN });
      const r = await t.cli(['project', 'create', 'cli', '--repo', gitlab.repoUrl('acme/tools/cli'), '--forge', 'gitlab', '--forge-url', gitlab.apiUrl, '--token-secret', 'GITLAB_TOKEN', '--check', 'node --test']);
      assert.equal(r.code, 0, r.stderr);
      const res = await t.api('POST', '/api/orgs/default/tasks', { goal: 'Add a note', project: 'cli', budget: { maxCheckRetries: 0 } });
      const done = await ended(t, res.body.id);
      assert.equal(done.state, 'failed');
      assert.match(done.stateReason, /checks still fail/);
      assert.equal(gitlab.mergeRequests.length, 1);
      const mr = gitlab.mergeRequests[0]!;
      assert.equal(mr.project, 'acme/tools/cli');
      assert.equal(mr.sourceBranch, done.branch);
      assert.equal(mr.targetBranch, 'main');
      assert.equal(mr.draft, true);
      assert.match(mr.description ?? '', /still fails after 1 attempt/);
      assert.equal(mr.token, FORGE_TOKEN);
      assert.equal(done.changeRequest.kind, 'merge_request');
      assert.equal(done.changeRequest.url, mr.webUrl);
    } finally {
      await t.destroy();
      await model.close();
      await gitlab.close();
    }
  });
});

describe('tasks that do not reach green', () => {
  let t: TestBerth;
  let model: ModelServer;
  const script: Step[] = [];
  let repo: string;

  before(async () => {
    // One scripted model for the whole group; each test appends the steps it needs.
    model = await startModelServer(Array.from({ length: 200 }, (_, i) => (req: ScriptRequest) => {
      const step = script[i];
      if (!step) return { status: 500, message: `no step ${i} scripted` };
      return typeof step === 'function' ? step(req) : step;
    }), { apiKey: MODEL_KEY });
    const root = await mkdtemp(join(tmpdir(), 'berth-repos-'));
    repo = (await createBareRepo({ root, name: 'fixture.git', files: { ...FIXTURE, 'berth.yaml': 'check: node --test\n' } })).path;
    t = await startTestBerth({ modelEnv: { OPENAI_BASE_URL: model.url, OPENAI_API_KEY: MODEL_KEY, BERTH_MODEL: 'gpt-4o-mini' } });
  });
  after(async () => {
    await t?.destroy();
    await model?.close();
  });

  const create = (body: Record<string, unknown>) => t.api('POST', '/api/orgs/default/tasks', { repo, ...body });

  test('a check that never passes: the agent gets the failure, then the change is a draft and the task says so', async () => {
    let followUp = '';
    script.length = 0;
    script.push(
      { toolCalls: [{ name: 'write_file', args: { path: 'NOTES.md', content: 'tried\n' } }] },
      { toolCalls: [{ name: 'finish', args: { summary: 'I think it is done.' } }] },
      (req) => {
        followUp = req.messages.filter((m) => m.role === 'user').at(-1)?.text ?? '';
        return { toolCalls: [{ name: 'finish', args: { summary: 'Still done, I believe.' } }] };
      },
    );
    const before = model.requests.length;
    const res = await create({ goal: 'Fix sum', budget: { maxCheckRetries: 1 } });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    const done = await ended(t, res.body.id);
    assert.equal(done.state, 'failed');
    assert.match(done.stateReason, /checks still fail after 2 attempt\(s\); the change is a draft/);
    assert.equal(done.checksPassed, false);
    assert.equal(done.changeRequest.draft, true);
    assert.match(followUp, /The check command `node --test` failed with exit code 1/);
    assert.match(followUp, /sum adds/);
    assert.equal(model.requests.length - before, 3);
    assert.ok(await refSha(repo, `refs/heads/${done.branch}`), 'the draft branch was pushed');
  });

  test('a model that answers garbage ends the task as failed with the reason', async () => {
    script.length = 0;
    const offset = model.played;
    for (let i = 0; i < offset + 20; i++) script.push({ raw: 'this is not JSON at all', status: 200, contentType: 'application/json' });
    const res = await create({ goal: 'Fix sum' });
    const done = await ended(t, res.body.id);
    assert.equal(done.state, 'failed');
    assert.match(done.stateReason, /^the agent failed: /);
    assert.equal(done.changeRequest, null);
  });

  test('a step budget that runs out stops the agent and says which budget', async () => {
    script.length = 0;
    const offset = model.played;
    for (let i = 0; i < offset + 20; i++) script.push({ toolCalls: [{ name: 'run_command', args: { command: 'true' } }] });
    const res = await create({ goal: 'Fix sum', budget: { maxSteps: 2 } });
    const done = await ended(t, res.body.id);
    assert.equal(done.state, 'failed');
    assert.match(done.stateReason, /step/);
    assert.match(done.stateReason, /no files changed/);
    assert.equal(model.played - offset, 2);
  });

  test('cancel in the middle stops the model call and the environment', async () => {
    script.length = 0;
    const offset = model.played;
    for (let i = 0; i < offset; i++) script.push({ status: 500 });
    script.push({ toolCalls: [{ name: 'run_command', args: { command: 'true' } }] }, { text: 'thinking…', delayMs: 60_000 });
    const res = await create({ goal: 'Fix sum' });
    const id = res.body.id as string;
    await waitFor('the second model call', async () => model.requests.length > 0 && model.played >= offset + 2);
    const r = await t.cli(['task', 'cancel', id]);
    assert.equal(r.code, 0, r.stderr);
    const done = await ended(t, id, 10_000);
    assert.equal(done.state, 'cancelled');
    await waitFor('the environment to stop', async () => (await t.api('GET', `/api/orgs/default/environments/${done.environmentId}`)).body.state === 'stopped', 15_000);
    await waitFor('the model call to be abandoned', async () => model.requests.at(-1)!.aborted, 5_000);
    const again = await t.api('POST', `/api/orgs/default/tasks/${id}/cancel`);
    assert.equal(again.status, 409);
  });

  test('Ctrl-C detaches berth run without cancelling the task', async () => {
    script.length = 0;
    const offset = model.played;
    for (let i = 0; i < offset; i++) script.push({ status: 500 });
    script.push({ text: 'thinking…', delayMs: 60_000 });
    const child = spawn(join(REPO, 'bin', 'berth'), ['run', 'Fix sum', '--repo', repo], {
      env: { ...process.env, BERTH_NODE: process.execPath, BERTH_DATA_DIR: t.dataDir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    await waitFor('the agent step in the CLI', async () => stderr.includes('the built-in agent is working'));
    const exited = new Promise<number | null>((r) => child.on('close', r));
    child.kill('SIGINT');
    assert.equal(await exited, 130);
    const id = /task (task_[0-9a-z]{12})/.exec(stderr)![1]!;
    assert.match(stderr, new RegExp(`detached: task ${id} keeps running`));
    assert.equal((await task(t, id)).state, 'running');
    assert.equal((await t.cli(['task', 'cancel', id])).code, 0);
    assert.equal((await ended(t, id, 10_000)).state, 'cancelled');
  });

  test("project secrets reach the agent's commands but never its transcript; no change means nothing is pushed", async () => {
    const value = 'npm_0123456789abcdefSECRET';
    assert.equal((await t.cli(['secret', 'set', 'NPM_TOKEN'], { input: value })).code, 0);
    assert.equal((await t.cli(['project', 'create', 'secretive', '--repo', repo, '--secret', 'NPM_TOKEN'])).code, 0);
    script.length = 0;
    const offset = model.played;
    for (let i = 0; i < offset; i++) script.push({ status: 500 });
    script.push(
      { toolCalls: [{ name: 'run_command', args: { command: 'echo "token is $NPM_TOKEN"' } }] },
      { text: `I will not repeat ${value}`, toolCalls: [{ name: 'finish', args: { summary: 'looked around' } }] },
    );
    const res = await t.api('POST', '/api/orgs/default/tasks', { goal: 'Look around', project: 'secretive', check: 'true' });
    const done = await ended(t, res.body.id);
    assert.equal(done.state, 'succeeded', `${done.stateReason}\n${JSON.stringify((await t.api('GET', `/api/orgs/default/tasks/${done.id}/events`)).body)}`);
    assert.match(done.stateReason, /changed no files: nothing was pushed/);
    assert.equal(done.changeRequest, null);
    const raw = JSON.stringify((await t.api('GET', `/api/orgs/default/tasks/${done.id}/events`)).body);
    assert.ok(!raw.includes(value), raw);
    assert.match(raw, /token is \[secret:NPM_TOKEN\]/);
    assert.match(raw, /I will not repeat \[secret:NPM_TOKEN\]/);
  });

  test('a command agent: any command inside the environment does the work', async () => {
    const res = await create({ goal: 'Make sum add', agent: 'command', command: 'sed -i "s/a - b/a + b/" sum.js && echo "goal was: $BERTH_GOAL"' });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    const done = await ended(t, res.body.id);
    assert.equal(done.state, 'succeeded', done.stateReason);
    assert.equal(done.checksPassed, true);
    assert.match(await runGit(['show', `${done.branch}:sum.js`], { cwd: repo }), /return a \+ b;/);
    const { items } = (await t.api('GET', `/api/orgs/default/tasks/${done.id}/events`)).body as Events;
    const command = items.find((e) => e.data.type === 'command' && e.data.phase === 'agent');
    assert.match(command?.data.output, /goal was: Make sum add/);
  });

  test("a command agent reaches the model through the runner's gateway with a task token, never the key", async () => {
    script.length = 0;
    const offset = model.played;
    for (let i = 0; i < offset; i++) script.push({ status: 500 });
    script.push({ text: 'Replace a - b with a + b.', usage: { input: 30, output: 7 } });
    const request = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'how do I fix sum?' }] });
    const command = [
      `printf '%s' '${request}' > /tmp/request.json`,
      'curl -sS --fail-with-body "$OPENAI_BASE_URL/chat/completions" -H "Authorization: Bearer $OPENAI_API_KEY" -H "content-type: application/json" --data @/tmp/request.json > /tmp/reply.json',
      'grep -q "a + b" /tmp/reply.json',
      'sed -i "s/a - b/a + b/" sum.js',
      'echo "key inside: $OPENAI_API_KEY"',
    ].join(' && ');
    const res = await create({ goal: 'Ask the model, then fix sum', agent: 'command', command });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    const done = await ended(t, res.body.id);
    const { items } = (await t.api('GET', `/api/orgs/default/tasks/${done.id}/events`)).body as Events;
    assert.equal(done.state, 'succeeded', `${done.stateReason}\n${JSON.stringify(items.filter((e) => e.data.type === 'command'))}`);
    const call = items.find((e) => e.data.type === 'model');
    assert.equal(call?.data.via, 'gateway');
    assert.deepEqual([call?.data.usage.inputTokens, call?.data.usage.outputTokens], [30, 7]);
    assert.equal(done.usage.inputTokens, 30);
    // The provider got the real key; the agent held a task token that is revoked now.
    assert.equal(model.requests.at(-1)!.apiKey, MODEL_KEY);
    const output = items.find((e) => e.data.type === 'command' && e.data.phase === 'agent')!.data.output as string;
    const inside = /key inside: (\S+)/.exec(output)![1]!;
    assert.notEqual(inside, MODEL_KEY);
    assert.ok(!JSON.stringify(items).includes(MODEL_KEY));
  });

  test('the event stream resumes after the last event seen, without losing or repeating any', async () => {
    const { items } = (await t.api('GET', '/api/orgs/default/tasks?limit=1')).body;
    const id = items[0].id as string;
    const all = (await t.api('GET', `/api/orgs/default/tasks/${id}/events`)).body.items as { seq: number }[];
    assert.ok(all.length > 6);
    const res = await fetch(`${t.client.url}/api/orgs/default/tasks/${id}/events`, {
      headers: { authorization: `Bearer ${t.client.token}`, accept: 'text/event-stream', 'last-event-id': '5' },
    });
    assert.equal(res.headers.get('content-type'), 'text/event-stream');
    const text = await res.text();
    const seqs = [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
    assert.deepEqual(seqs, all.map((e) => e.seq).filter((s) => s > 5));
    assert.match(text, /event: end\n/);
  });

  test('the transcript pages from its end: tail=N, then before=seq for the page before', async () => {
    const { items } = (await t.api('GET', '/api/orgs/default/tasks?limit=1')).body;
    const id = items[0].id as string;
    const events = async (q: string) => {
      const res = await t.api('GET', `/api/orgs/default/tasks/${id}/events${q}`);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return (res.body.items as { seq: number }[]).map((e) => e.seq);
    };
    const all = await events('');
    assert.ok(all.length > 6);
    assert.deepEqual(all, all.map((_, i) => i + 1));
    const last = all.at(-1)!;
    // The last three, in order; then the three before them; the first page stops at seq 1.
    assert.deepEqual(await events('?tail=3'), [last - 2, last - 1, last]);
    assert.deepEqual(await events(`?tail=3&before=${last - 2}`), [last - 5, last - 4, last - 3]);
    assert.deepEqual(await events('?tail=3&before=3'), [1, 2]);
    assert.deepEqual(await events('?tail=3&before=1'), []);
    assert.deepEqual(await events(`?tail=${all.length + 10}`), all);
    // Walking back page by page gives every event exactly once.
    const walked: number[] = [];
    for (let page = await events('?tail=2'); page.length; page = await events(`?tail=2&before=${page[0]}`)) walked.unshift(...page);
    assert.deepEqual(walked, all);
    // before alone, and with after: a window.
    assert.deepEqual(await events('?before=4'), [1, 2, 3]);
    assert.deepEqual(await events('?after=2&before=6&tail=2'), [4, 5]);
    // Bad values are refused, and so is paging the stream (it takes after or Last-Event-ID).
    for (const q of ['?tail=0', '?tail=10001', '?tail=x', '?before=0']) assert.equal((await t.api('GET', `/api/orgs/default/tasks/${id}/events${q}`)).status, 400, q);
    const stream = await t.api('GET', `/api/orgs/default/tasks/${id}/events?follow=1&tail=5`);
    assert.equal(stream.status, 400);
    assert.equal(stream.body.error.field, 'querystring.tail');
  });

  test('bad input is refused and changes nothing', async () => {
    const count = async () => (await t.api('GET', '/api/orgs/default/tasks?limit=200')).body.items.length;
    const n = await count();
    const cases: [Record<string, unknown>, number, RegExp][] = [
      [{ goal: '' }, 400, /goal/],
      [{ goal: 'x', repo, project: 'p' }, 400, /either project or repo/],
      [{ goal: 'x', project: 'nope', repo: undefined }, 404, /no project 'nope'/],
      [{ goal: 'x', repo: 'https://user:pw@example.com/a.git' }, 400, /carries credentials/],
      [{ goal: 'x', repo: 'relative/path' }, 400, /neither a URL nor an absolute path/],
      [{ goal: 'x', repo: join(tmpdir(), 'berth-no-such-dir') }, 400, /no repository at/],
      // Paths on the server only under BERTH_LOCAL_REPOS (the tests allow the temp directory).
      [{ goal: 'x', repo: '/etc' }, 403, /BERTH_LOCAL_REPOS/],
      [{ goal: 'x', repo: 'git://example.com/a.git' }, 400, /not supported/],
      [{ goal: 'x', agent: 'command' }, 400, /needs a command/],
      [{ goal: 'x', budget: { maxSteps: 0 } }, 400, /maxSteps/],
      [{ goal: 'x', budget: { timeout: 'soon' } }, 400, /duration/],
      [{ goal: 'x', surprise: true }, 400, /surprise/],
    ];
    for (const [body, status, message] of cases) {
      const res = await create(body);
      assert.equal(res.status, status, `${JSON.stringify(body)} → ${JSON.stringify(res.body)}`);
      assert.match(JSON.stringify(res.body), message);
    }
    // Without a model configured, a built-in agent task is refused up front.
    const bare = await startTestBerth();
    try {
      const res = await bare.api('POST', '/api/orgs/default/tasks', { goal: 'x', repo });
      assert.equal(res.status, 503);
      assert.match(res.body.error.message, /OPENAI_BASE_URL|ANTHROPIC/);
      assert.equal((await bare.api('GET', '/api/orgs/default/tasks')).body.items.length, 0);
    } finally {
      await bare.destroy();
    }
    assert.equal(await count(), n);
    assert.equal((await t.api('GET', '/api/orgs/default/tasks/task_000000000000')).status, 404);
  });
});
