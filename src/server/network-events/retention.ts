// Network events are many (every request and refusal of every environment), so they are
// kept for a while, not for ever: BERTH_NETWORK_EVENT_RETENTION (default 30 days). Rows
// past it are deleted a bounded batch at a time, so no single delete holds locks on, or
// builds a transaction the size of, a month of traffic.
import type { Logger } from 'pino';
import { invalid } from '../../shared/errors.ts';
import { parseDuration } from '../../shared/units.ts';
import type { Db } from '../db/index.ts';
import type { Singletons } from '../db/singleton.ts';

export const DEFAULT_RETENTION_MS = 30 * 86_400_000;
const MAX_RETENTION_MS = 3650 * 86_400_000;
const SWEEP_INTERVAL_MS = 3_600_000;
const FIRST_SWEEP_MS = 60_000;
const BATCH = 5_000;

/** The retention in ms from BERTH_NETWORK_EVENT_RETENTION ('30d', '12h'…; unset: 30 days; 'off': kept for ever). */
export function retentionFrom(value: string | undefined): number | null {
  const text = value?.trim() ?? '';
  if (text === '') return DEFAULT_RETENTION_MS;
  if (text.toLowerCase() === 'off') return null;
  const ms = parseDuration(text);
  if (ms === undefined || ms <= 0) throw invalid(`BERTH_NETWORK_EVENT_RETENTION must be a duration such as 30d or 12h, or off; got '${value}'`);
  // A cutoff further back than a Date can hold would fail every sweep.
  if (ms > MAX_RETENTION_MS) throw invalid(`BERTH_NETWORK_EVENT_RETENTION is at most 3650d (or off to keep events for ever); got '${value}'`);
  return ms;
}

/**
 * Deletes events older than `olderThanMs`, `batch` rows per statement, until none are
 * left; returns how many went. Rows another replica's sweep holds are skipped, not waited for.
 */
export async function sweepNetworkEvents(db: Db, opts: { olderThanMs: number; now?: number; batch?: number }): Promise<number> {
  const cutoff = new Date((opts.now ?? Date.now()) - opts.olderThanMs);
  const batch = opts.batch ?? BATCH;
  let total = 0;
  for (;;) {
    const r = await db
      .deleteFrom('network_events')
      .where('id', 'in', (eb) => eb.selectFrom('network_events').select('id').where('at', '<', cutoff).orderBy('at').limit(batch).forUpdate().skipLocked())
      .executeTakeFirst();
    const n = Number(r.numDeletedRows);
    total += n;
    if (n < batch) return total;
    // Between batches, other queries get their turn (PGlite runs one at a time).
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/**
 * Sweeps a minute after start and every hour, on one replica at a time (the holder of the
 * `network-event-retention` job); close() waits for a sweep under way.
 */
export class NetworkEventRetention {
  readonly #db: Db;
  readonly #log: Logger;
  readonly #retentionMs: number | null;
  readonly #timers: NodeJS.Timeout[] = [];
  #running: Promise<unknown> = Promise.resolve();

  constructor(opts: { db: Db; logger: Logger; retentionMs: number | null; singletons?: Singletons }) {
    this.#db = opts.db;
    this.#log = opts.logger;
    this.#retentionMs = opts.retentionMs;
    if (this.#retentionMs === null) return;
    const tick = () => void (opts.singletons ? opts.singletons.run('network-event-retention', () => this.sweep()) : this.sweep()).catch(() => {});
    this.#timers.push(setTimeout(tick, FIRST_SWEEP_MS), setInterval(tick, SWEEP_INTERVAL_MS));
    for (const t of this.#timers) t.unref();
  }

  /** One sweep now (after any under way); resolves with the rows deleted. */
  sweep(): Promise<number> {
    const retentionMs = this.#retentionMs;
    if (retentionMs === null) return Promise.resolve(0);
    const next = this.#running.then(async () => {
      const deleted = await sweepNetworkEvents(this.#db, { olderThanMs: retentionMs });
      if (deleted) this.#log.info({ deleted, retentionMs }, 'deleted network events past their retention');
      return deleted;
    });
    this.#running = next.catch((err: unknown) => this.#log.error({ err }, 'could not delete old network events'));
    return next;
  }

  async close(): Promise<void> {
    for (const t of this.#timers) clearTimeout(t);
    await this.#running;
  }
}
