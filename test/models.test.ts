// Models per org and project (issue #12): an org and each project may name the model API
// their tasks use (provider, base URL, model, and the NAME of the secret holding the key)
// over the instance default (berth up's environment). Tasks record whose settings they used;
// the key is used by Berth on the host only: never in the API, an event, a transcript or an
// environment's variables.
import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createBareRepo } from './fakes/git-server.ts';
import { startModelServer, type ModelServer, type ScriptRequest, type Step } from './fakes/model-server.ts';
import { apiAs, startTestBerth, waitFor, type TestBerth } from './helpers.ts';

const INSTANCE_KEY = 'sk-instance-key-0123456789abcdef';
const PROJECT_KEY = 'sk-ant-project-key-fedcba9876543210';
const ORG_KEY = 'sk-org-key-00112233445566778899';

const as = apiAs;

const ended = (t: TestBerth, id: string, timeoutMs = 180_000) =>
  waitFor(`task ${id} to end`, async () => {
    const task = (await t.api('GET', `/api/orgs/default/tasks/${id}`)).body;
    return ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(task.state) && task;
  }, timeoutMs);

describe('model settings through the API and the CLI (no sandbox: the tasks fail at the clone)', () => {
  let t: TestBerth;
  // A directory BERTH_LOCAL_REPOS allows, but no repository: a task takes its model, then fails at the clone.
  const NOT_A_REPO = mkdtempSync(join(tmpdir(), 'berth-not-a-repo-'));

  before(async () => {
    t = await startTestBerth({ fake: true, modelEnv: { BERTH_MODEL: 'gpt-4o-mini', OPENAI_BASE_URL: 'http://127.0.0.1:9/v1', OPENAI_API_KEY: INSTANCE_KEY } });
    assert.equal((await t.api('PUT', '/api/orgs/default/secrets/ORG_MODEL_KEY', { value: ORG_KEY })).status, 200);
    assert.equal((await t.api('PUT', '/api/orgs/default/secrets/PROJECT_MODEL_KEY', { value: PROJECT_KEY })).status, 200);
    for (const name of ['alpha', 'beta']) {
      // alpha names the key secret among its environment secrets: a model key stays out anyway.
      const p = await t.api('POST', '/api/orgs/default/projects', { name, repoUrl: NOT_A_REPO, secrets: name === 'alpha' ? ['PROJECT_MODEL_KEY'] : [] });
      assert.equal(p.status, 201, JSON.stringify(p.body));
    }
  });
  after(async () => {
    await t?.destroy();
  });

  test('berth model set, show and rm for the org and a project; viewers see the key secret by name only', async () => {
    let r = await t.cli(['model', 'show']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^own\s+none: its tasks use the runner's model settings$/m);
    assert.match(r.stdout, /^tasks use\s+gpt-4o-mini over openai, the runner's settings \(berth up's environment\)$/m);

    r = await t.cli(['model', 'set', '--provider', 'openai', '--base-url', 'http://127.0.0.1:9/v1/', '--key-secret', 'ORG_MODEL_KEY', '--model', 'gpt-4.1']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'the org: gpt-4.1 over openai at http://127.0.0.1:9/v1, key from secret ORG_MODEL_KEY\n');
    r = await t.cli(['model', 'set', '--project', 'alpha', '--provider', 'anthropic', '--base-url', 'http://127.0.0.1:9', '--key-secret', 'PROJECT_MODEL_KEY', '--model', 'claude-project-model', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(
      (({ scope, project, provider, baseUrl, keySecret, model }) => ({ scope, project, provider, baseUrl, keySecret, model }))(JSON.parse(r.stdout)),
      { scope: 'project', project: 'alpha', provider: 'anthropic', baseUrl: 'http://127.0.0.1:9', keySecret: 'PROJECT_MODEL_KEY', model: 'claude-project-model' },
    );

    r = await t.cli(['model', 'show', '--project', 'alpha']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^provider\s+anthropic$/m);
    assert.match(r.stdout, /^key secret\s+PROJECT_MODEL_KEY \(used by Berth on the host, never inside environments\)$/m);
    r = await t.cli(['model', 'show', '--project', 'beta']);
    assert.match(r.stdout, /^tasks use\s+gpt-4\.1 over openai, the org's settings$/m);

    // A viewer reads the settings (the key secret's name, never a value); only admins change them.
    const viewer = as(t, (await t.api('POST', '/api/orgs/default/tokens', { role: 'viewer', name: 'v' })).body.token);
    const member = as(t, (await t.api('POST', '/api/orgs/default/tokens', { role: 'member', name: 'm' })).body.token);
    const seen = await viewer('GET', '/api/orgs/default/projects/alpha/model');
    assert.equal(seen.status, 200);
    assert.equal(seen.body.own.keySecret, 'PROJECT_MODEL_KEY');
    assert.deepEqual(seen.body.effective, { scope: 'project', provider: 'anthropic', model: 'claude-project-model' });
    const all = await viewer('GET', '/api/orgs/default/models');
    assert.deepEqual(all.body.items.map((m: { project: string | null; model: string }) => [m.project, m.model]), [[null, 'gpt-4.1'], ['alpha', 'claude-project-model']]);
    const body = { provider: 'openai', baseUrl: 'http://127.0.0.1:9/v1', keySecret: 'ORG_MODEL_KEY', model: 'x' };
    assert.equal((await member('PUT', '/api/orgs/default/model', body)).status, 403);
    assert.equal((await member('DELETE', '/api/orgs/default/projects/alpha/model')).status, 403);
    for (const text of [JSON.stringify(seen.body), JSON.stringify(all.body)]) {
      assert.ok(!text.includes(PROJECT_KEY) && !text.includes(ORG_KEY), text);
    }

    // The key secret is the host's: not among what alpha's environments receive, though alpha names it.
    const alpha = await t.api('GET', '/api/orgs/default/projects/alpha');
    assert.deepEqual(alpha.body.receives.variables, []);
    assert.deepEqual(alpha.body.secrets, ['PROJECT_MODEL_KEY']);

    // Every change is on the audit log.
    const audit = await t.api('GET', '/api/orgs/default/audit?limit=200');
    const actions = (audit.body.items as { action: string }[]).map((e) => e.action);
    assert.ok(actions.filter((a) => a === 'model.set').length >= 2, actions.join(' '));
  });

  test('bad input is refused with what to do next and changes nothing', async () => {
    const before = (await t.api('GET', '/api/orgs/default/models')).body;
    const put = (body: Record<string, unknown>, path = '/api/orgs/default/model') => t.api('PUT', path, { provider: 'openai', baseUrl: 'https://api.example.com/v1', keySecret: 'ORG_MODEL_KEY', model: 'gpt-4.1', ...body });
    let r = await put({ keySecret: 'NO_SUCH_KEY' });
    assert.equal(r.status, 400);
    assert.match(r.body.error.message, /no secret 'NO_SUCH_KEY' in the org: store the key first with `berth secret set NO_SUCH_KEY/);
    r = await put({ baseUrl: 'https://user:sk-inline@api.example.com/v1' });
    assert.equal(r.status, 400);
    assert.match(r.body.error.message, /put the key in a secret/);
    assert.ok(!JSON.stringify(r.body).includes('sk-inline'));
    r = await put({ baseUrl: 'ftp://api.example.com' });
    assert.equal(r.status, 400);
    r = await put({ provider: 'gemini' });
    assert.equal(r.status, 400);
    r = await put({}, '/api/orgs/default/projects/nope/model');
    assert.equal(r.status, 404);
    // A project's key secret may be the project's or the org's, never another project's.
    assert.equal((await t.api('PUT', '/api/orgs/default/secrets/BETA_ONLY', { value: 'beta-secret-value', project: 'beta' })).status, 200);
    r = await put({ keySecret: 'BETA_ONLY' }, '/api/orgs/default/projects/alpha/model');
    assert.equal(r.status, 400);
    assert.match(r.body.error.message, /no secret 'BETA_ONLY' in project 'alpha' or the org/);
    r = await t.api('DELETE', '/api/orgs/default/projects/beta/model');
    assert.equal(r.status, 404);
    assert.match(r.body.error.message, /project 'beta' has no model settings of its own/);

    const cli = await t.cli(['model', 'set', '--provider', 'gemini', '--base-url', 'https://x.example', '--key-secret', 'K', '--model', 'm']);
    assert.equal(cli.code, 2, cli.stderr);
    assert.match(cli.stderr, /--provider: expected openai or anthropic/);
    assert.deepEqual((await t.api('GET', '/api/orgs/default/models')).body, before);
  });

  test("a task records whose model settings it used, and berth task show says so; the task's --model names the model only", async () => {
    const run = async (body: Record<string, unknown>) => {
      const created = await t.api('POST', '/api/orgs/default/tasks', { goal: 'Which model?', ...body });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const task = await ended(t, created.body.id);
      assert.equal(task.state, 'failed');
      return task;
    };
    const pick = (task: any) => [task.model, task.modelProvider, task.modelSource, task.modelSettings, task.modelIsDefault];

    const inAlpha = await run({ project: 'alpha' });
    assert.deepEqual(pick(inAlpha), ['claude-project-model', 'anthropic', 'project', 'project', false]);
    assert.match((await t.cli(['task', 'show', inAlpha.id])).stdout, /^agent\s+built-in \(claude-project-model, the project's; anthropic, by the project's model settings\)$/m);

    const named = await run({ project: 'alpha', model: 'claude-other' });
    assert.deepEqual(pick(named), ['claude-other', 'anthropic', 'task', 'project', false]);
    assert.match((await t.cli(['task', 'show', named.id])).stdout, /^agent\s+built-in \(claude-other; anthropic, by the project's model settings\)$/m);

    const inBeta = await run({ project: 'beta' });
    assert.deepEqual(pick(inBeta), ['gpt-4.1', 'openai', 'org', 'org', true]);
    assert.match((await t.cli(['task', 'show', inBeta.id])).stdout, /^agent\s+built-in \(gpt-4\.1, the org's default; openai, by the org's model settings\)$/m);

    // Without the org's settings, beta's tasks fall back to the instance default (berth up's environment).
    assert.equal((await t.cli(['model', 'rm'])).code, 0);
    const fallback = await run({ project: 'beta' });
    assert.deepEqual(pick(fallback), ['gpt-4o-mini', 'openai', 'instance', 'instance', true]);
    assert.match((await t.cli(['task', 'show', fallback.id])).stdout, /^agent\s+built-in \(gpt-4o-mini, the runner's default\)$/m);

    // No key in any of it.
    const events = await Promise.all([inAlpha, named, inBeta, fallback].map((x) => t.api('GET', `/api/orgs/default/tasks/${x.id}/events`)));
    const text = JSON.stringify([inAlpha, named, inBeta, fallback, events.map((e) => e.body)]);
    for (const key of [PROJECT_KEY, ORG_KEY, INSTANCE_KEY]) assert.ok(!text.includes(key), key);
  });

  test('a base URL on a private or loopback address is refused unless the instance allows the host (BERTH_ALLOWED_MODEL_HOSTS)', async () => {
    const strict = await startTestBerth({ fake: true, repos: { localRepos: [], allowedGitHosts: [] } });
    try {
      assert.equal((await strict.api('PUT', '/api/orgs/default/secrets/K', { value: 'v' })).status, 200);
      for (const baseUrl of ['http://127.0.0.1:11434/v1', 'http://169.254.169.254/latest', 'http://10.0.0.5/v1', 'http://[::1]:8000/v1']) {
        const r = await strict.api('PUT', '/api/orgs/default/model', { provider: 'openai', baseUrl, keySecret: 'K', model: 'm' });
        assert.equal(r.status, 403, `${baseUrl}: ${JSON.stringify(r.body)}`);
        assert.match(r.body.error.message, /BERTH_ALLOWED_MODEL_HOSTS/);
      }
      assert.deepEqual((await strict.api('GET', '/api/orgs/default/models')).body.items, []);
    } finally {
      await strict.destroy();
    }
  });
});

describe("a project's own model API, reached by the built-in agent and through the gateway, with its own key", () => {
  let t: TestBerth;
  let instance: ModelServer;
  let project: ModelServer;
  const script: Step[] = [];

  before(async () => {
    // The instance default points at one server, the project's settings at another; each wants its own key.
    instance = await startModelServer([{ status: 500, message: 'the instance default must not be used' }], { apiKey: INSTANCE_KEY });
    project = await startModelServer(Array.from({ length: 50 }, (_, i) => (req: ScriptRequest) => {
      const step = script[i];
      if (!step) return { status: 500, message: `no step ${i} scripted` };
      return typeof step === 'function' ? step(req) : step;
    }), { apiKey: PROJECT_KEY });
    const root = await mkdtemp(join(tmpdir(), 'berth-model-repos-'));
    const repo = (await createBareRepo({ root, name: 'fixture.git', files: { 'README.md': '# fixture\n' } })).path;
    t = await startTestBerth({ modelEnv: { OPENAI_BASE_URL: instance.url, OPENAI_API_KEY: INSTANCE_KEY, BERTH_MODEL: 'gpt-4o-mini' } });
    assert.equal((await t.api('PUT', '/api/orgs/default/secrets/PROJECT_MODEL_KEY', { value: PROJECT_KEY })).status, 200);
    // The project even names the key among its secrets: a model key never becomes a variable.
    assert.equal((await t.api('POST', '/api/orgs/default/projects', { name: 'own-model', repoUrl: repo, secrets: ['PROJECT_MODEL_KEY'] })).status, 201);
    const set = await t.api('PUT', '/api/orgs/default/projects/own-model/model', { provider: 'anthropic', baseUrl: project.origin, keySecret: 'PROJECT_MODEL_KEY', model: 'claude-project-model' });
    assert.equal(set.status, 200, JSON.stringify(set.body));
  });
  after(async () => {
    await t?.destroy();
    await instance?.close();
    await project?.close();
  });

  test("the built-in agent talks to the project's server with the project's key; the key is nowhere to be read", async () => {
    script.length = 0;
    script.push(
      { text: 'Writing notes.', toolCalls: [{ name: 'run_command', args: { command: 'echo "notes" > NOTES.md; env | grep -c KEY || true' } }] },
      { toolCalls: [{ name: 'finish', args: { summary: 'Wrote NOTES.md.' } }] },
    );
    const created = await t.api('POST', '/api/orgs/default/tasks', { goal: 'Write some notes', project: 'own-model', check: 'true' });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const done = await ended(t, created.body.id);
    const { items } = (await t.api('GET', `/api/orgs/default/tasks/${done.id}/events`)).body as { items: { data: Record<string, any> }[] };
    assert.equal(done.state, 'succeeded', `${done.stateReason}\n${JSON.stringify(items)}`);
    assert.deepEqual([done.model, done.modelProvider, done.modelSource, done.modelSettings], ['claude-project-model', 'anthropic', 'project', 'project']);

    // The project's server got both calls over the Anthropic protocol with the project's key; the instance's got none.
    assert.deepEqual(project.failures, []);
    assert.equal(project.requests.length, 2);
    assert.ok(project.requests.every((q) => q.protocol === 'anthropic' && q.apiKey === PROJECT_KEY && q.body.model === 'claude-project-model'), JSON.stringify(project.requests.map((q) => [q.protocol, q.body?.model])));
    assert.equal(instance.requests.length, 0);
    assert.ok(items.some((e) => e.data.type === 'log' && /model claude-project-model over anthropic, by the project's model settings/.test(e.data.message)));

    // Not in the API, the events or the transcript; not in the environment's variables.
    const api = JSON.stringify([done, items, (await t.api('GET', '/api/orgs/default/projects/own-model/model')).body, (await t.api('GET', '/api/orgs/default/projects/own-model')).body]);
    assert.ok(!api.includes(PROJECT_KEY));
    // The task stops its environment as it ends; start it again once that is done.
    await waitFor('the task environment to stop', async () => (await t.api('GET', `/api/orgs/default/environments/${done.environmentId}`)).body.state === 'stopped');
    assert.equal((await t.api('POST', `/api/orgs/default/environments/${done.environmentId}/start`)).status, 200);
    const probe = await t.api('POST', `/api/orgs/default/environments/${done.environmentId}/exec`, { cmd: ['sh', '-c', 'env; cat /proc/*/environ 2>/dev/null | tr "\\0" "\\n"'] });
    assert.equal(probe.status, 200, JSON.stringify(probe.body));
    assert.ok(!probe.body.stdout.includes(PROJECT_KEY) && !probe.body.stdout.includes('PROJECT_MODEL_KEY'), probe.body.stdout);
    await t.api('POST', `/api/orgs/default/environments/${done.environmentId}/stop`);
  });

  test("an agent CLI's calls through the LLM gateway go to the project's server with the project's key, not the task token", async () => {
    script.length = 0;
    const offset = project.played;
    for (let i = 0; i < offset; i++) script.push({ status: 500 });
    script.push({ text: 'Use a + b.', usage: { input: 12, output: 3 } });
    const request = JSON.stringify({ model: 'claude-project-model', max_tokens: 100, messages: [{ role: 'user', content: 'hello' }] });
    const command = [
      `printf '%s' '${request}' > /tmp/request.json`,
      'curl -sS --fail-with-body "$ANTHROPIC_BASE_URL/v1/messages" -H "x-api-key: $ANTHROPIC_API_KEY" -H "anthropic-version: 2023-06-01" -H "content-type: application/json" --data @/tmp/request.json',
    ].join(' && ');
    const created = await t.api('POST', '/api/orgs/default/tasks', { goal: 'Ask the model', project: 'own-model', agent: 'command', command, check: 'true' });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const done = await ended(t, created.body.id);
    const { items } = (await t.api('GET', `/api/orgs/default/tasks/${done.id}/events`)).body as { items: { data: Record<string, any> }[] };
    assert.equal(done.state, 'succeeded', `${done.stateReason}\n${JSON.stringify(items.filter((e) => e.data.type !== 'model'))}`);
    assert.deepEqual([done.modelProvider, done.modelSettings], ['anthropic', 'project']);
    const last = project.requests.at(-1)!;
    assert.equal(last.apiKey, PROJECT_KEY);
    assert.equal(last.protocol, 'anthropic');
    assert.equal(instance.requests.length, 0);
    const output = items.find((e) => e.data.type === 'command' && e.data.phase === 'agent')!.data.output as string;
    assert.match(output, /Use a \+ b\./);
    const call = items.find((e) => e.data.type === 'model');
    assert.equal(call?.data.via, 'gateway');
    assert.deepEqual([call?.data.usage.inputTokens, call?.data.usage.outputTokens], [12, 3]);
    assert.ok(!JSON.stringify([done, items]).includes(PROJECT_KEY));
    assert.match((await t.cli(['task', 'show', done.id])).stdout, /^agent\s+command \(model calls: anthropic, by the project's model settings\)$/m);
  });
});
