// Audit append throughput and latency with many appends in flight, on PGlite and on
// PostgreSQL, batched and with batching off (one transaction per append) as the
// baseline measured in the same run. Every run ends with verify(): speed counts only
// for a chain that checks out.
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { AuditLog } from '../src/server/audit/index.ts';
import { openDatabase, type DatabaseHandle } from '../src/server/db/index.ts';
import { freshDatabase, POSTGRES_SERVER, postgresReachable } from '../test/postgres.ts';
import { percentile } from './stats.ts';

const N = Number(process.env.BENCH_AUDIT_N ?? 10_000);
const IN_FLIGHT = Number(process.env.BENCH_AUDIT_IN_FLIGHT ?? 64);
/** 'pglite' or 'postgres' to run one database only. */
const ONLY = process.env.BENCH_AUDIT_DB;
const WARMUP = 500;
const silent = pino({ level: 'silent' });

interface Result {
  rate: number;
  p50: number;
  p99: number;
}

async function run(handle: DatabaseHandle, mode: 'batched' | 'unbatched'): Promise<Result> {
  const orgId = `org_bench_${mode}_${Date.now()}`;
  await handle.db.insertInto('orgs').values({ id: orgId, name: orgId }).execute();
  const audit = new AuditLog({ db: handle.db, logger: silent, maxBatchSize: mode === 'batched' ? undefined : 1 });
  const append = (i: number) =>
    audit.append({ orgId, actor: 'token:tok_bench', action: 'command.run', target: 'env_bench', environmentId: 'env_bench', details: { i, argv: ['npm', 'test'], exitCode: 0 } });

  for (let i = 0; i < WARMUP; i += IN_FLIGHT) await Promise.all(Array.from({ length: IN_FLIGHT }, (_, j) => append(i + j)));
  const warm = Math.ceil(WARMUP / IN_FLIGHT) * IN_FLIGHT;

  const latencies: number[] = [];
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (next < N) {
        const i = next++;
        const t = performance.now();
        await append(i);
        latencies.push(performance.now() - t);
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;

  const check = await audit.verify(orgId);
  if (!check.ok || check.entries !== warm + N) throw new Error(`chain does not verify after the ${mode} run: ${JSON.stringify(check)}`);
  await audit.close();

  const result = { rate: N / seconds, p50: percentile(latencies, 50), p99: percentile(latencies, 99) };
  const label = `audit append (${handle.kind}, ${mode})`;
  console.log(`${label.padEnd(38)} ${Math.round(result.rate).toLocaleString('en-US').padStart(7)}/s  p50 ${result.p50.toFixed(1).padStart(5)} ms  p99 ${result.p99.toFixed(1).padStart(5)} ms`);
  return result;
}

async function compare(handle: DatabaseHandle): Promise<void> {
  const batched = await run(handle, 'batched');
  const unbatched = await run(handle, 'unbatched');
  console.log(`${''.padEnd(38)} batched/unbatched: ${(batched.rate / unbatched.rate).toFixed(1)}x appends/s\n`);
}

console.log(`Berth audit append — ${N.toLocaleString('en-US')} appends, ${IN_FLIGHT} in flight, one org, ${availableParallelism()} cores\n`);

async function onPglite(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'berth-bench-audit-'));
  try {
    const handle = await openDatabase({ dataDir: dir });
    try {
      await compare(handle);
    } finally {
      await handle.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function onPostgres(): Promise<void> {
  const database = await freshDatabase();
  try {
    const handle = await openDatabase({ dataDir: '', databaseUrl: database.url });
    try {
      await compare(handle);
    } finally {
      await handle.close();
    }
  } finally {
    await database.drop();
  }
}

if (ONLY !== 'postgres') await onPglite();
if (ONLY !== 'pglite') {
  if (await postgresReachable()) await onPostgres();
  else console.log(`no PostgreSQL at ${POSTGRES_SERVER}: skipped`);
}
