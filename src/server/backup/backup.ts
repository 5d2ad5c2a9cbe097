// `berth backup DIR`: the database, every local environment's state and the data dir's own
// files (the keys among them) into a new directory, with a manifest of checksums written last.
//
// Offline: it runs on the data dir of a stopped `berth up` (environments may still run; each
// is paused while copied, see pause.ts). A live backup through the API would have to stop
// the runner's work on each environment anyway, and PGlite is one process's: it cannot be
// read while `berth up` has it open.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { VERSION } from '../../shared/client-config.ts';
import { conflict, invalid } from '../../shared/errors.ts';
import { AUDIT_KEY_FILE } from '../audit/key.ts';
import { SECRET_KEY_FILE } from '../secrets/crypto.ts';
import { DATABASE_FILES, dumpDatabase } from './database.ts';
import { hashFile, tarTree, type BackupProgress } from './files.ts';
import { BACKUP_FORMAT, BACKUP_VERSION, MANIFEST_FILE, type BackupEnvironment, type BackupFile, type BackupSnapshot, type Manifest } from './manifest.ts';
import { OfflineStore, STORED_MARKER } from '../../runner/index.ts';
import { pauseEnvironment } from './pause.ts';

/**
 * What the data dir holds that a backup leaves out: the database (dumped instead), the
 * environments and volumes (archives of their own), and what the runner makes again on its
 * host: the image cache (pulled or built again), runtime state, builds and network namespaces.
 * The state store in `runtime` (store.img) is not copied whole: its environments and
 * snapshots are archived one by one.
 */
export const NOT_COPIED = ['db', 'environments', 'volumes', 'images', 'runtime', 'builds', 'network', 'fake-runner'];

/** Parts of an environment's directory that are the host's, not its state: the disk image's mount, the agent's socket, pid files. */
const ENV_HOST_PARTS = ['./disk', './agent', './exec'];

export interface BackupOptions {
  dataDir: string;
  /** The PostgreSQL database (DATABASE_URL); embedded PGlite when absent. */
  databaseUrl?: string | undefined;
  dir: string;
  env?: Readonly<Record<string, string | undefined>>;
  progress?: BackupProgress | undefined;
}

export async function backup(opts: BackupOptions): Promise<Manifest> {
  const dataDir = resolve(opts.dataDir);
  const dir = resolve(opts.dir);
  const env = opts.env ?? process.env;
  if (!existsSync(dataDir)) throw invalid(`there is no data dir at ${dataDir}: name the one \`berth up\` used with --data-dir`);
  if (!opts.databaseUrl && !existsSync(join(dataDir, 'db'))) throw invalid(`${dataDir} holds no embedded database: if Berth used PostgreSQL, set DATABASE_URL as \`berth up\` had it`);
  if (dir === dataDir || dir.startsWith(`${dataDir}/`)) throw invalid('the backup directory cannot be inside the data dir: name one elsewhere (another disk, best)');
  await refuseWhileServing(dataDir);
  if (existsSync(dir) && readdirSync(dir).length) throw conflict(`${dir} is not empty: name a new directory for the backup`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  try {
    return await write(dataDir, dir, opts, env);
  } catch (err) {
    // Half a backup must not pass for one: without the manifest, restore refuses it anyway.
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

async function write(dataDir: string, dir: string, opts: BackupOptions, env: Readonly<Record<string, string | undefined>>): Promise<Manifest> {
  const files: BackupFile[] = [];
  const kind = opts.databaseUrl ? 'postgres' : 'pglite';

  const database = DATABASE_FILES[kind];
  opts.progress?.({ step: 'database', file: database, bytes: 0 });
  await dumpDatabase({ dataDir, databaseUrl: opts.databaseUrl, out: join(dir, database) });
  files.push({ path: database, ...(await hashFile(join(dir, database))) });

  files.push({ path: 'data.tar', ...(await tarTree({ dir: dataDir, entries: ['.'], exclude: NOT_COPIED.map((name) => `./${name}`), out: join(dir, 'data.tar'), step: 'data dir', progress: opts.progress })) });

  if (existsSync(join(dataDir, 'volumes')) && readdirSync(join(dataDir, 'volumes')).length) {
    files.push({ path: 'volumes.tar', ...(await tarTree({ dir: join(dataDir, 'volumes'), entries: ['.'], out: join(dir, 'volumes.tar'), step: 'volumes', progress: opts.progress })) });
  }

  const ids = existsSync(join(dataDir, 'environments')) ? readdirSync(join(dataDir, 'environments')).filter((id) => /^[A-Za-z0-9_-]+$/.test(id)) : [];
  if (ids.length) mkdirSync(join(dir, 'environments'), { mode: 0o700 });
  // Environments and snapshots in the runner's btrfs state store are read where it is mounted.
  const store = OfflineStore.existsIn(dataDir) ? await OfflineStore.open(dataDir, 'backing up the state store (runtime/store.img)') : undefined;
  let environments: BackupEnvironment[];
  let snapshots: BackupSnapshot[];
  try {
    environments = [];
    for (const id of ids) environments.push(await backupEnvironment(dataDir, dir, id, store, files, opts.progress));
    snapshots = store ? await backupSnapshots(dir, store, files, opts.progress) : [];
  } finally {
    await store?.close();
  }

  const keys = [{ file: SECRET_KEY_FILE, variable: 'BERTH_SECRET_KEY' }, { file: AUDIT_KEY_FILE, variable: 'BERTH_AUDIT_KEY' }];
  const manifest: Manifest = {
    format: BACKUP_FORMAT,
    version: BACKUP_VERSION,
    berthVersion: VERSION,
    createdAt: new Date().toISOString(),
    dataDir,
    database: { kind, file: database },
    holdsSecrets: keys.filter((k) => env[k.variable] === undefined && existsSync(join(dataDir, k.file))).map((k) => `data.tar: ${k.file}`),
    keysFromEnvironment: keys.filter((k) => env[k.variable] !== undefined).map((k) => k.variable),
    environments,
    snapshots,
    files,
  };
  // Written last, and only then: a directory without it is an unfinished backup.
  writeFileSync(join(dir, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o600 });
  return manifest;
}

/**
 * One environment's directory as a tar. In the state store its files are a tar of their own,
 * read from a read-only snapshot: it is paused only while the snapshot is made. Else (its
 * own disk image, or a plain upper dir) they are in its directory, paused while copied.
 */
async function backupEnvironment(dataDir: string, dir: string, id: string, store: OfflineStore | undefined, files: BackupFile[], progress: BackupProgress | undefined): Promise<BackupEnvironment> {
  const envDir = join(dataDir, 'environments', id);
  const file = `environments/${id}.tar`;
  if (existsSync(join(envDir, STORED_MARKER))) {
    if (!store || !(await store.hasEnv(id))) throw new Error(`environment ${id} is kept in the state store, but ${join(dataDir, 'runtime', 'store.img')} does not hold it: the data dir is damaged; back up the rest by moving environments/${id} out of the data dir`);
    const frozen = await store.freeze(id);
    try {
      files.push({ path: file, ...(await tarTree({ dir: envDir, entries: ['.'], exclude: ENV_HOST_PARTS, out: join(dir, file), step: `environment ${id}`, progress })) });
      const state = `environments/${id}.state.tar`;
      files.push({ path: state, ...(await tarTree({ dir: frozen.dir, entries: ['./upper'], out: join(dir, state), step: `environment ${id}`, progress, runner: store })) });
      return {
        id,
        file,
        bytes: usedBytes(envDir) + (await store.bytes(frozen.dir)),
        copied: frozen.running ? 'paused for a snapshot' : 'not running',
        pausedMs: frozen.pausedMs,
        stored: { file: state, limitBytes: await store.limit(id) },
      };
    } finally {
      await store.drop(frozen);
    }
  }
  const started = performance.now();
  const paused = await pauseEnvironment(id);
  let copied: { bytes: number; sha256: string };
  try {
    copied = await tarTree({ dir: envDir, entries: ['.'], exclude: ENV_HOST_PARTS, out: join(dir, file), step: `environment ${id}`, progress });
  } finally {
    paused.resume();
  }
  files.push({ path: file, ...copied });
  const pausedMs = Math.round(performance.now() - started);
  return { id, file, bytes: usedBytes(envDir), copied: paused.running ? 'paused while copied' : 'not running', pausedMs };
}

/** Every snapshot in the state store: read-only already, each copied as it is. */
async function backupSnapshots(dir: string, store: OfflineStore, files: BackupFile[], progress: BackupProgress | undefined): Promise<BackupSnapshot[]> {
  const ids = await store.snapshots();
  if (ids.length) mkdirSync(join(dir, 'snapshots'), { mode: 0o700 });
  const snapshots: BackupSnapshot[] = [];
  for (const id of ids) {
    const file = `snapshots/${id}.tar`;
    const from = store.snapshotDir(id);
    files.push({ path: file, ...(await tarTree({ dir: from, entries: ['./upper'], out: join(dir, file), step: `snapshot ${id}`, progress, runner: store })) });
    snapshots.push({ id, file, bytes: await store.bytes(from) });
  }
  return snapshots;
}

/** Blocks the disk uses under `dir` (a sparse disk image counts what it holds), this device only. */
function usedBytes(dir: string): number {
  let total = 0;
  const walk = (path: string) => {
    const s = statSync(path, { throwIfNoEntry: false });
    if (!s) return;
    total += s.blocks * 512;
    if (s.isDirectory()) for (const name of readdirSync(path)) if (!(path === dir && name === 'disk')) walk(join(path, name));
  };
  walk(dir);
  return total;
}

/** A `berth up` answering at the address it wrote into the data dir holds the database open. */
async function refuseWhileServing(dataDir: string): Promise<void> {
  let url: string;
  try {
    url = (JSON.parse(readFileSync(join(dataDir, 'client.json'), 'utf8')) as { url: string }).url;
  } catch {
    return;
  }
  const answered = await fetch(new URL('/healthz', url), { signal: AbortSignal.timeout(2000) }).then(
    () => true,
    () => false,
  );
  if (answered) throw conflict(`berth up is running on ${dataDir} (at ${url}): stop it (Ctrl-C or systemctl stop berth) and run berth backup again; its environments keep running and are paused only while each is copied`);
}
