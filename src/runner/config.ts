// A runner's settings, read once from the environment and the command's flags into one
// checked object: `berth up` and `berth runner join` both build their LocalRunner from
// it, and nothing under src/runner reads process.env for a setting after that.
import { z } from 'zod';
import { invalid } from '../shared/errors.ts';
import { parseSize } from '../shared/units.ts';
import { parseMirrors, type RegistryMirrors } from './images/mirrors.ts';

const list = z
  .string()
  .optional()
  .transform((v) => (v ?? '').split(',').map((s) => s.trim()).filter(Boolean));

const onUnlessOff = z
  .string()
  .optional()
  .transform((v) => v?.trim().toLowerCase() !== 'off');

const size = (name: string, min = 0) =>
  z
    .string()
    .optional()
    .transform((v, ctx) => {
      if (v === undefined || v.trim() === '') return undefined;
      const bytes = parseSize(v);
      if (bytes === undefined || bytes < min) {
        ctx.addIssue({ code: 'custom', message: `${name} must be a size like 32g or 500m, not ${JSON.stringify(v)}` });
        return z.NEVER;
      }
      return bytes;
    });

const wholeNumber = (name: string, what: string) =>
  z
    .string()
    .optional()
    .transform((v, ctx) => {
      if (v === undefined || v.trim() === '') return undefined;
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) {
        ctx.addIssue({ code: 'custom', message: `${name} must be ${what}, not ${JSON.stringify(v)}` });
        return z.NEVER;
      }
      return n;
    });

/** The variables a runner reads, each checked; unknown ones are ignored (the process has many). */
const RunnerEnv = z.object({
  BERTH_RUNTIME: z.enum(['crun', 'runc', 'runsc'], { message: 'BERTH_RUNTIME must be crun, runc or runsc' }).optional(),
  BERTH_INIT: z.string().min(1).optional(),
  BERTH_AGENT: onUnlessOff,
  BERTH_DISK_QUOTA: onUnlessOff,
  BERTH_STATE_STORE: z.enum(['auto', 'btrfs', 'image'], { message: 'BERTH_STATE_STORE must be auto, btrfs or image' }).default('auto'),
  CC: z.string().min(1).optional(),
  BERTH_ALLOWED_REGISTRIES: list,
  BERTH_REGISTRY_MIRRORS: z.string().optional(),
  BERTH_MAX_IMAGE_SIZE: size('BERTH_MAX_IMAGE_SIZE', 1),
  BERTH_EXTRA_CA_CERTS: list,
  BERTH_MIN_FREE_DISK: size('BERTH_MIN_FREE_DISK'),
  BERTH_TASK_CONCURRENCY: wholeNumber('BERTH_TASK_CONCURRENCY', 'a whole number of tasks run at once (at least 1)'),
});

export interface RunnerConfig {
  /** The OCI runtime (default: crun, else runc, whichever is installed). */
  runtime: 'crun' | 'runc' | 'runsc' | undefined;
  /** A static init binary for environments without the Berth agent (default: catatonit's usual paths). */
  initBinary: string | undefined;
  /** Run the Berth agent as every environment's PID 1 (BERTH_AGENT=off: no). */
  agent: boolean;
  /** Give each environment a disk image of its limit's size (BERTH_DISK_QUOTA=off: no). */
  diskQuota: boolean;
  /** Where new environments keep their state: the btrfs state store (snapshots), ext4 images, or auto (btrfs where the host has it). */
  stateStore: 'auto' | 'btrfs' | 'image';
  /** The C compiler that builds the agent. */
  compiler: string;
  /** Registries pulls may reach on private addresses. */
  allowedRegistries: string[];
  registryMirrors: RegistryMirrors;
  maxImageBytes: number | undefined;
  /** PEM files of company CAs. */
  extraCaFiles: string[];
  /** Less free space than this on the data dir's disk makes the runner degraded. */
  minFreeDiskBytes: number;
  /** Tasks worked on at once; undefined: two per core. */
  taskConcurrency: number | undefined;
}

/** Flags win over variables; each may be absent. */
export type RunnerFlags = Partial<Pick<RunnerConfig, 'allowedRegistries' | 'extraCaFiles' | 'maxImageBytes' | 'minFreeDiskBytes' | 'taskConcurrency'>>;

/**
 * Reads and checks a runner's settings. A wrong value throws one error that names every
 * wrong setting and what it should be, before anything is made.
 */
export function runnerConfigFrom(env: NodeJS.ProcessEnv, flags: RunnerFlags = {}): RunnerConfig {
  const parsed = RunnerEnv.safeParse(env);
  if (!parsed.success) throw invalid(parsed.error.issues.map((i) => i.message).join('; '));
  const e = parsed.data;
  return {
    runtime: e.BERTH_RUNTIME,
    initBinary: e.BERTH_INIT,
    agent: e.BERTH_AGENT,
    diskQuota: e.BERTH_DISK_QUOTA,
    stateStore: e.BERTH_STATE_STORE,
    compiler: e.CC ?? 'cc',
    allowedRegistries: flags.allowedRegistries ?? e.BERTH_ALLOWED_REGISTRIES,
    registryMirrors: parseMirrors(e.BERTH_REGISTRY_MIRRORS),
    maxImageBytes: flags.maxImageBytes ?? e.BERTH_MAX_IMAGE_SIZE,
    extraCaFiles: flags.extraCaFiles ?? e.BERTH_EXTRA_CA_CERTS,
    minFreeDiskBytes: flags.minFreeDiskBytes ?? e.BERTH_MIN_FREE_DISK ?? 2 * 1024 ** 3,
    taskConcurrency: flags.taskConcurrency ?? e.BERTH_TASK_CONCURRENCY,
  };
}
