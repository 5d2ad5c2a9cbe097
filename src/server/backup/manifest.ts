// What a backup directory holds, written last: a directory without it is an unfinished backup.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { invalid } from '../../shared/errors.ts';

export const MANIFEST_FILE = 'manifest.json';
export const BACKUP_FORMAT = 'berth-backup';
export const BACKUP_VERSION = 1;

const backupFile = z.object({
  /** Relative to the backup directory, no `..`. */
  path: z.string().regex(/^(?!.*\.\.)[A-Za-z0-9._/-]+$/),
  bytes: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});

const backupEnvironment = z.object({
  id: z.string().regex(/^[A-Za-z0-9_-]+$/),
  file: z.string(),
  /** What the environment's directory takes on disk (sparse disk images count what they use). */
  bytes: z.number().int().nonnegative(),
  /**
   * How its state was copied: not running; running and paused (cgroup frozen, disks synced)
   * for the copy; or, in the state store, paused only for a read-only snapshot then copied from it.
   */
  copied: z.enum(['not running', 'paused while copied', 'paused for a snapshot']),
  /** How long it was paused (or, not running, copied) for. */
  pausedMs: z.number().nonnegative(),
  /**
   * An environment in the runner's btrfs state store: its files (the overlay's upper dir)
   * are in a tar of their own, restored into a new subvolume with the same disk limit.
   */
  stored: z.object({ file: z.string(), limitBytes: z.number().int().positive().nullable() }).optional(),
});

/** A snapshot in the state store: its files, restored as a read-only subvolume of the same id. */
const backupSnapshot = z.object({
  id: z.string().regex(/^[a-z]+_[A-Za-z0-9]+$/),
  file: z.string(),
  /** What it references in the store (blocks it shares with environments counted too). */
  bytes: z.number().int().nonnegative(),
});

export const manifestSchema = z.object({
  format: z.literal(BACKUP_FORMAT),
  version: z.literal(BACKUP_VERSION),
  berthVersion: z.string(),
  createdAt: z.string(),
  /** The data dir it was taken from: restore moves the local runner's environments from `local:THAT` to the new one. */
  dataDir: z.string(),
  database: z.object({ kind: z.enum(['pglite', 'postgres']), file: z.string() }),
  /** Key files in the backup: whoever holds the backup can decrypt the org secrets and sign audit heads. */
  holdsSecrets: z.array(z.string()),
  /** Keys given by environment variables, not in the backup: the restored Berth needs the same values. */
  keysFromEnvironment: z.array(z.string()),
  environments: z.array(backupEnvironment),
  /** Absent in backups from before the state store. */
  snapshots: z.array(backupSnapshot).default([]),
  files: z.array(backupFile),
});

export type Manifest = z.infer<typeof manifestSchema>;
export type BackupFile = z.infer<typeof backupFile>;
export type BackupEnvironment = z.infer<typeof backupEnvironment>;
export type BackupSnapshot = z.infer<typeof backupSnapshot>;

/** The manifest of the backup in `dir`, checked; a clear error when there is none or it is not one. */
export function readManifest(dir: string): Manifest {
  const path = join(dir, MANIFEST_FILE);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    throw invalid(`${dir} holds no ${MANIFEST_FILE}: it is not a Berth backup, or its backup did not finish; name the directory \`berth backup\` wrote`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw invalid(`${path} is not JSON: the backup is damaged; use another copy of it`);
  }
  const result = manifestSchema.safeParse(parsed);
  if (!result.success) {
    const version = (parsed as { version?: unknown } | null)?.version;
    if ((parsed as { format?: unknown } | null)?.format === BACKUP_FORMAT && version !== BACKUP_VERSION) throw invalid(`${path} is backup format version ${String(version)}; this Berth restores version ${BACKUP_VERSION}: use the Berth version that wrote it`);
    throw invalid(`${path} is not a Berth backup manifest (${result.error.issues[0]?.path.join('.') ?? ''}: ${result.error.issues[0]?.message ?? ''}); use another copy of the backup`);
  }
  return result.data;
}
