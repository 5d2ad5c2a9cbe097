import type { Environment } from '../../shared/api.ts';
import type { EnvironmentLimits } from '../../shared/environment.ts';
import { isoOrNull as iso, type EnvironmentRow } from '../db/index.ts';
import type { EnvironmentOwnership } from '../ownership.ts';

const num = (v: string | number | null) => (v === null ? null : Number(v));

export function limitsOf(row: EnvironmentRow): EnvironmentLimits {
  return {
    cpus: row.cpus,
    memoryBytes: Number(row.memory_bytes),
    diskBytes: Number(row.disk_bytes),
    pidsLimit: row.pids_limit,
    idleTimeoutMs: num(row.idle_timeout_ms),
    maxLifetimeMs: num(row.max_lifetime_ms),
  };
}

/** The environment as the API shows it to one caller: with whose it is and whether they may use it (ownership.ts). */
export function toApi(row: EnvironmentRow, ownership: EnvironmentOwnership, runnerName?: string | undefined): Environment {
  return {
    ...ownership,
    id: row.id,
    name: row.name,
    image: row.image,
    imageDigest: row.image_digest,
    projectId: row.project_id,
    state: row.state,
    stateReason: row.state_reason,
    limits: limitsOf(row),
    createdAt: iso(row.created_at)!,
    startedAt: iso(row.started_at),
    lastActiveAt: iso(row.last_active_at),
    user: row.run_as ?? null,
    forwardPorts: row.forward_ports ?? [],
    volumes: row.volumes ?? [],
    runnerId: row.runner_id ?? null,
    runnerName: runnerName ?? null,
    snapshotId: row.snapshot_id ?? null,
    pool: row.pool_project_id ? { projectId: row.pool_project_id, prebuildId: row.pool_prebuild_id ?? null } : null,
  };
}
