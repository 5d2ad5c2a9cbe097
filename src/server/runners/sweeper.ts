import { sql } from 'kysely';
import type { Logger } from 'pino';
import { formatDuration } from '../../shared/units.ts';
import type { Db } from '../db/index.ts';
import type { EnvironmentService } from '../environments/service.ts';
import type { TaskEvents } from '../tasks/events.ts';
import { requeueRunnerTasks } from '../tasks/requeue.ts';
import type { RunnerPool } from './pool.ts';
import { MISSED_BEATS } from './registry.ts';

export interface RunnerSweepOptions {
  db: Db;
  pool: RunnerPool;
  environments: EnvironmentService;
  events: TaskEvents;
  logger: Logger;
  /** A runner is offline after three missed heartbeats, and never sooner than this (BERTH_RUNNER_OFFLINE_AFTER, default 15 s). */
  offlineAfterMs: number;
  /** Times a task is started over on another runner before it fails (BERTH_TASK_RETRIES, default 2). */
  taskRetries: number;
  /**
   * Runs the sweep on one replica at a time (an advisory-lock helper); without it, each
   * process sweeps, which is safe (every write is conditional) but repeats the work.
   */
  exclusive?: (<T>(name: string, fn: () => Promise<T>) => Promise<T | undefined>) | undefined;
}

/**
 * Finds runners whose heartbeat stopped and acts for them: marks them offline, makes their
 * environments lost and moves their tasks in flight to other runners (or fails them past the
 * retry limit). When such a runner beats again and is connected here, its lost environments
 * are reconciled: running, stopped, or failed as found.
 */
export class RunnerSweeper {
  readonly #o: RunnerSweepOptions;
  #timer: NodeJS.Timeout | undefined;
  #sweeping: Promise<void> | undefined;

  constructor(opts: RunnerSweepOptions) {
    this.#o = opts;
  }

  /** Sweeps every third of the offline time (between 0.25 s and 5 s). */
  start(): void {
    const every = Math.min(5_000, Math.max(250, Math.floor(this.#o.offlineAfterMs / 3)));
    this.#timer = setInterval(() => void this.sweep(), every);
    this.#timer.unref();
  }

  /** One pass; a pass already under way is waited for rather than run twice. */
  sweep(): Promise<void> {
    this.#sweeping ??= (async () => {
      try {
        const run = () => this.#sweepOnce();
        await (this.#o.exclusive ? this.#o.exclusive('runner-sweep', run) : run());
        // On every replica: the runners whose connection this one holds are reconciled here.
        await this.reconcileReturned();
      } catch (err) {
        this.#o.logger.error({ err }, 'runner sweep failed');
      } finally {
        this.#sweeping = undefined;
      }
    })();
    return this.#sweeping;
  }

  async #sweepOnce(): Promise<void> {
    const { db, environments, events, logger, offlineAfterMs, taskRetries } = this.#o;
    // Ages by the database's clock: the runners' and replicas' clocks need not agree.
    const found = await db
      .updateTable('runners')
      .set({ offline_at: sql<Date>`now()` })
      .where('offline_at', 'is', null)
      // Three missed beats, and never sooner than offlineAfterMs: a connection that dropped (or a
      // clean stop) is given that long to come back before its work is moved.
      .where('heartbeat_at', '<', sql<Date>`now() - make_interval(secs => greatest(${offlineAfterMs / 1000}::float8, ${MISSED_BEATS}::float8 * coalesce((report->>'heartbeatMs')::float8, 0) / 1000))`)
      .returning(['id', 'name', 'stopped_at'])
      .execute();
    for (const r of found) logger.warn({ runner: r.id, name: r.name }, r.stopped_at ? 'runner disconnected and did not come back: marked offline' : 'runner heartbeat stopped: marked offline');
    // Every offline runner, not only those found now: a pass cut short is finished by the next.
    const offline = await db.selectFrom('runners').select(['id', 'name', 'stopped_at']).where('offline_at', 'is not', null).execute();
    for (const r of offline) {
      const why = r.stopped_at ? `runner '${r.name}' went offline (it disconnected and was not back within ${formatDuration(offlineAfterMs)})` : `runner '${r.name}' went offline (no heartbeat for ${formatDuration(offlineAfterMs)})`;
      const lost = await environments.markLost(r.id, why);
      const tasks = await requeueRunnerTasks(db, events, r.id, why, taskRetries);
      if (lost.length || tasks.requeued.length || tasks.failed.length) {
        logger.warn({ runner: r.id, environments: lost.length, requeued: tasks.requeued.length, failed: tasks.failed.length }, 'runner offline: its environments are lost, its tasks moved');
      }
    }
  }

  /** Runners back online (beating, connected here) that still have lost environments: reconciled. */
  async reconcileReturned(): Promise<void> {
    const { db, pool, environments, logger } = this.#o;
    const rows = await db.selectFrom('environments').select('runner_id').distinct().where('state', '=', 'lost').execute();
    const ids = [...new Set(rows.map((r) => pool.idOf(r.runner_id)).filter((id): id is string => id !== undefined && pool.has(id)))];
    if (!ids.length) return;
    const online = await db.selectFrom('runners').select('id').where('id', 'in', ids).where('offline_at', 'is', null).execute();
    for (const { id } of online) {
      logger.info({ runner: id }, 'runner is back: reconciling its lost environments');
      await environments.reconcile(id, { onlyLost: true });
    }
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.#sweeping;
  }
}
