// Denials that help instead of stalling (issue #13): a tool that keeps asking for a refused
// destination gets one hint with what would allow it, in the transcript and `berth run`, and
// a setup or check command that only waits out its retries is stopped with that hint.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { DenialStorms, stormSettingsFrom, DEFAULT_STORM_SETTINGS } from '../src/server/network-events/index.ts';
import { DenialAdvisor } from '../src/server/tasks/denials.ts';
import { TaskEvents } from '../src/server/tasks/index.ts';
import { createBareRepo } from './fakes/git-server.ts';
import { startModelServer, type ModelServer } from './fakes/model-server.ts';
import { startTestBerth, waitFor, type TestBerth } from './helpers.ts';

describe('settings', () => {
  test('BERTH_DENIAL_STORM_THRESHOLD and BERTH_DENIAL_FAIL_FAST: defaults, values, off, and clear errors', () => {
    assert.deepEqual(stormSettingsFrom({}), DEFAULT_STORM_SETTINGS);
    assert.equal(DEFAULT_STORM_SETTINGS.threshold, 40);
    assert.equal(DEFAULT_STORM_SETTINGS.failFastMs, 60_000);
    assert.deepEqual(stormSettingsFrom({ BERTH_DENIAL_STORM_THRESHOLD: '100', BERTH_DENIAL_FAIL_FAST: '2m' }), { ...DEFAULT_STORM_SETTINGS, threshold: 100, failFastMs: 120_000 });
    assert.equal(stormSettingsFrom({ BERTH_DENIAL_FAIL_FAST: 'off' }).failFastMs, null);
    assert.throws(() => stormSettingsFrom({ BERTH_DENIAL_STORM_THRESHOLD: 'lots' }), /BERTH_DENIAL_STORM_THRESHOLD must be a whole number from 2 up, such as 40; got 'lots'/);
    assert.throws(() => stormSettingsFrom({ BERTH_DENIAL_STORM_THRESHOLD: '1' }), /from 2 up/);
    assert.throws(() => stormSettingsFrom({ BERTH_DENIAL_FAIL_FAST: 'soon' }), /BERTH_DENIAL_FAIL_FAST must be a duration such as 60s or 2m, or off; got 'soon'/);
  });
});

describe('counting', () => {
  const npm = { host: 'registry.npmjs.org', port: 443, rule: 'deny:default:not-allowed' };

  test('a storm is reported once, when a streak reaches the threshold; a long pause starts the count again', () => {
    const storms = new DenialStorms({ threshold: 5, failFastMs: 10_000, gapMs: 60_000 });
    let now = 1_000_000;
    const reports = [];
    for (let i = 0; i < 4; i++) assert.equal(storms.refused('t1', 'e1', npm, (now += 100)), null);
    // Another destination and another task are counted apart.
    for (let i = 0; i < 10; i++) storms.refused('t1', 'e1', { ...npm, port: 80 }, now);
    for (let i = 0; i < 4; i++) assert.equal(storms.refused('t2', 'e2', npm, now), null);
    const s = storms.refused('t1', 'e1', npm, (now += 100));
    assert.ok(s);
    assert.deepEqual([s.host, s.port, s.rule, s.count, s.since, s.reported], ['registry.npmjs.org', 443, 'deny:default:not-allowed', 5, 1_000_100, true]);
    for (let i = 0; i < 50; i++) reports.push(storms.refused('t1', 'e1', npm, (now += 100)));
    assert.ok(reports.every((r) => r === null), 'said once');
    assert.equal(s.count, 55);
    // Over a minute of quiet: a new streak, counted from one.
    now += 61_000;
    for (let i = 0; i < 4; i++) assert.equal(storms.refused('t1', 'e1', npm, (now += 100)), null);
    assert.ok(storms.refused('t1', 'e1', npm, (now += 100)));
  });

  test('stuck: only a reported storm that went on for the fail-fast window, with nothing let through since it began, and still going', () => {
    const storms = new DenialStorms({ threshold: 3, failFastMs: 10_000, gapMs: 60_000 });
    let now = 0;
    const refuse = () => storms.refused('t', 'e', npm, now);
    refuse();
    refuse();
    now = 11_000;
    assert.equal(storms.stuck('t', now), null, 'below the threshold');
    refuse();
    assert.ok(storms.stuck('t', now), 'reported, and going on for 11 s');
    // Something was let through after the storm began: the command is getting work done.
    storms.allowed('t', 12_000);
    now = 30_000;
    refuse();
    assert.equal(storms.stuck('t', now), null);
    // The refusals stopped: the tool gave up by itself, nothing to stop.
    const quiet = new DenialStorms({ threshold: 3, failFastMs: 10_000, gapMs: 60_000 });
    for (let i = 0; i < 3; i++) quiet.refused('t', 'e', npm, 0);
    assert.ok(quiet.stuck('t', 10_000));
    assert.equal(quiet.stuck('t', 40_000), null);
    const off = new DenialStorms({ threshold: 3, failFastMs: null, gapMs: 60_000 });
    for (let i = 0; i < 30; i++) off.refused('t', 'e', npm, i * 1_000);
    assert.equal(off.stuck('t', 30_000), null, 'fail-fast off');
    storms.forget('t');
    assert.equal(storms.stuck('t', now), null);
  });
});

let root: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'berth-denials-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('hints', () => {
  let t: TestBerth;
  let orgId: string;
  before(async () => {
    t = await startTestBerth();
    orgId = (await t.api('GET', '/api/orgs')).body.items.find((o: { name: string }) => o.name === 'default').id;
    assert.equal((await t.cli(['project', 'create', 'shop', '--repo', 'http://127.0.0.1:9/acme/shop.git'])).code, 0);
    assert.equal((await t.cli(['policy', 'set', '--preset', 'pypi', '--allow-domain', 'api.example.com'])).code, 0);
    assert.equal((await t.cli(['policy', 'set', '--project', 'shop', '--port', '443', '8443'])).code, 0);
  });
  after(async () => {
    await t?.destroy();
  });

  const taskIn = async (id: string, project: string | null) => {
    const projectId = project ? (await t.berth.database.db.selectFrom('projects').select('id').where('name', '=', project).executeTakeFirstOrThrow()).id : null;
    await t.berth.database.db
      .insertInto('tasks')
      .values({
        id, org_id: orgId, project_id: projectId, repo_url: 'http://127.0.0.1:9/acme/shop.git', base_branch: 'main', goal: 'hints', agent: 'command', command: 'true', model: null,
        budget: JSON.stringify({ maxSteps: 1, maxTokens: null, maxCostUsd: null, timeoutMs: 60_000, maxCheckRetries: 0 }), check_command: null, state: 'running', trigger: 'api', created_by: 'test',
      } as never)
      .execute();
    return id;
  };
  const advisor = () => new DenialAdvisor({ db: t.berth.database.db, events: new TaskEvents(t.berth.database.db), policies: t.berth.app.policies, logger: pino({ level: 'silent' }), settings: DEFAULT_STORM_SETTINGS });
  const storm = (taskId: string, host: string, rule: string, port = 443) => ({ taskId, environmentId: 'env_x', host, port, rule, count: 40, since: 0, lastAt: 12_000, reported: true });

  test("the fix is the preset that covers the host, else the domain, else the port; the command names the whole list, since it replaces it", async () => {
    const id = await taskIn('task_hint00000001', 'shop');
    const a = advisor();
    const npm = await a.hintFor(storm(id, 'registry.npmjs.org', 'deny:org:not-allowed'), { phase: 'setup', cmd: 'npm install' });
    assert.equal(npm.message, '`npm install` (setup) tried to reach registry.npmjs.org:443 40 times in 12s: refused by deny:org:not-allowed; allow it with `berth policy set --project shop --preset pypi npm`');
    assert.deepEqual(npm.fix, { kind: 'policy', project: 'shop', field: 'presets', add: 'npm', label: 'Use preset npm for project shop', command: 'berth policy set --project shop --preset pypi npm' });
    assert.deepEqual([npm.phase, npm.command, npm.count], ['setup', 'npm install', 40]);

    const other = await a.hintFor(storm(id, 'pkgs.corp.example', 'deny:org:not-allowed'), null);
    assert.equal(other.message, 'the environment tried to reach pkgs.corp.example:443 40 times in 12s: refused by deny:org:not-allowed; allow it with `berth policy set --project shop --allow-domain api.example.com pkgs.corp.example`');
    assert.equal(other.fix.kind === 'policy' && other.fix.label, 'Allow pkgs.corp.example for project shop');

    const port = await a.hintFor(storm(id, 'api.example.com', 'deny:project:port:9443', 9443), null);
    assert.equal(port.fix.kind === 'policy' && port.fix.command, 'berth policy set --project shop --port 443 8443 9443');

    // Without a project the org's policy is the one to widen; ports not set are the defaults, kept.
    const loose = await taskIn('task_hint00000002', null);
    const orgPort = await a.hintFor(storm(loose, 'api.example.com', 'deny:org:port:8080', 8080), null);
    assert.deepEqual(orgPort.fix, { kind: 'policy', project: null, field: 'allowPorts', add: 8080, label: 'Allow port 8080 for the org', command: 'berth policy set --port 80 443 8080' });
  });

  test('a name that resolves privately points at the trusted networks; refusals no policy can lift say what to do instead', async () => {
    const id = await taskIn('task_hint00000003', 'shop');
    const a = advisor();
    const priv = await a.hintFor(storm(id, 'git.corp.example', 'deny:private-address:10.20.30.40'), { phase: 'check', cmd: 'npm test' });
    assert.deepEqual(priv.fix, { kind: 'trusted-network', cidr: '10.20.30.40/32', command: 'berth up --trusted-network 10.20.30.40/32' });
    assert.match(priv.message, /^`npm test` \(check\) tried to reach git\.corp\.example:443 40 times in 12s: refused by deny:private-address:10\.20\.30\.40; git\.corp\.example resolves to a private address; if it is on your company's network, the instance administrator can trust it: `berth up --trusted-network 10\.20\.30\.40\/32`$/);
    assert.match((await a.hintFor(storm(id, '1.1.1.1', 'deny:firewall:direct-connection'), null)).message, /direct connections are refused: the tool must go through the egress proxy/);
    assert.match((await a.hintFor(storm(id, '1.1.1.1', 'deny:ip-address'), null)).message, /raw addresses are never reachable/);
    // What the sandbox sent as a host name cannot reach a terminal as control characters or a shell as a command.
    const hostile = await a.hintFor(storm(id, "evil\u001b[2J'; rm -rf ~", 'deny:invalid-host'), null);
    assert.doesNotMatch(hostile.message, /\u001b/);
    assert.equal(hostile.fix.kind, 'none');
    // A command with control characters and backticks: one line, and its code span stays one.
    const odd = await a.hintFor(storm(id, 'pkgs.corp.example', 'deny:org:not-allowed'), { phase: 'setup', cmd: 'echo `id`\u001b[2J\n  && make' });
    assert.match(odd.message, /^`echo \?id\?\?\[2J && make` \(setup\) tried to reach/);
    assert.equal(odd.message.split('`').length, 5, 'two code spans: the command and the fix');
  });
});

describe('a real task whose setup or check only meets refusals', () => {
  let t: TestBerth;
  let bare: string;
  // npm as the issue saw it, retried until it works: npm itself gives up on a 403 after two
  // requests, so the retrying is a loop around it, as setup scripts for flaky networks have.
  const NPM = 'until npm install --no-audit --no-fund left-pad; do sleep 0.2; done';
  // A name the policy allows that resolves to an address on the company's network.
  const PRIVATE = 'while :; do curl -s -o /dev/null https://git.corp.example/; sleep 0.05; done';

  let model: ModelServer;
  /** What the built-in agent's model was told its command gave. */
  const toldModel: string[] = [];

  before(async () => {
    bare = (await createBareRepo({ root, name: 'shop.git', files: { 'README.md': 'shop\n' } })).path;
    model = await startModelServer([
      { text: 'Fetching left-pad.', toolCalls: [{ name: 'run_command', args: { command: 'while :; do curl -s -o /dev/null https://registry.npmjs.org/left-pad; sleep 0.05; done' } }] },
      (req) => {
        toldModel.push(req.lastToolResult ?? '');
        return { toolCalls: [{ name: 'finish', args: { summary: 'The registry is refused here; the hint says how to allow it.' } }] };
      },
    ], { apiKey: 'sk-denials-model-key-0123456789' });
    t = await startTestBerth({
      modelEnv: { OPENAI_BASE_URL: model.url, OPENAI_API_KEY: 'sk-denials-model-key-0123456789', BERTH_MODEL: 'gpt-4o-mini' },
      denialStorms: { threshold: 6, failFastMs: 4_000, gapMs: 60_000 },
      network: { resolver: async (host) => (host === 'git.corp.example' ? ['10.20.30.40'] : Promise.reject(Object.assign(new Error(`no such host ${host}`), { code: 'ENOTFOUND' }))) },
    });
    assert.equal((await t.cli(['project', 'create', 'shop', '--repo', bare])).code, 0);
    assert.equal((await t.cli(['policy', 'set', '--preset', 'pypi', '--allow-domain', 'git.corp.example'])).code, 0);
  });
  after(async () => {
    await t?.destroy();
    await model?.close();
  });

  const shown = async (id: string) => (await t.api('GET', `/api/orgs/default/tasks/${id}`)).body;
  const transcript = async (id: string) => (await t.api('GET', `/api/orgs/default/tasks/${id}/events`)).body.items.map((e: { data: Record<string, unknown> }) => e.data);

  test('npm install retrying a refused registry: cut short with the hint, in berth run, the transcript and task logs', async () => {
    const r = await t.cli(['run', 'Add left-pad', '--project', 'shop', '--agent', 'command', '--command', 'true', '--setup', NPM]);
    assert.equal(r.code, 1, `stdout: ${r.stdout}\nstderr: ${r.stderr}`);
    const hint = /‼ `until npm install --no-audit --no-fund left-pad; do sleep 0\.2; done` \(setup\) tried to reach registry\.npmjs\.org:443 6 times in \S+: refused by deny:org:not-allowed; allow it with `berth policy set --project shop --preset pypi npm`\n/;
    assert.match(r.stderr, hint);
    assert.equal(r.stderr.match(/‼/g)!.length, 1, 'said once');
    const id = /task (task_[0-9a-z]{12})/.exec(r.stderr)![1]!;
    const done = await shown(id);
    assert.equal(done.state, 'failed');
    assert.match(done.stateReason, /^setup command `until npm install[^`]*` was stopped by Berth after (\d+) refusals of registry\.npmjs\.org:443 in \S+, nothing let through meanwhile: `until npm[^`]*` \(setup\) tried to reach registry\.npmjs\.org:443 6 times in \S+: refused by deny:org:not-allowed; allow it with `berth policy set --project shop --preset pypi npm`$/);
    assert.ok(Number(/after (\d+) refusals/.exec(done.stateReason)![1]) >= 6);
    assert.match(r.stderr, /✖ task_\w+ failed: setup command `until npm install/);

    const events = await transcript(id);
    const hints = events.filter((e: { type: string }) => e.type === 'denials');
    assert.equal(hints.length, 1);
    assert.deepEqual(hints[0].fix, { kind: 'policy', project: 'shop', field: 'presets', add: 'npm', label: 'Use preset npm for project shop', command: 'berth policy set --project shop --preset pypi npm' });
    assert.deepEqual([hints[0].host, hints[0].port, hints[0].rule, hints[0].count, hints[0].phase], ['registry.npmjs.org', 443, 'deny:org:not-allowed', 6, 'setup']);
    // The command's own record says it was stopped, with what it printed up to then.
    const setup = events.find((e: { type: string; phase?: string }) => e.type === 'command' && e.phase === 'setup');
    assert.match(setup.output, /\[berth: stopped by Berth after \d+ refusals of registry\.npmjs\.org:443/);
    assert.notEqual(setup.exitCode, 0);

    // task logs on a terminal: the hint stands out (bold yellow).
    const logs = await t.cli(['task', 'logs', id], { env: { FORCE_COLOR: '1' } });
    assert.match(logs.stdout, /\u001b\[1m\u001b\[33m‼ `until npm install/);
    const plain = await t.cli(['task', 'logs', id], { env: { NO_COLOR: '1' } });
    assert.match(plain.stdout, / ‼ `until npm install[^\n]*--preset pypi npm`\n/);
    assert.doesNotMatch(plain.stdout, /\u001b/);

    // What the hint says works: the org keeps pypi, the project gets npm too.
    assert.equal((await t.cli(hints[0].fix.command.split(' ').slice(1))).code, 0);
    const effective = (await t.api('GET', '/api/orgs/default/policies/effective?project=shop')).body.effective;
    assert.deepEqual(effective.presets, ['pypi', 'npm']);
    assert.equal((await t.cli(['policy', 'clear', '--project', 'shop'])).code, 0);
  });

  test('a check that only meets a private address: stopped, the task fails with the hint to trust the network', async () => {
    const r = await t.cli(['run', 'Check the mirror', '--project', 'shop', '--agent', 'command', '--command', 'true', '--check', PRIVATE]);
    assert.equal(r.code, 1, `stdout: ${r.stdout}\nstderr: ${r.stderr}`);
    assert.match(r.stderr, /‼ `while :; do curl [^`]*` \(check\) tried to reach git\.corp\.example:443 6 times in \S+: refused by deny:private-address:10\.20\.30\.40; git\.corp\.example resolves to a private address; if it is on your company's network, the instance administrator can trust it: `berth up --trusted-network 10\.20\.30\.40\/32`/);
    const id = /task (task_[0-9a-z]{12})/.exec(r.stderr)![1]!;
    const done = await shown(id);
    assert.equal(done.state, 'failed');
    assert.match(done.stateReason, /^check `while :; do curl [^`]*` was stopped by Berth after \d+ refusals of git\.corp\.example:443 in \S+, nothing let through meanwhile: .*`berth up --trusted-network 10\.20\.30\.40\/32`$/);
    const events = await transcript(id);
    // Not sent back to the agent: another try would meet the same refusals.
    assert.equal(events.filter((e: { type: string }) => e.type === 'check').length, 1);
    assert.equal(events.filter((e: { type: string }) => e.type === 'denials').length, 1);
  });

  test('a tool that gives up by itself keeps its own exit; the command agent is only named in the hint, never stopped', async () => {
    // Refusals, then the tool gives up by itself: the hint is said, the setup's own exit stands.
    const loop = 'for i in $(seq 1 15); do curl -s -o /dev/null https://blocked.example/; done; echo gave-up; exit 3';
    const r = await t.cli(['run', 'Try', '--project', 'shop', '--agent', 'command', '--command', 'true', '--setup', loop]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /‼ `for i in [^`]*` \(setup\) tried to reach blocked\.example:443 6 times in \S+: refused by deny:org:not-allowed; allow it with `berth policy set --project shop --allow-domain git\.corp\.example blocked\.example`/);
    const id = /task (task_[0-9a-z]{12})/.exec(r.stderr)![1]!;
    assert.match((await shown(id)).stateReason, /^setup command `for i in [^`]*` exited with 3: fix it in/);

    // The agent's own command keeps running past the fail-fast window: it is the agent, not a step.
    const agent = 'for i in $(seq 1 60); do curl -s -o /dev/null https://blocked.example/; sleep 0.1; done; echo agent-done > done.txt';
    const a = await t.cli(['run', 'Agent', '--project', 'shop', '--agent', 'command', '--command', agent]);
    assert.equal(a.code, 0, a.stderr);
    assert.match(a.stderr, /‼ `for i in \$\(seq 1 60\)[^`]*` \(agent\) tried to reach blocked\.example:443 6 times/);
    const agentTask = await waitFor('the agent task', async () => shown(/task (task_[0-9a-z]{12})/.exec(a.stderr)![1]!));
    assert.equal(agentTask.state, 'succeeded', agentTask.stateReason);
  });

  test("the built-in agent's command that only meets refusals is stopped, and the agent reads the hint as its result", async () => {
    const r = await t.cli(['run', 'Add left-pad', '--project', 'shop']);
    assert.match(r.stderr, /‼ `while :; do curl [^`]*` \(agent\) tried to reach registry\.npmjs\.org:443 6 times in \S+: refused by deny:org:not-allowed; allow it with `berth policy set --project shop --preset pypi npm`/);
    const id = /task (task_[0-9a-z]{12})/.exec(r.stderr)![1]!;
    const done = await shown(id);
    // The task goes on: the agent decides what to do with the hint (here, it finishes).
    assert.equal(done.summary, 'The registry is refused here; the hint says how to allow it.');
    assert.equal(toldModel.length, 1);
    assert.match(toldModel[0]!, /stopped by Berth after \d+ refusals of registry\.npmjs\.org:443 in \S+, nothing let through meanwhile: .*allow it with `berth policy set --project shop --preset pypi npm`/);
  });
});
