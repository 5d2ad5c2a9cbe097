// sandbox: none
// A repository without a project gets a transient one (issue #17): a one-off task, and a
// campaign for its repositories without a project, may name the environment's image, domains
// it may reach besides the org's policy, and the org secret holding the forge token. The image
// is anyone's; the domains widen the policy and the token is sent to a host the task names, so
// both are an admin's. A secret named as a forge token is the host's only: never an
// environment's variable. The fake GitHub (its REST wire protocol and git over HTTP) checks
// the token; the fake runner's image catalogue says which image an environment was made from.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { TokenService } from '../src/server/auth.ts';
import { fakeImages, FakeRunner } from './fakes/fake-runner.ts';
import { startFakeGitHub, type FakeGitHub } from './fakes/github.ts';
import { runGit } from './fakes/git-server.ts';
import { apiAs, startTestBerth, waitFor, type TestBerth } from './helpers.ts';

const TOKEN = 'ghp_one_off_campaign_token_0123456789';
const TOOLS = 'acme/tools:1';
let t: TestBerth;
let github: FakeGitHub;
let root: string;
let member: ReturnType<typeof apiAs>;

const ended = (id: string) =>
  waitFor(`task ${id} to end`, async () => {
    const r = await t.api('GET', `/api/orgs/default/tasks/${id}`);
    return ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(r.body.state) ? r.body : null;
  }, 60_000);

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'berth-one-off-'));
  github = await startFakeGitHub({ tokens: [TOKEN] });
  const fake = new FakeRunner({ images: fakeImages(['default', TOOLS], join(root, 'images')), dir: join(root, 'fake-runner') });
  t = await startTestBerth({ fake, taskConcurrency: 4 });
  assert.equal((await t.api('PUT', '/api/orgs/default/secrets/CAMPAIGN_GH', { value: TOKEN })).status, 200);
  assert.equal((await t.api('PUT', '/api/orgs/default/secrets/PLAIN_VAR', { value: 'plain-value' })).status, 200);
  // The org's own policy: one domain and a preset, which a one-off task's environment keeps.
  assert.equal((await t.api('PATCH', '/api/orgs/default/policies/org', { allowDomains: ['example.org'], presets: ['npm'] })).status, 200);
  const m = await t.api('PUT', '/api/orgs/default/members/mia%40example.com', { role: 'member' });
  assert.equal(m.status, 200, JSON.stringify(m.body));
  member = apiAs(t, (await new TokenService(t.berth.database.db).create({ kind: 'user', userId: m.body.userId, name: "mia's sign-in" })).token);
});

after(async () => {
  await t?.destroy();
  await github?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('a one-off task\'s transient project', () => {
  test('refused, and nothing made: a member widening the policy or naming a token, a secret that does not exist, with a project', async () => {
    await github.createRepo('acme/refused', { 'a.txt': 'a\n' });
    const repo = github.repoUrl('acme/refused');
    const base = { goal: 'bump', repo, agent: 'command', command: 'true' };
    const count = async () => (await t.berth.database.db.selectFrom('tasks').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow()).n;
    const before = await count();

    const widen = await member('POST', '/api/orgs/default/tasks', { ...base, allowDomains: ['evil.example'] });
    assert.equal(widen.status, 403, JSON.stringify(widen.body));
    assert.match(widen.body.error.message, /only admins/);
    const token = await member('POST', '/api/orgs/default/tasks', { ...base, forge: { tokenSecret: 'CAMPAIGN_GH' } });
    assert.equal(token.status, 403, JSON.stringify(token.body));
    assert.match(token.body.error.message, /send an org secret to the repository's host/);
    const missing = await t.api('POST', '/api/orgs/default/tasks', { ...base, forge: { kind: 'github', tokenSecret: 'NO_SUCH_SECRET' } });
    assert.equal(missing.status, 400, JSON.stringify(missing.body));
    assert.match(missing.body.error.message, /no org secret 'NO_SUCH_SECRET': set it first with `berth secret set NO_SUCH_SECRET`/);
    const bad = await t.api('POST', '/api/orgs/default/tasks', { ...base, allowDomains: ['not a domain'] });
    assert.equal(bad.status, 400, JSON.stringify(bad.body));
    const made = await t.api('POST', '/api/orgs/default/projects', { name: 'has-one', repoUrl: repo });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const withProject = await t.api('POST', '/api/orgs/default/tasks', { goal: 'bump', project: 'has-one', agent: 'command', command: 'true', image: TOOLS });
    assert.equal(withProject.status, 400, JSON.stringify(withProject.body));
    assert.match(withProject.body.error.message, /a one-off task's/);
    // A member's campaign has no repository without a project: those settings are refused there too.
    const campaign = await member('POST', '/api/orgs/default/campaigns', { name: 'mia-image', goal: 'bump', agent: 'command', command: 'true', repos: [repo], image: TOOLS });
    assert.equal(campaign.status, 403, JSON.stringify(campaign.body));
    assert.match(campaign.body.error.message, /only an admin's campaign may name/);
    assert.equal(await count(), before, 'no task was made');
    assert.equal((await t.api('GET', '/api/orgs/default/campaigns')).body.items.length, 0);
  });

  test("an admin's: the image it names, the org's policy plus its domains, its token at the forge and never in an environment", async () => {
    await github.createRepo('acme/one-off', { 'a.txt': 'a\n' });
    // The agent waits for the test to have read its environment's policy.
    const go = join(root, 'go');
    const res = await t.api('POST', '/api/orgs/default/tasks', {
      goal: 'bump a.txt',
      repo: github.repoUrl('acme/one-off'),
      agent: 'command',
      command: `while [ ! -e ${go} ]; do sleep 0.1; done; echo bumped >> a.txt`,
      check: 'true',
      image: TOOLS,
      allowDomains: ['registry.example.com', '*.pkg.example.com'],
      forge: { kind: 'github', apiUrl: github.apiUrl, tokenSecret: 'CAMPAIGN_GH' },
    });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.deepEqual(res.body.oneOff, { image: TOOLS, allowDomains: ['registry.example.com', '*.pkg.example.com'], forge: { kind: 'github', apiUrl: github.apiUrl, tokenSecret: 'CAMPAIGN_GH' } });
    const running = await waitFor('the agent to run', async () => {
      const r = await t.api('GET', `/api/orgs/default/tasks/${res.body.id}`);
      return r.body.state === 'running' && r.body.step === 'agent' ? r.body : null;
    });
    const env = await t.api('GET', `/api/orgs/default/environments/${running.environmentId}`);
    assert.equal(env.body.image, TOOLS, 'made from the image the task named');
    const policy = await t.api('GET', `/api/orgs/default/policies/effective?environment=${running.environmentId}`);
    assert.equal(policy.status, 200, JSON.stringify(policy.body));
    assert.deepEqual([...policy.body.effective.allowDomains].sort(), ['*.pkg.example.com', 'example.org', 'registry.example.com']);
    assert.deepEqual(policy.body.effective.presets, ['npm'], "the org's preset is kept");
    await writeFile(go, '');

    const done = await ended(res.body.id);
    assert.equal(done.state, 'succeeded', done.stateReason);
    const pull = github.pulls.find((p) => p.repository === 'acme/one-off');
    assert.ok(pull, 'a pull request was opened');
    assert.equal(pull.token, TOKEN, 'with the token the task named');
    assert.equal(done.changeRequest.number, pull.number);
    const text = await runGit(['--git-dir', join(github.root, 'acme/one-off.git'), 'show', `${done.branch}:a.txt`], { cwd: github.root });
    assert.equal(text, 'a\nbumped\n');

    // A retry keeps its transient project; a member may not retry it into theirs.
    const retried = await t.api('POST', `/api/orgs/default/tasks/${res.body.id}/retry`, {});
    assert.equal(retried.status, 201, JSON.stringify(retried.body));
    assert.deepEqual(retried.body.oneOff, res.body.oneOff);
    await t.api('POST', `/api/orgs/default/tasks/${retried.body.id}/cancel`, {});
  });

  test("a secret named as a one-off task's forge token is no project environment's variable", async () => {
    // It names both: it gets the one no forge setting names.
    const made = await t.api('POST', '/api/orgs/default/projects', { name: 'other', repoUrl: github.repoUrl('acme/one-off'), secrets: ['PLAIN_VAR', 'CAMPAIGN_GH'] });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const names = (await t.api('GET', '/api/orgs/default/projects/other')).body.receives;
    assert.ok(names.variables.includes('PLAIN_VAR'), JSON.stringify(names));
    assert.ok(!names.variables.includes('CAMPAIGN_GH'), JSON.stringify(names));
  });
});

describe("a campaign's repositories without a project", () => {
  test("take the campaign's image, domains and token; its pull requests are opened and read with that token", async () => {
    const repos: string[] = [];
    for (const name of ['cmp-0', 'cmp-1']) {
      await github.createRepo(`acme/${name}`, { 'a.txt': 'a\n' });
      repos.push(github.repoUrl(`acme/${name}`));
    }
    const res = await t.api('POST', '/api/orgs/default/campaigns', {
      name: 'transient',
      goal: 'bump a.txt',
      repos,
      agent: 'command',
      command: 'echo bumped >> a.txt',
      check: 'true',
      concurrency: 2,
      forgeRate: '20/s',
      image: TOOLS,
      allowDomains: ['registry.example.com'],
      forge: { kind: 'github', apiUrl: github.apiUrl, tokenSecret: 'CAMPAIGN_GH' },
    });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.deepEqual(res.body.invalid, []);
    const shown = await waitFor('the campaign to finish', async () => {
      const s = await t.api('GET', '/api/orgs/default/campaigns/transient');
      return s.body.state === 'done' ? s.body : null;
    }, 60_000);
    assert.equal(shown.counts.succeeded, 2, JSON.stringify(shown));
    assert.equal(shown.settings.image, TOOLS);
    assert.deepEqual(shown.settings.allowDomains, ['registry.example.com']);
    assert.deepEqual(shown.settings.forge, { kind: 'github', apiUrl: github.apiUrl, tokenSecret: 'CAMPAIGN_GH' });
    for (const name of ['cmp-0', 'cmp-1']) {
      const pulls = github.pulls.filter((p) => p.repository === `acme/${name}`);
      assert.equal(pulls.length, 1);
      assert.equal(pulls[0]!.token, TOKEN);
    }
    const tasks = await t.berth.database.db.selectFrom('tasks').select(['one_off']).where('triggered_by', '=', `campaign:${shown.id}`).execute();
    assert.equal(tasks.length, 2);
    for (const task of tasks) assert.deepEqual(task.one_off, { image: TOOLS, allowDomains: ['registry.example.com'], forge: { kind: 'github', apiUrl: github.apiUrl, tokenSecret: 'CAMPAIGN_GH' } });
    // Reading the pull requests back from GitHub uses the campaign's token too.
    const from = github.apiRequests.length;
    assert.equal(await t.berth.campaignForge.refresh(shown.id), 2);
    const reads = github.apiRequests.slice(from).filter((q) => q.method === 'GET' && /^\/repos\/acme\/cmp-\d\/pulls\/\d+$/.test(q.path));
    assert.equal(reads.length, 2);
  });
});

describe('the CLI', () => {
  test('campaign create and run take --image, --allow-domain, --forge, --forge-url and --token-secret; show says them', async () => {
    await github.createRepo('acme/cli-0', { 'a.txt': 'a\n' });
    const repo = github.repoUrl('acme/cli-0');
    const flags = ['--image', TOOLS, '--allow-domain', 'registry.example.com', '--allow-domain', 'cdn.example.com', '--forge', 'github', '--forge-url', github.apiUrl, '--token-secret', 'CAMPAIGN_GH'];
    const made = await t.cli(['campaign', 'create', '--name', 'cli-transient', '--goal', 'bump', '--repo', repo, '--agent', 'command', '--command', 'echo bumped >> a.txt', '--forge-rate', '20/s', ...flags]);
    assert.equal(made.code, 0, made.stderr);
    const shown = await t.cli(['campaign', 'show', 'cli-transient']);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, new RegExp(`no proj\\. +image ${TOOLS}; also reach registry\\.example\\.com, cdn\\.example\\.com; forge github ${github.apiUrl.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}, token from secret CAMPAIGN_GH`));

    const run = await t.cli(['run', 'bump again', '--repo', repo, '--agent', 'command', '--command', 'true', '--detach', '--json', ...flags]);
    assert.equal(run.code, 0, run.stderr);
    const task = JSON.parse(run.stdout);
    assert.deepEqual(task.oneOff, { image: TOOLS, allowDomains: ['registry.example.com', 'cdn.example.com'], forge: { kind: 'github', apiUrl: github.apiUrl, tokenSecret: 'CAMPAIGN_GH' } });
    const show = await t.cli(['task', 'show', task.id]);
    assert.match(show.stdout, /one-off +image acme\/tools:1; also reaches registry\.example\.com, cdn\.example\.com; forge github/);
    await t.api('POST', `/api/orgs/default/tasks/${task.id}/cancel`, {});

    const wrong = await t.cli(['run', 'x', '--project', 'other', '--image', TOOLS]);
    assert.equal(wrong.code, 2, wrong.stderr);
    assert.match(wrong.stderr, /a one-off task's \(--repo\)/);
    const badForge = await t.cli(['run', 'x', '--repo', repo, '--forge', 'bitbucket']);
    assert.notEqual(badForge.code, 0);
    assert.match(badForge.stderr, /--forge is github, gitlab or git, not 'bitbucket'/);
  });
});
