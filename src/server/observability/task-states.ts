import { sql } from 'kysely';
import type { Logger } from 'pino';
import { FINAL_TASK_STATES, type TaskEvent, type TaskState } from '../../shared/tasks.ts';
import type { Db } from '../db/index.ts';
import type { Metrics } from './metrics.ts';

interface Seen {
  state: TaskState;
  at: number;
  /** When a runner claimed it (its provisioning began), if this process saw that. */
  claimedAt: number | undefined;
}

/** Tasks remembered between state changes; a task that never ends here (claimed elsewhere) is forgotten first. */
const MAX_REMEMBERED = 10_000;

/**
 * Hears every task state change (each is a `state` event in its transcript) and writes one
 * log line for it, with where it came from; times the queue wait and the run.
 */
export class TaskStates {
  readonly #db: Db;
  readonly #log: Logger;
  readonly #metrics: Metrics;
  readonly #seen = new Map<string, Seen>();

  constructor(o: { db: Db; logger: Logger; metrics: Metrics }) {
    this.#db = o.db;
    this.#log = o.logger;
    this.#metrics = o.metrics;
  }

  /** Called with every event appended to a task's transcript. */
  noted(taskId: string, event: TaskEvent): void {
    if (event.data.type !== 'state') return;
    const { state: to, reason } = event.data as { state: TaskState; reason?: string | null };
    void this.#record(taskId, event.seq, to, reason ?? null).catch((err) => this.#log.warn({ err, task: taskId }, 'could not log a task state change'));
  }

  async #record(taskId: string, seq: number, to: TaskState, reason: string | null): Promise<void> {
    const now = Date.now();
    // Read before the first await: the next change of this task may be on its way.
    const before = this.#seen.get(taskId);
    this.#seen.delete(taskId);
    const claimedAt = to === 'provisioning' ? now : before?.claimedAt;
    if (!FINAL_TASK_STATES.has(to)) this.#seen.set(taskId, { state: to, at: now, claimedAt });
    if (this.#seen.size > MAX_REMEMBERED) this.#seen.delete(this.#seen.keys().next().value!);

    const row = await this.#db.selectFrom('tasks').select(['org_id', 'created_at']).where('id', '=', taskId).executeTakeFirst();
    // Another process may have made the change before: the transcript has the state before this one.
    const from = before?.state ?? (await this.#previous(taskId, seq));
    this.#log.info({ task: taskId, org: row?.org_id, from, to, ...(reason && { reason }) }, `task ${from ?? 'new'} → ${to}`);

    if (to === 'provisioning' && row) {
      const queuedAt = before?.state === 'queued' ? before.at : new Date(row.created_at).getTime();
      this.#metrics.queueWait.observe(Math.max(0, now - queuedAt) / 1000);
    }
    if (FINAL_TASK_STATES.has(to) && claimedAt !== undefined) this.#metrics.taskDuration.observe({ state: to }, (now - claimedAt) / 1000);
  }

  async #previous(taskId: string, seq: number): Promise<TaskState | null> {
    const row = await this.#db
      .selectFrom('task_events')
      .select(sql<string>`data->>'state'`.as('state'))
      .where('task_id', '=', taskId)
      .where('seq', '<', seq)
      .where(sql<boolean>`data->>'type' = 'state'`)
      .orderBy('seq', 'desc')
      .limit(1)
      .executeTakeFirst();
    return (row?.state as TaskState | undefined) ?? null;
  }
}
