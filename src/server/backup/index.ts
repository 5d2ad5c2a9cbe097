export { backup, NOT_COPIED, type BackupOptions } from './backup.ts';
export { restore, type RestoreOptions } from './restore.ts';
export { readManifest, MANIFEST_FILE, type Manifest } from './manifest.ts';
export type { BackupProgress } from './files.ts';
export { runsHere } from './pause.ts';
