// The environment state machine. States are written before they are acted on, so the
// transitional states (starting, stopping, deleting) tell a restarted runner what was
// under way when it died. `lost`: its runner went offline; it stays so until that runner
// is back and reconciles it (found running, stopped, or gone: failed).

export const ENVIRONMENT_STATES = [
  'creating',
  'starting',
  'running',
  'stopping',
  'stopped',
  'deleting',
  'deleted',
  'failed',
  'lost',
] as const;

export type EnvironmentState = (typeof ENVIRONMENT_STATES)[number];

const TRANSITIONS: Record<EnvironmentState, readonly EnvironmentState[]> = {
  creating: ['running', 'failed', 'deleting', 'lost'],
  starting: ['running', 'stopped', 'failed', 'deleting', 'lost'],
  running: ['stopping', 'stopped', 'failed', 'deleting', 'lost'],
  stopping: ['stopped', 'failed', 'deleting', 'lost'],
  stopped: ['starting', 'deleting', 'failed', 'lost'],
  failed: ['deleting', 'starting'],
  deleting: ['deleted', 'failed', 'lost'],
  deleted: [],
  // Only its runner's return moves it on: nothing can be started, stopped or removed where its files are out of reach.
  // deleted: forgotten by an administrator while its runner stays away (`env rm --forget`).
  lost: ['running', 'stopped', 'failed', 'deleted'],
};

/** The states an environment on a runner that went offline becomes `lost` from (a failed one stays failed). */
export const LOSABLE: readonly EnvironmentState[] = ['creating', 'starting', 'running', 'stopping', 'stopped', 'deleting'];

export function canTransition(from: EnvironmentState, to: EnvironmentState): boolean {
  return TRANSITIONS[from].includes(to);
}

/** States from which a transition is in flight; seen at startup they mean the last runner died mid-way. */
export const IN_FLIGHT: readonly EnvironmentState[] = ['creating', 'starting', 'stopping', 'deleting'];

/** Resource limits and lifetimes of one environment, in base units. */
export interface EnvironmentLimits {
  cpus: number;
  memoryBytes: number;
  diskBytes: number;
  pidsLimit: number;
  idleTimeoutMs: number | null;
  maxLifetimeMs: number | null;
}

export const LIMIT_BOUNDS = {
  cpus: { min: 0.1, max: 64 },
  memoryBytes: { min: 64 * 1024 ** 2, max: 256 * 1024 ** 3 },
  diskBytes: { min: 256 * 1024 ** 2, max: 4 * 1024 ** 4 },
  pidsLimit: { min: 16, max: 65_536 },
  idleTimeoutMs: { min: 10_000, max: 30 * 86_400_000 },
  maxLifetimeMs: { min: 10_000, max: 365 * 86_400_000 },
} as const;

export const DEFAULT_LIMITS: EnvironmentLimits = {
  cpus: 1,
  memoryBytes: 2 * 1024 ** 3,
  diskBytes: 10 * 1024 ** 3,
  pidsLimit: 1024,
  idleTimeoutMs: 30 * 60_000,
  maxLifetimeMs: 24 * 3_600_000,
};
