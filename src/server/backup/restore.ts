// `berth restore DIR --data-dir EMPTY`: every checksum is checked before anything is written,
// then the data dir's files, volumes and environments are unpacked and the database loaded.
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { conflict, invalid } from '../../shared/errors.ts';
import { OfflineStore } from '../../runner/index.ts';
import { openDatabase } from '../db/index.ts';
import { checkDatabaseTarget, loadDatabase } from './database.ts';
import { hashFile, untarInto, type BackupProgress } from './files.ts';
import { readManifest, type Manifest } from './manifest.ts';

export interface RestoreOptions {
  dir: string;
  dataDir: string;
  /** An empty PostgreSQL database (DATABASE_URL), for a backup of one. */
  databaseUrl?: string | undefined;
  progress?: BackupProgress | undefined;
}

export async function restore(opts: RestoreOptions): Promise<Manifest> {
  const dir = resolve(opts.dir);
  const dataDir = resolve(opts.dataDir);
  const manifest = readManifest(dir);
  const created = !existsSync(dataDir);
  if (!created && readdirSync(dataDir).length) throw conflict(`${dataDir} is not empty: restore into a new data dir (--data-dir NEW); a restore never merges into existing data`);
  await checkDatabaseTarget(manifest.database.kind, opts.databaseUrl);
  await verify(dir, manifest, opts.progress);

  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  try {
    opts.progress?.({ step: 'unpacking', file: 'data.tar', bytes: 0 });
    await untarInto(join(dir, 'data.tar'), dataDir);
    if (manifest.files.some((f) => f.path === 'volumes.tar')) {
      mkdirSync(join(dataDir, 'volumes'), { mode: 0o711 });
      await untarInto(join(dir, 'volumes.tar'), join(dataDir, 'volumes'));
    }
    for (const e of manifest.environments) {
      opts.progress?.({ step: 'unpacking', file: e.file, bytes: 0 });
      const envDir = join(dataDir, 'environments', e.id);
      mkdirSync(envDir, { recursive: true, mode: 0o700 });
      await untarInto(join(dir, e.file), envDir);
    }
    await restoreStore(dir, dataDir, manifest, opts.progress);
    opts.progress?.({ step: 'database', file: manifest.database.file, bytes: 0 });
    await loadDatabase({ kind: manifest.database.kind, file: join(dir, manifest.database.file), dataDir, databaseUrl: opts.databaseUrl });
    await moveLocalRunner(manifest.dataDir, dataDir, opts.databaseUrl);
  } catch (err) {
    // The data dir was empty: leave it so, for the next try. A PostgreSQL database the
    // single-transaction pg_restore left as it was; a failure after it is said in the message.
    for (const name of readdirSync(dataDir)) rmSync(join(dataDir, name), { recursive: true, force: true });
    if (created) rmSync(dataDir, { recursive: true, force: true });
    throw err;
  }
  return manifest;
}

/** Every file the manifest lists, its size and sha256, before anything is written. */
async function verify(dir: string, manifest: Manifest, progress?: BackupProgress): Promise<void> {
  const paths = new Set(manifest.files.map((f) => f.path));
  const stored = manifest.environments.flatMap((e) => (e.stored ? [e.stored.file] : []));
  for (const needed of [manifest.database.file, 'data.tar', ...manifest.environments.map((e) => e.file), ...stored, ...manifest.snapshots.map((s) => s.file)]) {
    if (!paths.has(needed)) throw invalid(`the backup's manifest lists no checksum for ${needed}: the backup is damaged; use another copy of it`);
  }
  for (const f of manifest.files) {
    const path = join(dir, f.path);
    if (!existsSync(path)) throw invalid(`the backup is missing ${f.path}: nothing was restored; use a complete copy of the backup`);
    progress?.({ step: 'checking', file: f.path, bytes: 0 });
    const got = await hashFile(path, progress);
    if (got.bytes !== f.bytes || got.sha256 !== f.sha256) throw invalid(`the backup's ${f.path} is damaged (its ${got.bytes !== f.bytes ? 'size' : 'sha256'} differs from the manifest): nothing was restored; use another copy of the backup`);
  }
}

/**
 * Environments and snapshots of the runner's btrfs state store, into a new store in the
 * data dir: each environment a subvolume with its disk limit, each snapshot a read-only one.
 * Blocks they shared in the original store are copies of their own here.
 */
async function restoreStore(dir: string, dataDir: string, manifest: Manifest, progress: BackupProgress | undefined): Promise<void> {
  const environments = manifest.environments.filter((e) => e.stored);
  if (!environments.length && !manifest.snapshots.length) return;
  const store = await OfflineStore.open(dataDir, 'restoring environments and snapshots of the state store');
  try {
    for (const e of environments) {
      progress?.({ step: 'unpacking', file: e.stored!.file, bytes: 0 });
      await untarInto(join(dir, e.stored!.file), await store.createEnv(e.id, e.stored!.limitBytes), store);
    }
    for (const s of manifest.snapshots) {
      progress?.({ step: 'unpacking', file: s.file, bytes: 0 });
      await store.createSnapshot(s.id, (into) => untarInto(join(dir, s.file), into, store));
    }
  } finally {
    await store.close();
  }
}

/**
 * berth up's own runner is `local:DATA_DIR`: the environments, tasks and snapshots it held move to the runner of
 * the new data dir, and the old runner's row goes (the new one is written at start).
 */
async function moveLocalRunner(from: string, to: string, databaseUrl: string | undefined): Promise<void> {
  if (from === to) return;
  const database = await openDatabase({ dataDir: to, databaseUrl });
  try {
    const [oldId, newId] = [`local:${from}`, `local:${to}`];
    await database.db.transaction().execute(async (trx) => {
      await trx.updateTable('environments').set({ runner_id: newId }).where('runner_id', '=', oldId).execute();
      await trx.updateTable('tasks').set({ runner_id: newId }).where('runner_id', '=', oldId).execute();
      // Snapshots (and the prebuilds kept as snapshots) are files of that runner too.
      await trx.updateTable('snapshots').set({ runner_id: newId }).where('runner_id', '=', oldId).execute();
      await trx.updateTable('prebuilds').set({ runner_id: newId }).where('runner_id', '=', oldId).execute();
      await trx.deleteFrom('runners').where('id', '=', oldId).execute();
    });
  } finally {
    await database.close();
  }
}
