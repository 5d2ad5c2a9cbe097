import { sql } from 'kysely';
import type { Logger } from 'pino';
import { defaultModel } from '../../agent/index.ts';
import type { Db, TaskRow } from '../db/index.ts';
import type { TaskEvents } from './events.ts';
import { TaskEnd, TaskRun, type PipelineDeps } from './pipeline.ts';
import { taskScope } from './sandbox.ts';
import type { TaskSignals } from './service.ts';
import { timerDelay } from '../../shared/units.ts';

/** Runs a claimed task (observability: under a span of its own); by default, just runs it. */
export type TaskTracer = (task: TaskRow, run: () => Promise<void>) => Promise<void>;

/** How often the worker looks for queued work and for tasks cancelled elsewhere. */
const POLL_MS = 1_000;

/**
 * Claims queued tasks for this runner, up to its concurrency, and runs them. The claim
 * is one UPDATE … FOR UPDATE SKIP LOCKED, so several workers on one database never take
 * the same task; a cancel is a stored state this worker notices within a poll.
 */
export class TaskWorker implements TaskSignals {
  readonly #db: Db;
  readonly #deps: PipelineDeps;
  readonly #events: TaskEvents;
  readonly #log: Logger;
  readonly #runnerId: string;
  readonly #concurrency: number;
  readonly #running = new Map<string, { controller: AbortController; done: Promise<void> }>();
  #timer: NodeJS.Timeout | undefined;
  #claiming = false;
  #again = false;
  readonly #trace: TaskTracer;
  #closed = false;

  constructor(opts: { db: Db; deps: PipelineDeps; runnerId: string; concurrency: number; trace?: TaskTracer | undefined }) {
    this.#db = opts.db;
    this.#deps = opts.deps;
    this.#events = opts.deps.events;
    this.#log = opts.deps.logger;
    this.#runnerId = opts.runnerId;
    this.#concurrency = opts.concurrency;
    this.#trace = opts.trace ?? ((_task, run) => run());
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
        const updated = await this.#db.updateTable('tasks').set({ state: 'queued', step: null, runner_id: null, updated_at: new Date() }).where('id', '=', row.id).where('state', '=', 'provisioning').executeTakeFirst();
        if (Number(updated.numUpdatedRows)) {
          await this.#events.append(row.id, { type: 'log', level: 'warn', message: `the runner stopped while the task was ${row.step ?? 'provisioning'}: it starts over` });
          await this.#events.append(row.id, { type: 'state', state: 'queued' });
        }
        continue;
      }
      const reason = `the runner stopped while the task was at step '${row.step ?? 'running'}' (the process was killed or the host restarted)${row.change_request ? '; its change request had been opened' : ''}: retry it with \`berth task retry ${row.id}\``;
      const updated = await this.#db.updateTable('tasks').set({ state: 'failed', state_reason: reason, finished_at: new Date(), updated_at: new Date() }).where('id', '=', row.id).where('state', '=', 'running').executeTakeFirst();
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
      const { rows } = await sql<TaskRow>`
        update tasks set state = 'provisioning', step = 'provisioning', runner_id = ${this.#runnerId}, started_at = now(), updated_at = now(),
          model = case when agent = 'builtin' and (model is null or model_default) then ${fallback}::text else model end,
          model_default = (agent = 'builtin' and (model is null or model_default) and ${fallback}::text is not null)
        where id = (select id from tasks where state = 'queued' order by created_at, id limit 1 for update skip locked)
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
    this.#running.set(row.id, { controller, done });
  }

  /** Cancels stored by another replica (or by this one) stop the run here. */
  async #noticeCancels(): Promise<void> {
    if (!this.#running.size) return;
    try {
      const rows = await this.#db.selectFrom('tasks').select('id').where('id', 'in', [...this.#running.keys()]).where('state', '=', 'cancelled').execute();
      for (const { id } of rows) this.cancel(id);
    } catch (err) {
      this.#log.warn({ err }, 'could not check for cancelled tasks');
    }
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
