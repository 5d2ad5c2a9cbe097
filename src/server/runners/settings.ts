import { invalid } from '../../shared/errors.ts';
import { parseDuration, parseSize } from '../../shared/units.ts';

/** A runner whose heartbeat is older than this is offline (BERTH_RUNNER_OFFLINE_AFTER: `15s`, `1m`; default 15 s). */
export function runnerOfflineAfterFrom(value: string | undefined): number {
  if (!value?.trim()) return 15_000;
  const ms = parseDuration(value.trim());
  if (ms === undefined || ms < 1_000) throw invalid(`BERTH_RUNNER_OFFLINE_AFTER must be a duration of at least 1s, such as 15s or 1m, not ${JSON.stringify(value)}`);
  return ms;
}

/** Times a task whose runner went offline is started over on another before it fails (BERTH_TASK_RETRIES, default 2). */
export function taskRetriesFrom(value: string | undefined): number {
  if (!value?.trim()) return 2;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 100) throw invalid(`BERTH_TASK_RETRIES must be a whole number from 0 to 100, not ${JSON.stringify(value)}`);
  return n;
}

/**
 * The memory berth up's own runner offers to environments (BERTH_RUNNER_MEMORY: `64g`); by
 * default the host's. Placement never puts more environment memory limits on a runner than this.
 */
export function runnerMemoryFrom(value: string | undefined): number | undefined {
  if (!value?.trim()) return undefined;
  const bytes = parseSize(value.trim());
  if (bytes === undefined || bytes < 64 * 1024 ** 2) throw invalid(`BERTH_RUNNER_MEMORY must be a size of at least 64m, such as 64g, not ${JSON.stringify(value)}`);
  return bytes;
}
