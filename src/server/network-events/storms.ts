// Denial storms: a tool in a task's environment that keeps asking for a destination the
// policy refuses (npm retrying a refused registry for ten minutes). Counting alone lives
// here; what to tell the user, and stopping the command, is tasks/denials.ts's.
import { invalid } from '../../shared/errors.ts';
import { parseDuration } from '../../shared/units.ts';

export interface StormSettings {
  /** Refusals of one destination, with no gap longer than gapMs between them, that make a storm. */
  threshold: number;
  /** How long a storm may go on, with nothing let through meanwhile, before a setup or check command is stopped; null: never. */
  failFastMs: number | null;
  /** A pause this long between two refusals starts the count again. */
  gapMs: number;
}

export const DEFAULT_STORM_SETTINGS: StormSettings = { threshold: 40, failFastMs: 60_000, gapMs: 60_000 };

/** BERTH_DENIAL_STORM_THRESHOLD (a whole number, 2 or more) and BERTH_DENIAL_FAIL_FAST (a duration, or off). */
export function stormSettingsFrom(env: NodeJS.ProcessEnv): StormSettings {
  const s = { ...DEFAULT_STORM_SETTINGS };
  const threshold = env.BERTH_DENIAL_STORM_THRESHOLD?.trim();
  if (threshold) {
    const n = Number(threshold);
    if (!Number.isInteger(n) || n < 2 || n > 1_000_000) throw invalid(`BERTH_DENIAL_STORM_THRESHOLD must be a whole number from 2 up, such as 40; got '${threshold}'`);
    s.threshold = n;
  }
  const failFast = env.BERTH_DENIAL_FAIL_FAST?.trim();
  if (failFast) {
    if (failFast.toLowerCase() === 'off') s.failFastMs = null;
    else {
      const ms = parseDuration(failFast);
      if (ms === undefined || ms <= 0) throw invalid(`BERTH_DENIAL_FAIL_FAST must be a duration such as 60s or 2m, or off; got '${failFast}'`);
      s.failFastMs = ms;
    }
  }
  return s;
}

/** One refused destination of one task's environment. */
export interface Storm {
  taskId: string;
  environmentId: string;
  host: string;
  port: number;
  rule: string;
  /** Refusals in this streak so far. */
  count: number;
  /** When the streak's first refusal came (ms). */
  since: number;
  lastAt: number;
  /** Whether the storm was reported (it is, once, when count reaches the threshold). */
  reported: boolean;
}

interface TaskState {
  /** Per destination (host, port, rule). */
  streaks: Map<string, Storm>;
  /** The last time the environment was let through anywhere. */
  lastAllowedAt: number;
}

/** Destinations counted per task at most: a task asking for thousands of names costs no more memory. */
const MAX_STREAKS = 1_000;

/** Where the network event recorder reports what a task's environment was refused and let through. */
export interface DenialObserver {
  refused(taskId: string, environmentId: string, d: { host: string; port: number; rule: string }, now: number): void;
  allowed(taskId: string, now: number): void;
}

export class DenialStorms {
  readonly settings: StormSettings;
  readonly #tasks = new Map<string, TaskState>();

  constructor(settings: StormSettings = DEFAULT_STORM_SETTINGS) {
    this.settings = settings;
  }

  #task(taskId: string): TaskState {
    let t = this.#tasks.get(taskId);
    // Tasks are forgotten when they end; this only bounds what one that was not could keep.
    if (!t && this.#tasks.size >= 10_000) this.#tasks.clear();
    if (!t) this.#tasks.set(taskId, (t = { streaks: new Map(), lastAllowedAt: -Infinity }));
    return t;
  }

  /** A refusal; returns the storm when this one makes it (once per streak). */
  refused(taskId: string, environmentId: string, d: { host: string; port: number; rule: string }, now: number): Storm | null {
    const t = this.#task(taskId);
    const key = `${d.host}\0${d.port}\0${d.rule}`;
    let s = t.streaks.get(key);
    if (s && now - s.lastAt > this.settings.gapMs) {
      t.streaks.delete(key);
      s = undefined;
    }
    if (!s) {
      if (t.streaks.size >= MAX_STREAKS) return null;
      s = { taskId, environmentId, host: d.host, port: d.port, rule: d.rule, count: 0, since: now, lastAt: now, reported: false };
      t.streaks.set(key, s);
    }
    s.count += 1;
    s.lastAt = now;
    if (s.reported || s.count < this.settings.threshold) return null;
    s.reported = true;
    return s;
  }

  /** The environment was let through somewhere: it is getting work done. */
  allowed(taskId: string, now: number): void {
    const t = this.#tasks.get(taskId);
    if (t) t.lastAllowedAt = now;
  }

  /**
   * A storm that has gone on for failFastMs with nothing let through since it began, and
   * is still going (a refusal within the last gap): the command behind it is only waiting
   * out its retries. Null if none (or fail-fast is off).
   */
  stuck(taskId: string, now: number): Storm | null {
    const failFast = this.settings.failFastMs;
    const t = this.#tasks.get(taskId);
    if (failFast === null || !t) return null;
    for (const s of t.streaks.values()) {
      if (!s.reported || now - s.since < failFast || t.lastAllowedAt >= s.since) continue;
      if (now - s.lastAt <= Math.min(this.settings.gapMs, Math.max(failFast, 10_000))) return s;
    }
    return null;
  }

  forget(taskId: string): void {
    this.#tasks.delete(taskId);
  }
}
