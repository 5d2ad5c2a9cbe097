// Two control-plane replicas on one PostgreSQL: how long a task event appended on one takes
// to reach an SSE stream served by the other (LISTEN/NOTIFY), how many appends a second one
// task takes when both replicas write to it at once (the seq is allocated by the insert and
// retried on the key), and how long a policy change made through one takes to reach the
// other's policy cache (trigger → NOTIFY → debounced reload).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { startBerth, type ClientConfig, type RunningBerth } from '../src/server/index.ts';
import type { TaskEventData } from '../src/shared/tasks.ts';
import { freshDatabase, postgresReachable, POSTGRES_SERVER } from '../test/postgres.ts';
import { summary } from './stats.ts';

const EVENTS = Number(process.env.BENCH_EVENTS ?? 1000);
const APPENDS = Number(process.env.BENCH_APPENDS ?? 2000);
const CHANGES = Number(process.env.BENCH_POLICY_CHANGES ?? 50);
const REPO = new URL('..', import.meta.url).pathname;

if (!(await postgresReachable())) {
  console.log(`replicas: skipped, no PostgreSQL at ${POSTGRES_SERVER} (replicas need one)`);
  process.exit(0);
}

const database = await freshDatabase();
const dirs: string[] = [];
const start = async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'berth-bench-replica-'));
  dirs.push(dataDir);
  const berth = await startBerth({ dataDir, port: 0, databaseUrl: database.url, imageDir: process.env.BERTH_IMAGE_DIR ?? join(REPO, '.cache', 'images'), logger: pino({ level: 'silent' }), modelEnv: {}, tokenRateLimit: 1_000_000 });
  return { berth, client: JSON.parse(readFileSync(berth.clientConfigPath, 'utf8')) as ClientConfig };
};
const a = await start();
const b = await start();
const orgId = (await (await fetch(`${a.client.url}/api/orgs`, { headers: { authorization: `Bearer ${a.client.token}` } })).json() as { items: { id: string }[] }).items[0]!.id;

let tasks = 0;
async function heldTask(berth: RunningBerth): Promise<string> {
  const id = `task_b${String(process.pid % 100_000).padStart(5, '0')}${String(++tasks).padStart(6, '0')}`;
  await berth.database.db
    .insertInto('tasks')
    .values({ id, org_id: orgId, project_id: null, repo_url: 'https://example.invalid/x.git', base_branch: null, goal: 'bench', agent: 'builtin', command: null, model: null, budget: JSON.stringify({ maxSteps: 1, maxTokens: null, maxCostUsd: null, timeoutMs: 60_000, maxCheckRetries: 0 }), check_command: null, state: 'running', state_reason: null, step: 'agent', trigger: 'api', created_by: 'bench', runner_id: 'elsewhere', environment_id: null, branch: null, base_sha: null, head_sha: null, change_request: null, checks_passed: null, summary: null, diff: null } as never)
    .execute();
  return id;
}
const log = (n: number): TaskEventData => ({ type: 'log', level: 'info', message: `event ${n}` });

try {
  console.log(`replicas: two control planes on one PostgreSQL (${POSTGRES_SERVER.replace(/\/\/[^@]*@/, '//')})`);

  // 1. A appends, B's SSE stream hears it.
  {
    const id = await heldTask(a.berth);
    const received = new Map<number, number>();
    const res = await fetch(`${b.client.url}/api/orgs/default/tasks/${id}/events`, { headers: { authorization: `Bearer ${a.client.token}`, accept: 'text/event-stream' } });
    const reading = (async () => {
      const decoder = new TextDecoder();
      let buf = '';
      for await (const chunk of res.body!) {
        buf += decoder.decode(chunk as Uint8Array, { stream: true });
        for (const m of buf.matchAll(/^id: (\d+)$/gm)) if (!received.has(Number(m[1]))) received.set(Number(m[1]), performance.now());
        if (buf.includes('event: end')) return;
        buf = buf.slice(Math.max(0, buf.lastIndexOf('\n\n') + 2));
      }
    })();
    const sent = new Map<number, number>();
    for (let n = 1; n <= EVENTS; n++) {
      const at = performance.now();
      const e = await a.berth.taskEvents.append(id, n === EVENTS ? { type: 'state', state: 'succeeded' } : log(n));
      sent.set(e.seq, at);
      // Paced like a busy agent (a few hundred events a second), not a flood.
      await new Promise((r) => setTimeout(r, 2));
    }
    await reading;
    summary('task event: append on A -> SSE on B', [...sent].map(([seq, at]) => received.get(seq)! - at));
  }

  // 2. A and B append to one task at once.
  {
    const id = await heldTask(a.berth);
    const started = performance.now();
    await Promise.all(Array.from({ length: APPENDS }, (_, n) => (n % 2 ? a : b).berth.taskEvents.append(id, log(n))));
    const seconds = (performance.now() - started) / 1000;
    const stored = await a.berth.taskEvents.list(id, { limit: APPENDS + 1 });
    const consecutive = stored.every((e, i) => e.seq === i + 1);
    console.log(`${'task event: appends/s, A and B on one task at once'.padEnd(52)} ${(APPENDS / seconds).toFixed(0).padStart(7)} /s   (n=${APPENDS}, seqs 1..${stored.length} ${consecutive ? 'consecutive' : 'NOT consecutive'})`);
    if (!consecutive || stored.length !== APPENDS) throw new Error('seqs collided or were skipped');
  }

  // 3. A policy change through B's API, seen by A's policy cache.
  {
    const envId = `env_b${String(process.pid % 100_000).padStart(5, '0')}`;
    await a.berth.database.db.insertInto('environments').values({ id: envId, org_id: orgId, name: 'bench-policy', image: 'debian', image_digest: null, state: 'stopped', state_reason: null, cpus: 1, memory_bytes: '1', disk_bytes: '1', pids_limit: 1, idle_timeout_ms: null, max_lifetime_ms: null } as never).execute();
    const samples: number[] = [];
    for (let i = 0; i <= CHANGES; i++) {
      const domain = `bench-${i}.example`;
      const res = await fetch(`${b.client.url}/api/orgs/default/policies/org`, { method: 'PATCH', headers: { authorization: `Bearer ${b.client.token}`, 'content-type': 'application/json' }, body: JSON.stringify({ allowDomains: [domain] }) });
      if (res.status !== 200) throw new Error(`policy change: ${res.status} ${await res.text()}`);
      const answered = performance.now();
      while (!a.berth.app.policies.policyFor(envId).allowDomains.includes(domain)) await new Promise((r) => setImmediate(r));
      // The first one also loads the new environment.
      if (i > 0) samples.push(performance.now() - answered);
    }
    summary("policy change: B's answer -> A's policy cache", samples);
  }
} finally {
  await b.berth.close();
  await a.berth.close();
  await database.drop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}
