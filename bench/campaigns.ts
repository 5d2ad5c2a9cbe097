// Campaigns (src/server/campaigns) on a real control plane and real sandboxes: one campaign over
// BENCH_CAMPAIGN_REPOS (1,000) local bare repositories with a command agent that edits one file,
// BENCH_CAMPAIGN_CONCURRENCY (8) at once. Prints the wall time, repositories per minute, the
// control plane's peak RSS (this process: it is the control plane), database rows written per
// task, and the time `GET /campaigns/:id` (what `berth campaign show` renders) takes with every
// repository done, against listing the same tasks through `GET /tasks` in the same run.
// Every repository's branch is checked after: one commit each, none lost, none twice.
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { sql } from 'kysely';
import { createBareRepo } from '../test/fakes/git-server.ts';
import { startTestBerth } from '../test/helpers.ts';
import { ON_POSTGRES } from '../test/postgres.ts';
import { summary, time } from './stats.ts';

const REPOS = Number(process.env.BENCH_CAMPAIGN_REPOS ?? 1000);
const CONCURRENCY = Number(process.env.BENCH_CAMPAIGN_CONCURRENCY ?? 8);
const SHOWS = 20;
const execFileAsync = promisify(execFile);

const root = mkdtempSync(join(tmpdir(), 'berth-bench-campaigns-'));
const made = performance.now();
const first = (await createBareRepo({ root, name: 'r0.git', files: { 'VERSION': '1.0.0\n', 'README.md': 'a service\n' } })).path;
const repos = [first];
for (let i = 1; i < REPOS; i++) {
  const path = join(root, `r${i}.git`);
  cpSync(first, path, { recursive: true });
  repos.push(path);
}
const madeMs = performance.now() - made;

const t = await startTestBerth({ taskConcurrency: CONCURRENCY });
let peakRss = process.memoryUsage().rss;
const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 200);
try {
  const db = t.berth.database.db;
  const rows = async () => {
    const counts = await Promise.all(['tasks', 'task_events', 'audit_entries', 'campaign_targets', 'environments'].map(async (table) => [table, Number((await sql<{ n: string }>`select count(*) as n from ${sql.table(table)}`.execute(db)).rows[0]!.n)] as const));
    return Object.fromEntries(counts);
  };
  const before = await rows();
  const rssBefore = process.memoryUsage().rss;
  const started = performance.now();
  const res = await t.api('POST', '/api/orgs/default/campaigns', { name: 'bump-version', goal: 'bump the version', repos, agent: 'command', command: 'echo 1.0.1 > VERSION', concurrency: CONCURRENCY, maxOpenPrs: REPOS });
  if (res.status !== 201) throw new Error(`create: ${res.status} ${JSON.stringify(res.body)}`);
  const id = res.body.campaign.id as string;
  let last = '';
  for (;;) {
    const c = (await t.api('GET', `/api/orgs/default/campaigns/${id}`)).body;
    const line = `${c.counts.succeeded + c.counts.failed}/${c.total} done, ${c.counts.running + c.counts.starting} running, ${c.throughputPerMin ?? '-'} /min`;
    if (line !== last && Math.round((performance.now() - started) / 1000) % 30 === 0) console.log(`  ${((performance.now() - started) / 1000).toFixed(0).padStart(5)} s  ${line}  load ${loadavg()[0]!.toFixed(1)}`);
    last = line;
    if (c.state !== 'running') break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  const wallMs = performance.now() - started;
  const after = await rows();
  const detail = (await t.api('GET', `/api/orgs/default/campaigns/${id}`)).body;

  // Lost or twice: one campaign commit on each repository's branch, one task per repository.
  let branches = 0;
  let extra = 0;
  for (const repo of repos) {
    const r = await execFileAsync('git', ['rev-list', '--count', 'main..berth/campaign/bump-version'], { cwd: repo }).catch(() => null);
    if (!r) continue;
    branches++;
    if (Number(r.stdout.trim()) !== 1) extra++;
  }
  const tasks = Number((await sql<{ n: string }>`select count(*) as n from tasks where triggered_by = ${`campaign:${id}`}`.execute(db)).rows[0]!.n);

  const shows: number[] = [];
  for (let i = 0; i < SHOWS; i++) shows.push(await time(() => t.api('GET', `/api/orgs/default/campaigns/${id}`)));
  const lists: number[] = [];
  for (let i = 0; i < SHOWS; i++) lists.push(await time(() => t.api('GET', '/api/orgs/default/tasks?limit=200')));
  const cli: number[] = [];
  for (let i = 0; i < 5; i++) cli.push(await time(async () => {
    const r = await t.cli(['campaign', 'show', id, '--json']);
    if (r.code !== 0) throw new Error(`berth campaign show: ${r.stderr}`);
  }));

  console.log(`\nBerth campaigns benchmark — ${t.berth.runner.backend.name}, ${ON_POSTGRES ? 'PostgreSQL' : 'embedded PGlite'}, ${availableParallelism()} cores, load ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  console.log(`${REPOS} local bare repositories (made in ${(madeMs / 1000).toFixed(1)} s), a command agent editing one file, concurrency ${CONCURRENCY} (runner task slots ${CONCURRENCY})`);
  console.log(`finished: ${detail.counts.succeeded} succeeded, ${detail.counts.failed} failed, ${detail.counts.cancelled} cancelled; peak at once ${detail.peakRunning}`);
  console.log(`wall time ${(wallMs / 1000).toFixed(1)} s = ${((REPOS / wallMs) * 60_000).toFixed(1)} repositories/min (goal ≥ 60)`);
  console.log(`lost or twice: ${REPOS - branches} branches missing, ${extra} with other than one commit, ${tasks} tasks for ${REPOS} repositories (goal: 0, 0, ${REPOS})`);
  console.log(`control plane RSS: ${(rssBefore / 2 ** 20).toFixed(0)} MiB before, ${(peakRss / 2 ** 20).toFixed(0)} MiB at peak (goal ≤ 500 MiB; this process is the control plane and the runner)`);
  const per = Object.entries(after).map(([k, v]) => `${k} ${((v - (before[k] ?? 0)) / REPOS).toFixed(1)}`).join(', ');
  console.log(`database rows written per repository: ${per}`);
  summary('GET /campaigns/:id with every repository done', shows);
  summary('  baseline: GET /tasks?limit=200, same run', lists);
  summary('`berth campaign show --json` (the CLI, a process each)', cli);
} finally {
  clearInterval(sampler);
  await t.destroy();
  rmSync(root, { recursive: true, force: true });
}
