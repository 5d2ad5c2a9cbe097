// Projects can be shown, changed and removed (archived when tasks refer to them); a task's
// red change is merged only on purpose; `berth run --setup`, `task continue`, the output in
// `task logs` and the filters and cursor of `task list` (issue #12, "Projects and tasks").
// sandbox: none (test/fakes/fake-runner.ts; scripts/test.ts runs these more at once)
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { TokenService } from '../src/server/auth.ts';
import { createBareRepo, refSha, runGit } from './fakes/git-server.ts';
import { startTestBerth, waitFor, type TestBerth } from './helpers.ts';

let t: TestBerth;
let root: string;
let orgId: string;
let adminToken: string;
let adminActor: string;

/** A call as an org admin who is not an instance administrator. */
async function asAdmin(method: string, path: string, body?: unknown) {
  const res = await fetch(`${t.client.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

const REMOTE = 'http://127.0.0.1:9/acme/shop.git';
let seq = 0;

/** An ended task row written straight to the table (the worker claims only queued ones). */
async function insertTask(o: { project?: string | null; repo?: string; trigger?: string; createdBy?: string; branch?: string; baseBranch?: string; checksPassed?: boolean | null; draft?: boolean; createdAt?: string; state?: 'succeeded' | 'failed' }) {
  const id = `task_ptc${String(++seq).padStart(9, '0')}`;
  await t.berth.database.db
    .insertInto('tasks')
    .values({
      id,
      org_id: orgId,
      project_id: o.project ?? null,
      repo_url: o.repo ?? REMOTE,
      base_branch: o.baseBranch ?? 'main',
      goal: `goal of ${id}`,
      agent: 'command',
      command: 'true',
      model: null,
      budget: JSON.stringify({ maxSteps: 1, maxTokens: null, maxCostUsd: null, timeoutMs: 60_000, maxCheckRetries: 0 }),
      check_command: null,
      state: o.state ?? 'succeeded',
      trigger: o.trigger ?? 'api',
      created_by: o.createdBy ?? 'token:someone-else',
      branch: o.branch ?? null,
      checks_passed: o.checksPassed ?? null,
      change_request: o.branch ? JSON.stringify({ kind: 'berth', url: null, number: null, draft: o.draft ?? false }) : null,
      ...(o.createdAt ? { created_at: o.createdAt } : {}),
    } as never)
    .execute();
  return id;
}

const audit = async (action: string) => (await t.api('GET', `/api/orgs/default/audit?action=${action}`)).body.items as { actor: string; target: string | null; details: Record<string, unknown> }[];

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'berth-ptc-'));
  // No task runs here unless a test starts one (those are written as ended rows).
  t = await startTestBerth({ fake: true, taskConcurrency: 0 });
  orgId = (await t.api('GET', '/api/orgs')).body.items.find((o: { name: string }) => o.name === 'default').id;
  const member = await t.api('PUT', '/api/orgs/default/members/admin@ptc.example', { role: 'admin' });
  assert.equal(member.status, 200, JSON.stringify(member.body));
  adminToken = (await new TokenService(t.berth.database.db).create({ kind: 'user', userId: member.body.userId, name: 'org admin' })).token;
  adminActor = `user:${member.body.userId}`;
});
after(async () => {
  await t?.destroy();
  await rm(root, { recursive: true, force: true });
});

describe('projects', () => {
  test('create needs a repository: the CLI and the API say so and make nothing', async () => {
    const r = await t.cli(['project', 'create', 'norepo', '--check', 'npm test']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--repo/);
    const api = await t.api('POST', '/api/orgs/default/projects', { name: 'norepo' });
    assert.equal(api.status, 400, JSON.stringify(api.body));
    assert.match(api.body.error.message, /needs its repository/);
    const blank = await t.api('POST', '/api/orgs/default/projects', { name: 'norepo', repoUrl: '  ' });
    assert.equal(blank.status, 400, JSON.stringify(blank.body));
    assert.equal((await t.api('GET', '/api/orgs/default/projects/norepo')).status, 404);
  });

  test('show and update: every setting create takes, the rest kept; --unset clears one', async () => {
    let r = await t.cli(['project', 'create', 'shop', '--repo', REMOTE, '--image', 'debian:12', '--setup', 'npm ci', '--check', 'npm test', '--cpus', '2', '--memory', '2g', '--model', 'gpt-4o-mini']);
    assert.equal(r.code, 0, r.stderr);

    r = await t.cli(['project', 'update', 'shop', '--check', 'npm run test:ci', '--setup', 'npm ci', '--setup', 'npm run build', '--memory', '4g', '--default-branch', 'trunk', '--unset', 'image', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const p = JSON.parse(r.stdout);
    assert.equal(p.defaultBranch, 'trunk');
    assert.equal(p.work.check, 'npm run test:ci');
    assert.deepEqual(p.work.setup, ['npm ci', 'npm run build']);
    assert.deepEqual(p.work.limits, { cpus: 2, memory: '4g' }, 'cpus kept, memory changed');
    assert.equal(p.work.image, undefined, 'the image is back to the repository\'s');
    assert.equal(p.agent.model, 'gpt-4o-mini', 'untouched settings stay');
    assert.equal(p.repoUrl, REMOTE);

    r = await t.cli(['project', 'show', 'shop']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /repository\s+http:\/\/127\.0\.0\.1:9\/acme\/shop\.git @ trunk/);
    assert.match(r.stdout, /setup\s+npm ci && npm run build/);
    assert.match(r.stdout, /check\s+npm run test:ci/);
    assert.match(r.stdout, /limits\s+2 CPUs, 4g memory/);
    assert.match(r.stdout, /model gpt-4o-mini/);

    // The API: a JSON merge patch; a bad value names its field and changes nothing.
    let res = await t.api('PATCH', '/api/orgs/default/projects/shop', { work: { limits: { cpus: -1 } } });
    assert.equal(res.status, 400, JSON.stringify(res.body));
    assert.match(res.body.error.message, /cpus/);
    res = await t.api('PATCH', '/api/orgs/default/projects/shop', { agent: { model: null, kind: 'command', command: 'make fix' }, secrets: ['SHARED'] });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body.agent, { kind: 'command', command: 'make fix' });
    assert.deepEqual(res.body.secrets, ['SHARED']);
    assert.equal(res.body.work.check, 'npm run test:ci');
    assert.equal((await t.api('PATCH', '/api/orgs/default/projects/shop', {})).status, 400, 'nothing to change');
    r = await t.cli(['project', 'update', 'shop']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /nothing to change/);
    assert.equal((await t.api('PATCH', '/api/orgs/default/projects/nope', { defaultBranch: 'x' })).status, 404);

    // A rename onto another project's name is a conflict; a free name works.
    assert.equal((await t.cli(['project', 'create', 'other', '--repo', REMOTE])).code, 0);
    res = await t.api('PATCH', '/api/orgs/default/projects/other', { name: 'shop' });
    assert.equal(res.status, 409, JSON.stringify(res.body));
    r = await t.cli(['project', 'update', 'other', '--name', 'other2']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await t.api('GET', '/api/orgs/default/projects/other2')).status, 200);

    const updates = await audit('project.update');
    assert.ok(updates.some((e) => e.target === 'shop'), JSON.stringify(updates));
  });

  test('a new repository passes the same check as on create: a host path is an instance administrator\'s', async () => {
    const bare = await createBareRepo({ root, name: 'local.git', files: { 'README.md': 'x\n' } });
    assert.equal((await asAdmin('POST', '/api/orgs/default/projects', { name: 'adm', repoUrl: REMOTE })).status, 201);
    let res = await asAdmin('PATCH', '/api/orgs/default/projects/adm', { repoUrl: bare.path });
    assert.equal(res.status, 403, JSON.stringify(res.body));
    assert.match(res.body.error.message, /instance administrator/);
    res = await asAdmin('PATCH', '/api/orgs/default/projects/adm', { forge: { apiUrl: 'http://169.254.169.254/api/v3' } });
    assert.equal(res.status, 403, JSON.stringify(res.body));
    assert.equal((await t.api('GET', '/api/orgs/default/projects/adm')).body.repoUrl, REMOTE, 'unchanged');
    assert.deepEqual((await t.api('GET', '/api/orgs/default/projects/adm')).body.forge, {}, 'unchanged');
    const refused = (await audit('repository.refused')).filter((e) => e.actor === adminActor && e.details.attempted === 'project.update');
    assert.equal(refused.length, 2, JSON.stringify(refused));
    // The instance administrator may.
    res = await t.api('PATCH', '/api/orgs/default/projects/adm', { repoUrl: bare.path });
    assert.equal(res.status, 200, JSON.stringify(res.body));
  });

  test('rm deletes an unused project, archives one with tasks (they keep their history), refuses one with environments', async () => {
    assert.equal((await t.cli(['project', 'create', 'unused', '--repo', REMOTE])).code, 0);
    let r = await t.cli(['project', 'rm', 'unused']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /unused deleted/);
    assert.equal((await t.api('GET', '/api/orgs/default/projects/unused')).status, 404);

    // A project with tasks and a secret of its own.
    const created = await t.api('POST', '/api/orgs/default/projects', { name: 'legacy', repoUrl: REMOTE });
    assert.equal(created.status, 201);
    const projectId = created.body.id as string;
    assert.equal((await t.cli(['secret', 'set', 'LEGACY_KEY', '--project', 'legacy'], { input: 'legacy-value-0123456789' })).code, 0);
    const taskId = await insertTask({ project: projectId });

    r = await t.cli(['project', 'rm', 'legacy']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /legacy archived: its 1 task\(s\) keep their history/);
    // Gone from the list and from lookups by name; its secret is deleted; the task still names it.
    assert.ok(!(await t.api('GET', '/api/orgs/default/projects')).body.items.some((p: { name: string }) => p.name === 'legacy'));
    const archived = (await t.api('GET', '/api/orgs/default/projects?archived=1')).body.items.find((p: { id: string }) => p.id === projectId);
    assert.ok(archived?.archivedAt, 'listed with ?archived=1');
    r = await t.cli(['project', 'list', '--archived']);
    assert.match(r.stdout, /legacy/);
    assert.equal((await t.api('GET', '/api/orgs/default/projects/legacy')).status, 404);
    assert.equal((await t.api('GET', `/api/orgs/default/projects/${projectId}`)).body.archivedAt, archived.archivedAt, 'by id it is still there');
    assert.equal((await t.berth.database.db.selectFrom('secrets').select('id').where('project_id', '=', projectId).execute()).length, 0);
    const shown = await t.api('GET', `/api/orgs/default/tasks/${taskId}`);
    assert.equal(shown.body.project, 'legacy');
    assert.equal((await t.api('PATCH', '/api/orgs/default/projects/legacy', { defaultBranch: 'x' })).status, 404);

    // Nothing new runs on it: a task by id, a retry, a follow-up, an environment.
    assert.equal((await t.api('POST', '/api/orgs/default/tasks', { goal: 'x', project: projectId, agent: 'command', command: 'true' })).status, 404);
    let res = await t.api('POST', `/api/orgs/default/tasks/${taskId}/retry`);
    assert.equal(res.status, 409, JSON.stringify(res.body));
    assert.match(res.body.error.message, /project 'legacy' was removed/);
    res = await t.api('POST', `/api/orgs/default/tasks/${taskId}/continue`, { instruction: 'more' });
    assert.equal(res.status, 409, JSON.stringify(res.body));
    assert.equal((await t.api('POST', '/api/orgs/default/environments', { name: 'on-legacy', project: projectId })).status, 404);

    // Its name is free again.
    assert.equal((await t.cli(['project', 'create', 'legacy', '--repo', REMOTE])).code, 0);
    assert.equal((await t.api('GET', `/api/orgs/default/tasks/${taskId}`)).body.project, 'legacy');
    assert.equal((await t.api('GET', '/api/orgs/default/tasks?project=legacy')).body.items.length, 1);

    // An environment still using a project: refused, saying which and what to do.
    // (A row as the environment service writes it: no sandbox is needed to be refused.)
    const legacyId = (await t.api('GET', '/api/orgs/default/projects/legacy')).body.id;
    await t.berth.database.db
      .insertInto('environments')
      .values({ id: 'env_ptcenv000001', org_id: orgId, project_id: legacyId, name: 'busy-env', image: 'default', image_digest: null, state: 'stopped', state_reason: null, cpus: 1, memory_bytes: '536870912', disk_bytes: '1073741824', pids_limit: 512, idle_timeout_ms: null, max_lifetime_ms: null, started_at: null, last_active_at: null } as never)
      .execute();
    r = await t.cli(['project', 'rm', 'legacy']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /still has environments \(busy-env\).*berth env rm/);
    assert.equal((await t.api('GET', '/api/orgs/default/projects/legacy')).status, 200);
  });
});

describe('task approve', () => {
  let bare: string;
  let projectId: string;

  before(async () => {
    bare = (await createBareRepo({ root, name: 'approve.git', files: { 'a.txt': 'a\n' } })).path;
    // A branch with one more commit, as a task would have pushed it.
    const work = await mkdtemp(join(tmpdir(), 'berth-ptc-work-'));
    await runGit(['clone', '-q', bare, work]);
    for (const b of ['berth/red', 'berth/unchecked', 'berth/draft']) {
      await runGit(['checkout', '-q', '-B', b, 'origin/main'], { cwd: work });
      await runGit(['-c', 'user.name=t', '-c', 'user.email=t@example.com', 'commit', '-q', '--allow-empty', '-m', `work on ${b}`], { cwd: work });
      await runGit(['push', '-q', 'origin', b], { cwd: work });
    }
    await rm(work, { recursive: true, force: true });
    projectId = (await t.api('POST', '/api/orgs/default/projects', { name: 'approvals', repoUrl: bare })).body.id;
  });

  test('a red change is refused with the reason and what to do; --force merges it and is on record', async () => {
    const main = await refSha(bare, 'refs/heads/main');
    const red = await insertTask({ project: projectId, repo: bare, branch: 'berth/red', checksPassed: false, draft: true, state: 'failed' });
    let r = await t.cli(['task', 'approve', red]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /not green: its checks failed/);
    assert.match(r.stderr, new RegExp(`berth task approve ${red} --force`));
    assert.equal(await refSha(bare, 'refs/heads/main'), main, 'nothing merged');

    const unchecked = await insertTask({ project: projectId, repo: bare, branch: 'berth/unchecked', checksPassed: null });
    r = await t.cli(['task', 'approve', unchecked]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /no checks ran/);
    const draft = await insertTask({ project: projectId, repo: bare, branch: 'berth/draft', checksPassed: true, draft: true, state: 'failed' });
    const res = await t.api('POST', `/api/orgs/default/tasks/${draft}/approve`, {});
    assert.equal(res.status, 409, JSON.stringify(res.body));
    assert.match(res.body.error.message, /draft/);
    assert.equal(await refSha(bare, 'refs/heads/main'), main, 'nothing merged');
    assert.equal((await audit('task.approve')).length, 0, 'a refusal is no approval');

    r = await t.cli(['task', 'approve', red, '--force']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /merged berth\/red into main \([0-9a-f]{12}\), forced/);
    const merged = await refSha(bare, 'refs/heads/main');
    assert.notEqual(merged, main);
    assert.match(await runGit(['log', '--format=%s', 'main'], { cwd: bare }), /work on berth\/red/);
    const forced = await audit('task.approve_forced');
    assert.equal(forced.length, 1, JSON.stringify(forced));
    assert.equal(forced[0]!.target, red);
    assert.equal(forced[0]!.details.forced, true);
    assert.equal(forced[0]!.details.overridden, 'its checks failed');
    assert.equal((await audit('task.approve')).length, 1);
    const events = (await t.api('GET', `/api/orgs/default/tasks/${red}/events`)).body.items as { data: { type: string; message?: string } }[];
    assert.ok(events.some((e) => e.data.type === 'log' && /although its checks failed \(forced\)/.test(e.data.message ?? '')));
  });
});

describe('task list', () => {
  test('--mine, --trigger, --project and a cursor, on the server', async () => {
    const pid = (await t.api('POST', '/api/orgs/default/projects', { name: 'listed', repoUrl: REMOTE })).body.id;
    // Someone else's, then three of the caller's (queued: no task runs in this suite).
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) ids.push(await insertTask({ project: pid, trigger: 'web', createdAt: `2001-01-01T00:00:0${i}Z` }));
    for (const trigger of ['cli', 'web', 'cli']) {
      const res = await t.api('POST', '/api/orgs/default/tasks', { goal: `mine via ${trigger}`, project: 'listed', agent: 'command', command: 'true', trigger });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      ids.push(res.body.id);
    }
    // ids, oldest first: [other, other, mine cli, mine web, mine cli]

    let r = await t.cli(['task', 'list', '--mine', '--project', 'listed', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).items.map((x: { id: string }) => x.id), [ids[4], ids[3], ids[2]]);
    r = await t.cli(['task', 'list', '--trigger', 'web', '--project', 'listed', '--json']);
    assert.deepEqual(JSON.parse(r.stdout).items.map((x: { id: string }) => x.id), [ids[3], ids[1], ids[0]]);
    r = await t.cli(['task', 'list', '--mine', '--trigger', 'cli', '--json']);
    assert.deepEqual(JSON.parse(r.stdout).items.map((x: { id: string }) => x.id), [ids[4], ids[2]]);

    r = await t.cli(['task', 'list', '--project', 'listed', '--limit', '2']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.includes(ids[4]!) && r.stdout.includes(ids[3]!) && !r.stdout.includes(ids[2]!), r.stdout);
    const cursor = /--cursor (\S+)/.exec(r.stderr)?.[1];
    assert.ok(cursor, r.stderr);
    assert.match(r.stderr, /more: berth task list --project listed --limit 2 --cursor /);
    r = await t.cli(['task', 'list', '--project', 'listed', '--limit', '2', '--cursor', cursor!, '--json']);
    const page = JSON.parse(r.stdout);
    assert.deepEqual(page.items.map((x: { id: string }) => x.id), [ids[2], ids[1]]);
    assert.ok(page.nextCursor);
    r = await t.cli(['task', 'list', '--project', 'listed', '--limit', '2', '--cursor', page.nextCursor]);
    assert.ok(r.stdout.includes(ids[0]!), r.stdout);
    assert.doesNotMatch(r.stderr, /more:/, 'the last page says no more');
  });
});

describe('a real task: berth run --setup, task logs with output, task continue', () => {
  let live: TestBerth;
  let bare: string;

  before(async () => {
    bare = (await createBareRepo({ root, name: 'run.git', files: { 'README.md': 'hello\n' } })).path;
    live = await startTestBerth({ fake: true });
  });
  after(async () => {
    await live?.destroy();
  });

  const shown = async (id: string) => (await live.api('GET', `/api/orgs/default/tasks/${id}`)).body;
  const ended = (id: string) => waitFor(`task ${id} to end`, async () => {
    const body = await shown(id);
    return ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(body.state) ? body : null;
  }, 300_000);

  test('setup commands run in order after the repository\'s; logs show their output, cut to the end unless --full', async () => {
    const setup = ['echo first > /tmp/setup-order', 'echo second >> /tmp/setup-order; seq 101 145'];
    let r = await live.cli(['run', 'Write down the setup order', '--repo', bare, '--agent', 'command', '--command', 'cp /tmp/setup-order order.txt && echo agent-says-done', '--setup', setup[0]!, '--setup', setup[1]!]);
    assert.equal(r.code, 0, `stdout: ${r.stdout}\nstderr: ${r.stderr}`);
    assert.match(r.stderr, /running 2 setup command\(s\)/);
    const id = /task (task_[0-9a-z]{12})/.exec(r.stderr)![1]!;
    const done = await shown(id);
    assert.equal(done.state, 'succeeded', done.stateReason);
    assert.deepEqual(done.setup, setup);
    assert.equal(await runGit(['show', `${done.branch}:order.txt`], { cwd: bare }), 'first\nsecond\n', 'in the order given');

    r = await live.cli(['task', 'logs', id]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /\$ echo first > \/tmp\/setup-order → exit 0/);
    assert.match(r.stdout, /│ agent-says-done\n/, "the agent command's output");
    assert.match(r.stdout, /│ 145\n/);
    assert.match(r.stdout, /… 25 earlier line\(s\); --full shows them/);
    assert.doesNotMatch(r.stdout, /│ 101\n/);
    r = await live.cli(['task', 'logs', id, '--full']);
    assert.match(r.stdout, /│ 101\n[^]*│ 145\n/);
    assert.doesNotMatch(r.stdout, /earlier line/);

    // A follow-up: the goal and the instruction, from its branch, with its setup.
    r = await live.cli(['task', 'continue', id, '  ', '-d']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /say what the agent should do next/);
    r = await live.cli(['task', 'continue', id, 'Also keep the order in a second file', '--json', '-d']);
    assert.equal(r.code, 0, r.stderr);
    const next = JSON.parse(r.stdout);
    assert.notEqual(next.id, id);
    assert.equal(next.goal, `Write down the setup order\n\nFollow-up to ${id} (its work is on branch ${done.branch}):\nAlso keep the order in a second file`);
    assert.equal(next.baseBranch, done.branch);
    assert.deepEqual(next.setup, setup);
    assert.equal(next.agent, 'command');
    assert.equal(next.trigger, 'cli');
    const followed = await ended(next.id);
    assert.equal(followed.state, 'succeeded', followed.stateReason);
    const continued = (await live.api('GET', '/api/orgs/default/audit?action=task.continue')).body.items;
    assert.equal(continued.length, 1);
    assert.equal(continued[0].target, id);
  });
});
