import type { CreateEnvironmentBody } from '../../shared/api.ts';
import { DEFAULT_LIMITS, LIMIT_BOUNDS, type EnvironmentLimits } from '../../shared/environment.ts';
import { invalid } from '../../shared/errors.ts';
import { formatDuration, formatSize, parseDuration, parseSize } from '../../shared/units.ts';

type Bounded = keyof typeof LIMIT_BOUNDS;

function check(field: string, key: Bounded, value: number, fmt: (n: number) => string): number {
  const { min, max } = LIMIT_BOUNDS[key];
  if (value < min || value > max) {
    throw invalid(`${field} must be between ${fmt(min)} and ${fmt(max)}, got ${fmt(value)}`, field);
  }
  return value;
}

const toBytes = (v: number | string) => (typeof v === 'number' ? v : parseSize(v)!);
const toMs = (v: number | string | null): number | null =>
  v === null || v === 0 || v === 'off' ? null : typeof v === 'number' ? v : parseDuration(v)!;

/** Turns the request's human units into checked limits; absurd values are refused, not clamped. */
export function limitsFrom(body: CreateEnvironmentBody, hostCpus: number): EnvironmentLimits {
  const limits = { ...DEFAULT_LIMITS };
  if (body.cpus !== undefined) {
    limits.cpus = check('cpus', 'cpus', body.cpus, String);
    if (body.cpus > hostCpus) throw invalid(`cpus is ${body.cpus} but this host has ${hostCpus}`, 'cpus');
  }
  if (body.memory !== undefined) limits.memoryBytes = check('memory', 'memoryBytes', toBytes(body.memory), formatSize);
  if (body.disk !== undefined) limits.diskBytes = check('disk', 'diskBytes', toBytes(body.disk), formatSize);
  if (body.pids !== undefined) limits.pidsLimit = check('pids', 'pidsLimit', body.pids, String);
  if (body.idleTimeout !== undefined) {
    const ms = toMs(body.idleTimeout);
    limits.idleTimeoutMs = ms === null ? null : check('idleTimeout', 'idleTimeoutMs', ms, formatDuration);
  }
  if (body.maxLifetime !== undefined) {
    const ms = toMs(body.maxLifetime);
    limits.maxLifetimeMs = ms === null ? null : check('maxLifetime', 'maxLifetimeMs', ms, formatDuration);
  }
  return limits;
}

/** The create-body fields that give a new environment these limits (a fork's, an import's): limitsFrom's inverse. */
export function limitsBody(limits: EnvironmentLimits): Pick<CreateEnvironmentBody, 'cpus' | 'memory' | 'disk' | 'pids' | 'idleTimeout' | 'maxLifetime'> {
  return {
    cpus: limits.cpus,
    memory: limits.memoryBytes,
    disk: limits.diskBytes,
    pids: limits.pidsLimit,
    idleTimeout: limits.idleTimeoutMs ?? 'off',
    maxLifetime: limits.maxLifetimeMs ?? 'off',
  };
}
