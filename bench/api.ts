// API throughput: authenticated, paginated listing of environments in an org holding
// 10,000 of them, on the embedded database and on PostgreSQL. The load comes from a
// worker thread with keep-alive connections, so the client does not share the server's
// event loop. Audit append throughput is in bench/api-audit.ts.
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { sql } from 'kysely';
import pino from 'pino';
import { startBerth } from '../src/server/index.ts';
import { freshDatabase, postgresReachable } from '../test/postgres.ts';
import { percentile } from './stats.ts';

const ENVIRONMENTS = Number(process.env.BENCH_ENVIRONMENTS ?? 10_000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);
const REPO = new URL('..', import.meta.url).pathname;

const LOAD = `
const { parentPort, workerData } = require('node:worker_threads');
const { url, token, seconds, concurrency } = workerData;
const latencies = [];
let errors = 0;
const until = Date.now() + seconds * 1000;
async function one() {
  while (Date.now() < until) {
    const started = performance.now();
    // Walk pages the way a client would: first pages most, deeper pages too.
    const res = await fetch(url, { headers: { authorization: 'Bearer ' + token } });
    await res.arrayBuffer();
    if (res.status !== 200) errors++;
    latencies.push(performance.now() - started);
  }
}
Promise.all(Array.from({ length: concurrency }, one)).then(() => parentPort.postMessage({ latencies, errors }));
`;

const hasWrk = spawnSync('sh', ['-c', 'command -v wrk']).status === 0;

/** wrk (Debian's package) drives the load from C, so the client takes little of the two cores. */
async function wrk(url: string, token: string) {
  // Asynchronously: the server under test runs in this process.
  const { stdout: out } = await promisify(execFile)('wrk', ['-t1', `-c${CONCURRENCY}`, `-d${SECONDS}s`, '--latency', '-H', `Authorization: Bearer ${token}`, url]);
  const ms = (label: string) => {
    const m = new RegExp(`\\s${label}%\\s+([\\d.]+)(us|ms|s)`).exec(out);
    if (!m) return NaN;
    return Number(m[1]) * (m[2] === 'us' ? 0.001 : m[2] === 's' ? 1000 : 1);
  };
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  return { rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]), p50: ms('50'), p99: ms('99'), errors: non2xx };
}

async function workerLoad(url: string, token: string) {
  const worker = new Worker(LOAD, { eval: true, workerData: { url, token, seconds: SECONDS, concurrency: CONCURRENCY } });
  const { latencies, errors } = await new Promise<{ latencies: number[]; errors: number }>((resolve) => worker.once('message', resolve));
  return { rps: latencies.length / SECONDS, p50: percentile(latencies, 50), p99: percentile(latencies, 99), errors };
}

async function run(label: string, databaseUrl?: string) {
  const dataDir = mkdtempSync(join(tmpdir(), 'berth-bench-api-'));
  const berth = await startBerth({
    dataDir,
    port: 0,
    databaseUrl,
    imageDir: process.env.BERTH_IMAGE_DIR ?? join(REPO, '.cache', 'images'),
    logger: pino({ level: 'silent' }),
    tokenRateLimit: 100_000_000,
  });
  try {
    const { token } = JSON.parse(readFileSync(berth.clientConfigPath, 'utf8'));
    const org = await berth.database.db.selectFrom('orgs').select('id').where('name', '=', 'default').executeTakeFirstOrThrow();
    // Rows only: the listing reads the database, not the runner.
    for (let i = 0; i < ENVIRONMENTS; i += 1000) {
      await berth.database.db
        .insertInto('environments')
        .values(
          Array.from({ length: Math.min(1000, ENVIRONMENTS - i) }, (_, j) => ({
            id: `env_${String(i + j).padStart(12, '0')}`,
            org_id: org.id,
            name: `bench-${i + j}`,
            image: 'default',
            image_digest: null,
            state: 'stopped' as const,
            cpus: 1,
            memory_bytes: String(2 ** 31),
            disk_bytes: String(10 * 2 ** 30),
            pids_limit: 1024,
            idle_timeout_ms: null,
            max_lifetime_ms: null,
          })),
        )
        .execute();
    }
    // A steady-state table has statistics (autovacuum keeps them); a freshly seeded one not yet.
    await sql`analyze environments`.execute(berth.database.db);
    for (const limit of [100, 20]) {
      const url = `${berth.url}/api/orgs/default/environments?limit=${limit}`;
      const r = hasWrk ? await wrk(url, token) : await workerLoad(url, token);
      console.log(
        `list environments, ${limit} a page, ${ENVIRONMENTS} in the org (${label})`.padEnd(66) +
          `${Math.round(r.rps).toLocaleString('en')}/s   p50 ${r.p50.toFixed(1)} ms   p99 ${r.p99.toFixed(1)} ms   errors ${r.errors}`,
      );
    }
  } finally {
    await berth.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

console.log(`Berth API benchmark: ${CONCURRENCY} concurrent clients for ${SECONDS} s (${hasWrk ? 'wrk' : 'a Node worker; install wrk for a lighter client'}), goal ≥ 2,000 authenticated reads/s on PostgreSQL\n`);
await run('embedded PGlite');
if (await postgresReachable()) {
  const db = await freshDatabase();
  try {
    await run('PostgreSQL', db.url);
  } finally {
    await db.drop();
  }
} else {
  console.log('no PostgreSQL reachable: set BERTH_TEST_POSTGRES to measure it');
}
