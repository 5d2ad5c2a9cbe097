// What a prebuild's setup depends on, as one hash: a task whose spec hashes differently does
// not start from it. The image is named here and its digest checked when the environment is
// made from the snapshot (environments/service.ts refuses a snapshot on another digest).
import { createHash } from 'node:crypto';
import type { WorkSpec } from '../tasks/repo-config.ts';

export function specKey(spec: WorkSpec): string {
  const parts = {
    image: spec.image ?? 'default',
    build: spec.build ?? null,
    setup: spec.setup,
    incremental: spec.incremental ?? [],
    env: Object.entries(spec.env).sort(([a], [b]) => a.localeCompare(b)),
    workspaceFolder: spec.workspaceFolder,
    user: spec.user,
    volumes: spec.volumes,
  };
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 32);
}
