// Campaigns (src/server/campaigns) on a real `berth up` and real sandboxes: one campaign over
// BENCH_CAMPAIGN_REPOS (1,000) local bare repositories with a command agent that edits one file,
// BENCH_CAMPAIGN_CONCURRENCY (8) at once. `berth up` runs in a process of its own, as a user
// runs it (the control plane, its database when embedded, and the local runner), so its RSS is
// the control plane's alone: sampled while the campaign runs, and the kernel's high-water mark
// (which includes start-up). Prints the wall time, repositories per minute, database rows
// written per repository, and the time `GET /campaigns/:id` (what `berth campaign show`
// renders) takes with every repository done, against listing the same tasks through
// `GET /tasks` in the same run. Every repository's branch is checked after: one commit each,
// none lost, none twice.
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { sql } from 'kysely';
import { openDatabase } from '../src/server/db/index.ts';
import { createBareRepos } from '../test/fakes/git-server.ts';
import { apiAs, IMAGE_DIR, REPO, runCli } from '../test/helpers.ts';
import { freshDatabase, ON_POSTGRES } from '../test/postgres.ts';
import { summary, time } from './stats.ts';

const REPOS = Number(process.env.BENCH_CAMPAIGN_REPOS ?? 1000);
const CONCURRENCY = Number(process.env.BENCH_CAMPAIGN_CONCURRENCY ?? 8);
const SHOWS = 20;
const execFileAsync = promisify(execFile);

const root = mkdtempSync(join(tmpdir(), 'berth-bench-campaigns-'));
const made = performance.now();
const repos = await createBareRepos({ root, names: Array.from({ length: REPOS }, (_, i) => `r${i}.git`), files: { 'VERSION': '1.0.0\n', 'README.md': 'a service\n' } });
const madeMs = performance.now() - made;

const dataDir = join(root, 'data');
mkdirSync(dataDir);
const database = ON_POSTGRES ? await freshDatabase() : undefined;
const port = await freePort();
const up = spawn(join(REPO, 'bin', 'berth'), ['up', '--port', String(port)], {
  env: { ...process.env, BERTH_NODE: process.execPath, BERTH_DATA_DIR: dataDir, BERTH_IMAGE_DIR: IMAGE_DIR, BERTH_LOCAL_REPOS: root, BERTH_TASK_CONCURRENCY: String(CONCURRENCY), BERTH_LOG_LEVEL: 'warn', ...(database && { DATABASE_URL: database.url }) },
  stdio: ['ignore', 'ignore', 'pipe'],
});
let upErr = '';
up.stderr!.setEncoding('utf8').on('data', (d: string) => (upErr = (upErr + d).slice(-4000)));
const rssOf = (field: 'VmRSS' | 'VmHWM') => Number(/(\d+) kB/.exec(readFileSync(`/proc/${up.pid}/status`, 'utf8').split('\n').find((l) => l.startsWith(field)) ?? '')?.[1] ?? 0) * 1024;
try {
  const clientPath = join(dataDir, 'client.json');
  for (let i = 0; !upErr.includes('Berth is up at'); i++) {
    if (up.exitCode !== null || i > 600) throw new Error(`berth up did not start: ${upErr}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  if (!existsSync(clientPath)) throw new Error(`berth up wrote no ${clientPath}`);
  const client = JSON.parse(readFileSync(clientPath, 'utf8')) as { url: string; token: string };
  const api = apiAs({ client } as never, client.token);
  const runtime = /\(([^)]*) runtime\)/.exec(upErr)?.[1] ?? 'a local runner';
  const rssBefore = rssOf('VmRSS');
  let peakRss = rssBefore;
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, rssOf('VmRSS'))), 200);
  const started = performance.now();
  const res = await api('POST', '/api/orgs/default/campaigns', { name: 'bump-version', goal: 'bump the version', repos, agent: 'command', command: 'echo 1.0.1 > VERSION', concurrency: CONCURRENCY, maxOpenPrs: REPOS });
  if (res.status !== 201) throw new Error(`create: ${res.status} ${JSON.stringify(res.body)}`);
  const id = res.body.campaign.id as string;
  let last = '';
  for (;;) {
    const c = (await api('GET', `/api/orgs/default/campaigns/${id}`)).body;
    const line = `${c.counts.succeeded + c.counts.failed}/${c.total} done, ${c.counts.running + c.counts.starting} running, ${c.throughputPerMin ?? '-'} /min`;
    if (line !== last && Math.round((performance.now() - started) / 1000) % 30 === 0) console.log(`  ${((performance.now() - started) / 1000).toFixed(0).padStart(5)} s  ${line}  RSS ${(rssOf('VmRSS') / 2 ** 20).toFixed(0)} MiB  load ${loadavg()[0]!.toFixed(1)}`);
    last = line;
    if (c.state !== 'running') break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  const wallMs = performance.now() - started;
  clearInterval(sampler);
  const detail = (await api('GET', `/api/orgs/default/campaigns/${id}`)).body;

  // Lost or twice: one campaign commit on each repository's branch.
  let branches = 0;
  let extra = 0;
  for (const repo of repos) {
    const r = await execFileAsync('git', ['rev-list', '--count', 'main..berth/campaign/bump-version'], { cwd: repo }).catch(() => null);
    if (!r) continue;
    branches++;
    if (Number(r.stdout.trim()) !== 1) extra++;
  }

  const shows: number[] = [];
  for (let i = 0; i < SHOWS; i++) shows.push(await time(() => api('GET', `/api/orgs/default/campaigns/${id}`)));
  const lists: number[] = [];
  for (let i = 0; i < SHOWS; i++) lists.push(await time(() => api('GET', '/api/orgs/default/tasks?limit=200')));
  const cli: number[] = [];
  for (let i = 0; i < 5; i++) cli.push(await time(async () => {
    const r = await runCli(['campaign', 'show', id, '--json'], { BERTH_DATA_DIR: dataDir });
    if (r.code !== 0) throw new Error(`berth campaign show: ${r.stderr}`);
  }));
  const highWater = rssOf('VmHWM');

  // The embedded database is this `berth up`'s alone: the rows are counted once it has stopped.
  up.kill('SIGINT');
  await new Promise((r) => (up.exitCode === null ? up.on('close', r) : r(null)));
  const handle = await openDatabase({ dataDir, databaseUrl: database?.url });
  const count = async (table: string) => Number((await sql<{ n: string }>`select count(*) as n from ${sql.table(table)}`.execute(handle.db)).rows[0]!.n);
  const tables = ['tasks', 'task_events', 'audit_entries', 'campaign_targets', 'environments'];
  const rows = Object.fromEntries(await Promise.all(tables.map(async (table) => [table, await count(table)] as const)));
  const tasks = Number((await sql<{ n: string }>`select count(*) as n from tasks where triggered_by = ${`campaign:${id}`}`.execute(handle.db)).rows[0]!.n);
  const retried = Number((await sql<{ n: string }>`select coalesce(sum(attempts - 1), 0) as n from campaign_targets where campaign_id = ${id}`.execute(handle.db)).rows[0]!.n);
  const whyRetried = (await sql<{ reason: string; n: string }>`select coalesce(state_reason, state) as reason, count(*) as n from tasks where triggered_by = ${`campaign:${id}`} and state <> 'succeeded' group by 1 order by 2 desc limit 5`.execute(handle.db)).rows;
  await handle.close();

  console.log(`\nBerth campaigns benchmark — \`berth up\` (${runtime}), ${ON_POSTGRES ? 'PostgreSQL' : 'embedded PGlite'}, ${availableParallelism()} cores, load ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  console.log(`${REPOS} local bare repositories (made in ${(madeMs / 1000).toFixed(1)} s), a command agent editing one file, concurrency ${CONCURRENCY} (runner task slots ${CONCURRENCY})`);
  console.log(`finished: ${detail.counts.succeeded} succeeded, ${detail.counts.failed} failed, ${detail.counts.cancelled} cancelled; peak at once ${detail.peakRunning}`);
  console.log(`wall time ${(wallMs / 1000).toFixed(1)} s = ${((REPOS / wallMs) * 60_000).toFixed(1)} repositories/min (goal ≥ 60)`);
  console.log(`lost or twice: ${REPOS - branches} branches missing, ${extra} with other than one commit, ${tasks} tasks for ${REPOS} repositories, ${retried} of them a retry after an infrastructure failure (goal: 0, 0, ${REPOS} + retries)`);
  for (const r of whyRetried) console.log(`  ${r.n} × ${r.reason.slice(0, 160)}`);
  console.log(`control plane RSS (the \`berth up\` process: API, scheduler, runner${ON_POSTGRES ? '' : ', embedded database'}): ${mib(rssBefore)} MiB before, ${mib(peakRss)} MiB at peak while the campaign ran (goal ≤ 500 MiB); ${mib(highWater)} MiB high-water mark since it started`);
  console.log(`database rows per repository (totals, the first start's few included): ${tables.map((t) => `${t} ${(rows[t]! / REPOS).toFixed(1)}`).join(', ')}`);
  summary('GET /campaigns/:id with every repository done', shows);
  summary('  baseline: GET /tasks?limit=200, same run', lists);
  summary('`berth campaign show --json` (the CLI, a process each)', cli);
} finally {
  if (up.exitCode === null) {
    up.kill('SIGINT');
    await new Promise((r) => up.on('close', r));
  }
  await database?.drop();
  rmSync(root, { recursive: true, force: true });
}

function mib(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(0);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}
