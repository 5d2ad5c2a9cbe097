import { execFile } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { PGlite, type PGliteOptions } from '@electric-sql/pglite';
import { Kysely, PGliteDialect, PostgresDialect } from 'kysely';
import { Migrator, type MigrationProvider } from 'kysely/migration';
import pg from 'pg';
import type { Logger } from 'pino';
import type { Database } from './schema.ts';
import { migrations } from './migrations.ts';
import { EmbeddedFeed, PostgresFeed, type ChangeFeed } from './notify.ts';
import { LocalSingletons, PostgresSingletons, type Singletons } from './singleton.ts';

const execFileAsync = promisify(execFile);

export type * from './schema.ts';
export type Db = Kysely<Database>;

export interface DatabaseHandle {
  db: Db;
  kind: 'pglite' | 'postgres';
  /** The PostgreSQL pool, whose counts are metrics; none on PGlite. */
  pool?: pg.Pool | undefined;
  /** Notifications between replicas (LISTEN/NOTIFY); on PGlite, this process's own. */
  feed: ChangeFeed;
  /** Periodic jobs that run on one replica at a time. */
  singletons: Singletons;
  close(): Promise<void>;
}

// bigint (int8) columns come back as strings from pg; keep them as strings and convert
// where used, so nothing silently loses precision.
export async function openDatabase(opts: { dataDir: string; databaseUrl?: string | undefined; logger?: Pick<Logger, 'warn' | 'info'> }): Promise<DatabaseHandle> {
  const logger = opts.logger ?? { warn: (o: object, msg?: string) => process.emitWarning(`${msg ?? ''} ${JSON.stringify(o)}`), info: () => {} };
  if (opts.databaseUrl) {
    const pool = new pg.Pool({ connectionString: opts.databaseUrl, max: 20 });
    // An idle connection the server dropped (a restart, a failover) is not a crash: the
    // pool opens a new one for the next query, and a query in flight fails on its own.
    pool.on('error', (err) => logger.warn({ err: { message: err.message } }, 'PostgreSQL connection lost'));
    // A connection the server ends while it is checked out (between a transaction's queries,
    // say) emits an error the pool no longer listens for: without this, a restart of the
    // server would crash the process. Its query fails on its own and the pool drops it.
    pool.on('connect', (client) => client.on('error', () => {}));
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    await migrate(db);
    const feed = new PostgresFeed({ url: opts.databaseUrl, logger });
    await feed.start().catch(async (err: unknown) => {
      await db.destroy();
      throw err;
    });
    const singletons = new PostgresSingletons({ url: opts.databaseUrl, logger });
    return {
      db,
      kind: 'postgres', pool,
      feed,
      singletons,
      async close() {
        await singletons.close();
        await feed.close();
        await db.destroy();
      },
    };
  }
  const dir = join(opts.dataDir, 'db');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const pglite = await openEmbedded(dir);
  const db = new Kysely<Database>({ dialect: new PGliteDialect({ pglite }) });
  await migrate(db);
  return {
    db,
    kind: 'pglite',
    feed: new EmbeddedFeed(pglite),
    singletons: new LocalSingletons(),
    async close() {
      await db.destroy();
      if (!pglite.closed) await pglite.close();
    },
  };
}

/**
 * PGlite in this process. Its shared buffers live in the WebAssembly heap, which never gives
 * memory back: PostgreSQL's 128 MB default would be most of the control plane's RSS, while the
 * operating system's page cache keeps the files' pages anyway (one backend, no sharing). A new
 * database's initdb is run by a child process: it touches ~250 MB this process would keep.
 * PGlite's hottest functions are huge: V8's optimizing tier took ~500 MB and a core for seconds
 * to compile them after each start (RSS 150 → 700 MB here); the baseline tier's code serves the
 * control plane's small queries as well (aggregates over thousands of rows run ~2× slower).
 */
export async function openEmbedded(dir: string, options: PGliteOptions = {}): Promise<PGlite> {
  keepWasmOnBaselineTier();
  if (!options.loadDataDir && !existsSync(join(dir, 'PG_VERSION'))) await initdbInChild(dir);
  return PGlite.create(dir, { ...options, startParams: [...PGlite.defaultStartParams, '-c', `shared_buffers=${EMBEDDED_SHARED_BUFFERS}`] });
}

let wasmTierFlagsSet = false;

/** V8's flags are the whole process's: set once, before the first PGlite compiles its module. */
function keepWasmOnBaselineTier(): void {
  if (wasmTierFlagsSet) return;
  setFlagsFromString('--no-wasm-tier-up');
  setFlagsFromString('--no-wasm-dynamic-tiering');
  wasmTierFlagsSet = true;
}

async function initdbInChild(dir: string): Promise<void> {
  const script = 'const { PGlite } = await import(process.argv[1]); const db = await PGlite.create(process.argv[2]); await db.close();';
  await execFileAsync(process.execPath, ['--input-type=module', '-e', script, import.meta.resolve('@electric-sql/pglite'), dir]).catch((err: { stderr?: string; message: string }) => {
    throw new Error(`could not make the embedded database in ${dir}: ${(err.stderr || err.message).trim().split('\n').slice(-3).join(' ')}`);
  });
}
const EMBEDDED_SHARED_BUFFERS = '16MB';

/** Whether a query failed on a unique constraint: the caller turns it into a conflict. */
export const isUniqueViolation = (err: unknown) => (err as { code?: string } | null)?.code === '23505';

/**
 * The database is not answering: restarting, shut down, out of connections or the network
 * to it cut. A request that meets it gets 503 and a retry, not a 500: nothing is wrong
 * with the request, and the pool reconnects by itself once the server is back.
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === 'string' ? e.code : '';
  // 57P01-03: admin or crash shutdown, cannot connect now; 08xxx: connection exceptions; 53300: too many connections.
  if (/^57P0[123]$|^08...$|^53300$/.test(code)) return true;
  if (['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND', 'EHOSTUNREACH'].includes(code)) return true;
  const message = typeof e?.message === 'string' ? e.message : '';
  return /^Connection terminated|connection error and is not queryable|timeout exceeded when trying to connect|Client was closed and is not queryable/.test(message);
}

/** A timestamp column as the API shows it: ISO 8601, or null. */
export const isoOrNull = (d: Date | string | null) => (d === null ? null : new Date(d).toISOString());

const provider: MigrationProvider = { getMigrations: async () => migrations };

/** Runs pending migrations; Kysely's migrator takes a lock, so two replicas starting together run each once. */
export async function migrate(db: Kysely<Database>): Promise<void> {
  const { error, results } = await new Migrator({ db, provider }).migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error')?.migrationName;
    throw new Error(`database migration ${failed ?? ''} failed: ${(error as Error).message}`);
  }
}
