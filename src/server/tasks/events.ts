import { sql } from 'kysely';
import type { TaskEvent, TaskEventData } from '../../shared/tasks.ts';
import type { Db } from '../db/index.ts';

type Listener = (event: TaskEvent) => void;

/**
 * A task's transcript: events stored in order (seq from 1) and fanned out to whoever
 * follows the task. Each event is written before it is published, so a follower that
 * reconnects with the last seq it saw gets exactly the events it missed.
 *
 * Fan-out is in-process: the runner that works on a task is the one that appends its
 * events, and followers on this process hear them at once. Followers on another replica
 * poll the table (see follow()).
 */
export class TaskEvents {
  readonly #db: Db;
  /** The next seq per task, and a chain that keeps one task's appends in order. */
  readonly #next = new Map<string, { seq: number | null; tail: Promise<unknown> }>();
  readonly #listeners = new Map<string, Set<Listener>>();

  constructor(db: Db) {
    this.#db = db;
  }

  append(taskId: string, data: TaskEventData): Promise<TaskEvent> {
    const slot = this.#next.get(taskId) ?? { seq: null, tail: Promise.resolve() };
    this.#next.set(taskId, slot);
    const write = slot.tail.catch(() => {}).then(async () => {
      if (slot.seq === null) {
        const row = await this.#db.selectFrom('task_events').select(sql<number>`coalesce(max(seq), 0)`.as('max')).where('task_id', '=', taskId).executeTakeFirst();
        slot.seq = Number(row?.max ?? 0) + 1;
      }
      const event: TaskEvent = { seq: slot.seq, at: new Date().toISOString(), data };
      await this.#db.insertInto('task_events').values({ task_id: taskId, seq: event.seq, at: event.at, data: JSON.stringify(data) }).execute();
      slot.seq += 1;
      for (const listener of this.#listeners.get(taskId) ?? []) listener(event);
      return event;
    });
    slot.tail = write;
    return write;
  }

  /** Forgets a finished task's counters; its events stay in the database. */
  release(taskId: string): void {
    const slot = this.#next.get(taskId);
    if (slot) void slot.tail.finally(() => this.#next.get(taskId) === slot && this.#next.delete(taskId));
  }

  /**
   * Stored events in order: those after `after` and before `before`, the first `limit`
   * of them, or with `tail` the last `tail` (a page read backwards from the newest, so
   * a long transcript's end costs as much as a short one's).
   */
  async list(taskId: string, range: { after?: number; before?: number; tail?: number; limit?: number } = {}): Promise<TaskEvent[]> {
    let q = this.#db.selectFrom('task_events').select(['seq', 'at', 'data']).where('task_id', '=', taskId);
    if (range.after) q = q.where('seq', '>', range.after);
    if (range.before !== undefined) q = q.where('seq', '<', range.before);
    const rows = range.tail !== undefined ? (await q.orderBy('seq', 'desc').limit(range.tail).execute()).reverse() : await q.orderBy('seq').limit(range.limit ?? 10_000).execute();
    return rows.map((r) => ({ seq: r.seq, at: new Date(r.at).toISOString(), data: r.data }));
  }

  /**
   * Calls onEvent with every event after `afterSeq`, stored ones first, then live ones,
   * each exactly once and in order, until the returned function is called.
   */
  follow(taskId: string, afterSeq: number, onEvent: Listener): () => void {
    let last = afterSeq;
    let replaying = true;
    const held: TaskEvent[] = [];
    const deliver = (e: TaskEvent) => {
      if (e.seq <= last) return;
      last = e.seq;
      onEvent(e);
    };
    const listener: Listener = (e) => (replaying ? held.push(e) : deliver(e));
    const set = this.#listeners.get(taskId) ?? new Set();
    set.add(listener);
    this.#listeners.set(taskId, set);
    let stopped = false;
    // Events appended by another replica never reach this process's listeners: a slow
    // poll picks them up (and is a no-op when the live path already delivered them).
    const poll = setInterval(() => {
      if (!replaying) void this.list(taskId, { after: last }).then((es) => !stopped && es.forEach(deliver), () => {});
    }, 2_000);
    poll.unref();
    void this.list(taskId, { after: afterSeq }).then(
      (stored) => {
        if (stopped) return;
        stored.forEach(deliver);
        replaying = false;
        held.splice(0).forEach(deliver);
      },
      () => {
        replaying = false;
      },
    );
    return () => {
      stopped = true;
      clearInterval(poll);
      set.delete(listener);
      if (!set.size) this.#listeners.delete(taskId);
    };
  }
}
