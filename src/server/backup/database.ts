// The database's part of a backup: PGlite's data directory as its own dump (a tarball PGlite
// loads back), or PostgreSQL's pg_dump in the custom format (one snapshot of the database,
// taken while it serves) restored by pg_restore into an empty database.
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openEmbedded } from '../db/index.ts';
import pg from 'pg';
import { invalid } from '../../shared/errors.ts';

export const DATABASE_FILES = { pglite: 'database.tar.gz', postgres: 'database.dump' } as const;

/** Writes the database into `out`. */
export async function dumpDatabase(opts: { dataDir: string; databaseUrl?: string | undefined; out: string }): Promise<void> {
  if (opts.databaseUrl) {
    await tool('pg_dump', ['--format=custom', '--no-owner', `--file=${opts.out}`, `--dbname=${opts.databaseUrl}`], 'back up the PostgreSQL database');
    return;
  }
  const pglite = await openEmbedded(join(opts.dataDir, 'db'));
  try {
    const dump = await pglite.dumpDataDir('gzip');
    writeFileSync(opts.out, Buffer.from(await dump.arrayBuffer()), { mode: 0o600 });
  } finally {
    await pglite.close();
  }
}

/** Loads a dump into `dataDir`'s PGlite directory, or into the empty PostgreSQL database at `databaseUrl`. */
export async function loadDatabase(opts: { kind: 'pglite' | 'postgres'; file: string; dataDir: string; databaseUrl?: string | undefined }): Promise<void> {
  if (opts.kind === 'postgres') {
    await tool('pg_restore', ['--no-owner', '--exit-on-error', '--single-transaction', `--dbname=${opts.databaseUrl!}`, opts.file], 'restore the PostgreSQL database');
    return;
  }
  const dir = join(opts.dataDir, 'db');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  try {
    const pglite = await openEmbedded(dir, { loadDataDir: new Blob([readFileSync(opts.file)]) });
    await pglite.close();
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/** Refuses a restore whose database does not fit where it would go: a restore never merges into data. */
export async function checkDatabaseTarget(kind: 'pglite' | 'postgres', databaseUrl: string | undefined): Promise<void> {
  if (kind === 'pglite') {
    if (databaseUrl) throw invalid('this backup holds an embedded (PGlite) database, but DATABASE_URL is set: unset it to restore into the data dir');
    return;
  }
  if (!databaseUrl) throw invalid('this backup holds a PostgreSQL database: set DATABASE_URL to an empty database (createdb NAME) and run berth restore again');
  const client = new pg.Client({ connectionString: databaseUrl });
  try {
    await client.connect();
  } catch (err) {
    throw invalid(`cannot reach the database at DATABASE_URL (${(err as Error).message}): start PostgreSQL or create the database (createdb NAME), then run berth restore again`);
  }
  try {
    const { rows } = await client.query<{ n: string }>(`select count(*) as n from information_schema.tables where table_schema not in ('pg_catalog', 'information_schema')`);
    if (Number(rows[0]!.n) > 0) throw invalid('the database at DATABASE_URL is not empty: restore into a new one (createdb NAME, then point DATABASE_URL at it)');
  } finally {
    await client.end();
  }
}

async function tool(command: string, args: string[], what: string): Promise<void> {
  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const code = await new Promise<number>((resolve, reject) => {
    child.on('error', (err: NodeJS.ErrnoException) => reject(err.code === 'ENOENT' ? new Error(`${command} is needed to ${what}: install PostgreSQL's client tools (Debian: apt-get install postgresql-client), matching the server's major version`) : err));
    child.on('close', (c) => resolve(c ?? 1));
  });
  // The URL may carry a password; pg's tools do not print it, and nothing here adds it.
  if (code !== 0) throw new Error(`${command} could not ${what} (exit ${code}): ${stderr.trim() || 'no message'}`);
}
