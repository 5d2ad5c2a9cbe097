import type { Logger } from 'pino';
import type { Runner } from '../../runner/index.ts';
import type { Db } from '../db/index.ts';
import type { RunnerPool } from '../runners/pool.ts';
import type { PipelineDeps } from './pipeline.ts';
import { requeueRunnerTasks } from './requeue.ts';
import type { TaskSignals } from './service.ts';
import { TaskWorker, type TaskTracer } from './worker.ts';

export interface RunnerWorkersOptions {
  db: Db;
  pool: RunnerPool;
  deps: PipelineDeps;
  logger: Logger;
  /** Tasks a runner works on at once. */
  concurrency: (runner: Runner) => number;
  /** Times a task is started over elsewhere (BERTH_TASK_RETRIES): for tasks a reconnecting runner left behind. */
  taskRetries: number;
  /** Runs each claimed task (observability: under a span). */
  trace?: TaskTracer | undefined;
}

/**
 * One TaskWorker per runner in the pool: started when a runner is added (berth up's own, a
 * runner that connected), detached when it leaves. Cancels and pokes go to every worker.
 */
export class RunnerWorkers implements TaskSignals {
  readonly #o: RunnerWorkersOptions;
  readonly #workers = new Map<string, TaskWorker>();
  #started = false;
  #closed = false;

  constructor(opts: RunnerWorkersOptions) {
    this.#o = opts;
    opts.pool.onAdded((runner) => void this.#add(runner).catch((err) => opts.logger.error({ err, runner: runner.id }, 'could not start the task worker of a runner')));
    opts.pool.onRemoved((id) => void this.#remove(id));
  }

  /**
   * The worker of a runner already in the pool, made now (not started): berth up's own runner
   * recovers its tasks before the API serves, and starts claiming with start().
   */
  workerFor(runner: Runner): TaskWorker {
    let worker = this.#workers.get(runner.id);
    if (!worker) {
      worker = new TaskWorker({ db: this.#o.db, deps: this.#o.deps, runnerId: runner.id, concurrency: this.#o.concurrency(runner), pool: this.#o.pool, trace: this.#o.trace });
      this.#workers.set(runner.id, worker);
    }
    return worker;
  }

  /** Starts claiming on every runner's worker. */
  start(): void {
    this.#started = true;
    for (const runner of this.#o.pool.all()) this.workerFor(runner).start();
  }

  get(runnerId: string): TaskWorker | undefined {
    return this.#workers.get(runnerId);
  }

  poke(): void {
    for (const w of this.#workers.values()) w.poke();
  }

  cancel(taskId: string): void {
    for (const w of this.#workers.values()) w.cancel(taskId);
  }

  async #add(runner: Runner): Promise<void> {
    if (this.#closed || !this.#started || this.#workers.has(runner.id)) return;
    const worker = this.workerFor(runner);
    // Tasks it had when its last connection ended, run by no worker now: they start over.
    const moved = await requeueRunnerTasks(this.#o.db, this.#o.deps.events, runner.id, `runner '${runner.name}' lost its connection`, this.#o.taskRetries);
    if (moved.requeued.length || moved.failed.length) this.#o.logger.warn({ runner: runner.id, ...moved }, 'tasks left by a runner that reconnected');
    if (this.#workers.get(runner.id) === worker && !this.#closed) worker.start();
  }

  async #remove(id: string): Promise<void> {
    const worker = this.#workers.get(id);
    if (!worker) return;
    this.#workers.delete(id);
    await worker.detach();
  }

  /** Ends every worker's runs (a clean shutdown: tasks fail with the reason). */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all([...this.#workers.values()].map((w) => w.close()));
  }
}
