// sandbox: none
// kill -9 of the control plane in the middle of a campaign: started again on the same data
// dir (and database), it finishes the campaign with no second task for any target's attempt
// and no second campaign commit on any repository's branch. The control plane runs in a
// process of its own (test/fixtures/campaign-control-plane.ts, the fake runner in it).
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { sql } from 'kysely';
import { openDatabase } from '../src/server/db/index.ts';
import { createBareRepo, runGit } from './fakes/git-server.ts';
import { apiAs, REPO, seedEmbeddedDatabase, waitFor } from './helpers.ts';
import { freshDatabase, ON_POSTGRES } from './postgres.ts';

const REPOS = 30;
const root = await mkdtemp(join(tmpdir(), 'berth-campaigns-restart-'));
const dataDir = join(root, 'data');
const database = ON_POSTGRES ? await freshDatabase() : undefined;
let child: ChildProcess | undefined;

async function start(): Promise<{ api: ReturnType<typeof apiAs> }> {
  const c = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', join(REPO, 'test', 'fixtures', 'campaign-control-plane.ts')], {
    env: { ...process.env, CAMPAIGN_DATA_DIR: dataDir, ...(database ? { CAMPAIGN_DATABASE_URL: database.url } : {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child = c;
  let out = '';
  let err = '';
  c.stdout!.on('data', (d) => (out += d));
  c.stderr!.on('data', (d) => (err += d));
  const line = await waitFor('the control plane to start', async () => {
    if (c.exitCode !== null) throw new Error(`the control plane exited (${c.exitCode}): ${err}`);
    return out.split('\n').find((l) => l.startsWith('{'));
  }, 120_000);
  const { url, token } = JSON.parse(line) as { url: string; token: string };
  return { api: apiAs({ client: { url } as never }, token) };
}

async function kill9(): Promise<void> {
  const c = child!;
  c.kill('SIGKILL');
  if (c.exitCode === null && c.signalCode === null) await new Promise((r) => c.on('close', r));
}

after(async () => {
  if (child && child.exitCode === null && child.signalCode === null) await kill9();
  await database?.drop();
  await rm(root, { recursive: true, force: true });
});

test(`kill -9 in the middle of a campaign over ${REPOS} repositories: after a restart it finishes, no task or push twice`, async () => {
  const template = (await createBareRepo({ root, name: 'template.git', files: { 'a.txt': 'a\n' } })).path;
  const repos: string[] = [];
  for (let i = 0; i < REPOS; i++) {
    repos.push(join(root, `r${i}.git`));
    await cp(template, repos[i]!, { recursive: true });
  }
  if (!database) {
    await (await import('node:fs/promises')).mkdir(dataDir, { recursive: true });
    await seedEmbeddedDatabase(dataDir);
  }

  let { api } = await start();
  const made = await api('POST', '/api/orgs/default/campaigns', { name: 'restart', goal: 'bump a.txt', repos, agent: 'command', command: 'sleep 3; echo bumped >> a.txt', concurrency: 4 });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  const id = made.body.campaign.id as string;
  // In the middle: some finished, one at least with its agent at work, most not started.
  let interrupted = '';
  const before = await waitFor('the campaign to be in the middle', async () => {
    const c = (await api('GET', '/api/orgs/default/campaigns/restart')).body;
    if (c.counts.succeeded < 6) return null;
    for (const tg of (await api('GET', '/api/orgs/default/campaigns/restart/targets?state=running')).body.items as any[]) {
      const task = (await api('GET', `/api/orgs/default/tasks/${tg.taskId}`)).body;
      if (task.state === 'running' && task.step === 'agent') {
        interrupted = tg.repo;
        return c;
      }
    }
    return null;
  }, 150_000);
  await kill9();
  console.log(`killed with ${JSON.stringify(before.counts)}`);

  ({ api } = await start());
  const done = await waitFor('the campaign to finish after the restart', async () => {
    const c = (await api('GET', '/api/orgs/default/campaigns/restart')).body;
    return c.state === 'done' ? c : null;
  }, 170_000);
  const targets = (await api('GET', '/api/orgs/default/campaigns/restart/targets?limit=1000')).body.items as any[];
  console.log(`after the restart: ${JSON.stringify(done.counts)}; ${JSON.stringify(targets.filter((t) => t.state !== 'succeeded' || t.attempts > 1).map((t) => ({ repo: t.repo.split('/').pop(), state: t.state, attempts: t.attempts, reason: t.reason })))}`);
  child!.kill('SIGINT');
  await new Promise((r) => child!.on('close', r));

  const handle = await openDatabase({ dataDir, databaseUrl: database?.url });
  try {
    const keys = await handle.db.selectFrom('tasks').select(['trigger_key', sql<string>`count(*)`.as('n')]).where('triggered_by', '=', `campaign:${id}`).groupBy('trigger_key').execute();
    assert.deepEqual(keys.filter((k) => Number(k.n) > 1), [], 'one task per target and attempt');
    assert.ok(keys.length >= REPOS, `${keys.length} tasks`);
  } finally {
    await handle.close();
  }
  assert.equal(done.counts.succeeded + done.counts.failed, REPOS);
  for (const repo of repos) {
    const branch = (await runGit(['--git-dir', repo, 'for-each-ref', '--format=%(refname:short)', 'refs/heads'], { cwd: root })).trim().split('\n').sort();
    assert.deepEqual(branch, ['berth/campaign/restart', 'main'], repo);
    const commits = Number((await runGit(['--git-dir', repo, 'rev-list', '--count', 'main..berth/campaign/restart'], { cwd: root })).trim());
    assert.equal(commits, 1, `${repo}: one campaign commit`);
    assert.equal((await runGit(['--git-dir', repo, 'show', 'berth/campaign/restart:a.txt'], { cwd: root })).trim(), 'a\nbumped', repo);
  }
  assert.equal(done.counts.succeeded, REPOS, 'every repository done');
  // The task whose agent the kill stopped failed (the restart says why), and its repository was tried again.
  const again = targets.find((t) => t.repo === interrupted)!;
  assert.equal(again.attempts, 2, JSON.stringify(again));
});
