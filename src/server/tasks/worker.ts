import { sql } from 'kysely';
import type { Logger } from 'pino';
import { defaultModel } from '../../agent/index.ts';
import type { Db, TaskRow } from '../db/index.ts';
import type { TaskEvents } from './events.ts';
import { RunnerGone, TaskEnd, TaskRun, type PipelineDeps } from './pipeline.ts';
import { taskScope } from './sandbox.ts';
import type { TaskSignals } from './service.ts';
import { timerDelay } from '../../shared/units.ts';
import { DEFAULT_LIMITS } from '../../shared/environment.ts';
import { memoryOf, type RunnerPool } from '../runners/pool.ts';

/** Runs a claimed task (observability: under a span of its own); by default, just runs it. */
export type TaskTracer = (task: TaskRow, run: () => Promise<void>) => Promise<void>;

/** How often the worker looks for queued work and for tasks cancelled elsewhere. */
const POLL_MS = 1_000;

/**
 * Claims queued tasks for one runner, up to its concurrency, and runs them. The claim
 * is one UPDATE … FOR UPDATE SKIP LOCKED, so several workers on one database never take
 * the same task; it takes only tasks whose labels the runner carries and whose memory it
 * has free, and none while the runner drains or is offline. Each claim takes the task's
 * next lease: a cancel, or a lease taken from this run (its runner was thought dead and
 * the task went to another), is noticed within a poll and stops the run.
 */
export class TaskWorker implements TaskSignals {
  readonly #db: Db;
  readonly #deps: PipelineDeps;
  readonly #events: TaskEvents;
  readonly #log: Logger;
  readonly #runnerId: string;
  readonly #concurrency: number;
  readonly #running = new Map<string, { controller: AbortController; done: Promise<void>; lease: number }>();
  readonly #pool: RunnerPool | undefined;
  #timer: NodeJS.Timeout | undefined;
  #claiming = false;
  #again = false;
  readonly #trace: TaskTracer;
  #closed = false;

  /** @param opts.pool where the memory placed on each runner is counted; without it memory does not limit claims. */
  constructor(opts: { db: Db; deps: PipelineDeps; runnerId: string; concurrency: number; trace?: TaskTracer | undefined; pool?: RunnerPool | undefined }) {
    this.#db = opts.db;
    this.#pool = opts.pool;
    this.#deps = opts.deps;
    this.#events = opts.deps.events;
    this.#log = opts.deps.logger;
    this.#runnerId = opts.runnerId;
    this.#concurrency = opts.concurrency;
    this.#trace = opts.trace ?? ((_task, run) => run());
  }

  get runnerId(): string {
    return this.#runnerId;
  }

  get running(): number {
    return this.#running.size;
  }

  /** How many tasks it works on at once. */
  get concurrency(): number {
    return this.#concurrency;
  }

  /**
   * After a restart: tasks this runner had under way did not finish. One still being
   * provisioned had no effect worth keeping and goes back to the queue; one whose agent
   * had started ends as failed with the reason, never silently lost or reported done.
   */
  async recover(): Promise<void> {
    const rows = await this.#db.selectFrom('tasks').selectAll().where('runner_id', '=', this.#runnerId).where('state', 'in', ['provisioning', 'running']).execute();
    for (const row of rows) {
      if (row.state === 'provisioning') {
        const updated = await this.#db.updateTable('tasks').set({ state: 'queued', step: null, runner_id: null, updated_at: new Date() }).where('id', '=', row.id).where('state', '=', 'provisioning').where('lease', '=', row.lease).executeTakeFirst();
        if (Number(updated.numUpdatedRows)) {
          await this.#events.append(row.id, { type: 'log', level: 'warn', message: `the runner stopped while the task was ${row.step ?? 'provisioning'}: it starts over` });
          await this.#events.append(row.id, { type: 'state', state: 'queued' });
        }
        continue;
      }
      const reason = `the runner stopped while the task was at step '${row.step ?? 'running'}' (the process was killed or the host restarted)${row.change_request ? '; its change request had been opened' : ''}: retry it with \`berth task retry ${row.id}\``;
      const updated = await this.#db.updateTable('tasks').set({ state: 'failed', state_reason: reason, finished_at: new Date(), updated_at: new Date() }).where('id', '=', row.id).where('state', '=', 'running').where('lease', '=', row.lease).executeTakeFirst();
      if (Number(updated.numUpdatedRows)) await this.#events.append(row.id, { type: 'state', state: 'failed', reason });
      if (row.environment_id) await this.#deps.environments.stop(taskScope(row.org_id, row.id, row.owner_id), row.environment_id, `task ${row.id} was interrupted`).catch(() => {});
    }
    if (rows.length) this.#log.info({ tasks: rows.length }, 'recovered tasks interrupted by a restart');
  }

  start(): void {
    this.#timer = setInterval(() => {
      this.poke();
      void this.#noticeCancels();
    }, POLL_MS);
    this.#timer.unref();
    this.poke();
  }

  poke(): void {
    if (this.#closed) return;
    if (this.#claiming) {
      this.#again = true;
      return;
    }
    this.#claiming = true;
    void this.#claimAll()
      .catch((err) => this.#log.error({ err }, 'could not claim tasks'))
      .finally(() => {
        this.#claiming = false;
        if (this.#again) {
          this.#again = false;
          this.poke();
        }
      });
  }

  cancel(taskId: string): void {
    this.#running.get(taskId)?.controller.abort(new TaskEnd('cancelled', 'cancelled'));
  }

  async #claimAll(): Promise<void> {
    // A built-in agent task that named no model runs with this runner's default: written
    // with the claim, so the task shows the model it really used.
    const fallback = defaultModel(this.#deps.modelEnv) ?? null;
    while (!this.#closed && this.#running.size < this.#concurrency) {
      const runner = await this.#db.selectFrom('runners').select(['labels', 'draining', 'offline_at', 'report']).where('id', '=', this.#runnerId).executeTakeFirst();
      // Draining: what runs finishes, nothing new starts. Offline: its tasks are being moved elsewhere.
      if (runner?.draining || runner?.offline_at) return;
      const free = !runner || !this.#pool ? Number.MAX_SAFE_INTEGER : memoryOf(runner) - ((await this.#pool.placedMemory()).get(this.#runnerId) ?? 0);
      const { rows } = await sql<TaskRow>`
        update tasks set state = 'provisioning', step = 'provisioning', runner_id = ${this.#runnerId}, lease = lease + 1, started_at = now(), updated_at = now(),
          model = case when agent = 'builtin' and (model is null or model_default) then ${fallback}::text else model end,
          model_default = (agent = 'builtin' and (model is null or model_default) and ${fallback}::text is not null)
        where id = (
          select id from tasks
          where state = 'queued' and runner_labels <@ ${JSON.stringify(runner?.labels ?? {})}::jsonb
            and coalesce(memory_bytes, ${DEFAULT_LIMITS.memoryBytes}) <= ${free}
          order by created_at, id limit 1 for update skip locked)
        returning *`.execute(this.#db);
      const row = rows[0];
      if (!row) return;
      this.#launch(row);
    }
  }

  #launch(row: TaskRow): void {
    const controller = new AbortController();
    const timeout = setTimeout(() => controller.abort(new TaskEnd('timed_out', `the task ran past its time limit of ${Math.round(row.budget.timeoutMs / 60_000)} min`)), timerDelay(row.budget.timeoutMs));
    const done = this.#trace(row, () => new TaskRun(this.#deps, row, controller.signal).run())
      .catch((err) => this.#log.error({ err, task: row.id }, 'task run crashed'))
      .finally(() => {
        clearTimeout(timeout);
        this.#running.delete(row.id);
        this.poke();
      });
    this.#running.set(row.id, { controller, done, lease: row.lease });
  }

  /**
   * Cancels stored by another replica (or by this one) stop the run here, and so does a lease
   * taken from it: its runner was found offline and the task was queued again or failed.
   */
  async #noticeCancels(): Promise<void> {
    if (!this.#running.size) return;
    try {
      const rows = await this.#db.selectFrom('tasks').select(['id', 'state', 'lease']).where('id', 'in', [...this.#running.keys()]).execute();
      for (const { id, state, lease } of rows) {
        const run = this.#running.get(id);
        if (!run) continue;
        if (lease !== run.lease) run.controller.abort(new TaskEnd('failed', 'the task was taken from this runner (it was found offline): this run stops and writes nothing more'));
        else if (state === 'cancelled') this.cancel(id);
      }
    } catch (err) {
      this.#log.warn({ err }, 'could not check for cancelled tasks');
    }
  }

  /**
   * Its runner left this process (a connection that ended): stops claiming and stops its
   * runs without writing, leaving their tasks to the runner sweep (retried elsewhere if the
   * runner stays away) or to the worker of the runner's next connection.
   */
  async detach(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    for (const { controller } of this.#running.values()) controller.abort(new RunnerGone(`runner ${this.#runnerId} left`));
    await Promise.all([...this.#running.values()].map((r) => r.done));
  }

  /**
   * Stops claiming and ends what runs: on a clean shutdown tasks end as failed with the
   * reason rather than being left for a recovery to find.
   */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    for (const { controller } of this.#running.values()) controller.abort(new TaskEnd('failed', 'Berth was shut down while the task ran: retry it with `berth task retry`'));
    await Promise.all([...this.#running.values()].map((r) => r.done));
  }
}
