import type { Logger } from 'pino';
import type { RunnerReport } from '../../shared/api-runners.ts';
import type { RunnerBeat, RunnerRegistry } from './registry.ts';

export interface HeartbeatOptions {
  registry: RunnerRegistry;
  runner: Omit<RunnerBeat, 'report' | 'startedAt'>;
  /** How often the report is written. */
  everyMs: number;
  /** The runner's report now, without `heartbeatMs` (added here). */
  report: () => Promise<Omit<RunnerReport, 'heartbeatMs'>>;
  logger: Logger;
}

/**
 * Writes a runner's report to the registry now and every `everyMs` after. A failed write
 * is logged and tried again on the next beat: a heartbeat that stops is what the list
 * shows as offline.
 */
export class RunnerHeartbeat {
  readonly #o: HeartbeatOptions;
  readonly #startedAt = new Date();
  #timer: NodeJS.Timeout | undefined;
  #beating: Promise<void> | undefined;

  constructor(opts: HeartbeatOptions) {
    this.#o = opts;
  }

  /** Writes the first beat (so the runner is listed before the API serves), then keeps beating. */
  async start(): Promise<void> {
    await this.#beat();
    this.#timer = setInterval(() => {
      // One write at a time: a slow database skips beats instead of piling them up.
      this.#beating ??= this.#beat()
        .catch((err) => this.#o.logger.warn({ err }, 'could not write the runner heartbeat'))
        .finally(() => (this.#beating = undefined));
    }, this.#o.everyMs);
    this.#timer.unref();
  }

  async #beat(): Promise<void> {
    const report = { ...(await this.#o.report()), heartbeatMs: this.#o.everyMs };
    await this.#o.registry.beat({ ...this.#o.runner, startedAt: this.#startedAt, report });
  }

  /** Stops beating and marks the runner stopped. */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.#beating;
    await this.#o.registry.stopped(this.#o.runner.id).catch((err) => this.#o.logger.warn({ err }, 'could not mark the runner stopped'));
  }
}
