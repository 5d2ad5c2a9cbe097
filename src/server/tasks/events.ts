import { sql } from 'kysely';
import type { TaskEvent, TaskEventData } from '../../shared/tasks.ts';
import { isUniqueViolation, type Db } from '../db/index.ts';
import { CHANNELS, type ChangeFeed } from '../db/notify.ts';

type Listener = (event: TaskEvent) => void;

/** One stream following one task: what it has been given, and whether a read is under way. */
interface Follower {
  taskId: string;
  last: number;
  onEvent: Listener;
  reading: boolean;
  /** Something may have landed after the read under way looked: read once more after it. */
  again: boolean;
  /** This process's appends made while a read was under way: given after it, when they follow on. */
  held: TaskEvent[];
  stopped: boolean;
}

/** Appends racing on one task (another replica's) retry this many times before failing. */
const MAX_SEQ_RETRIES = 50;

/**
 * A task's transcript: events stored in order (seq from 1, no gaps) and fanned out to
 * whoever follows the task, on any replica. Each event is written before it is published,
 * so a follower that reconnects with the last seq it saw (here or on another replica) gets
 * exactly the events it missed.
 *
 * The seq is allocated by the insert itself (the task's max + 1): two replicas appending to
 * one task at once (the worker on one, a cancel on another) collide on the primary key, and
 * the loser takes the next number. A seq is thus only ever taken once every lower one is
 * committed, so what a reader sees of a transcript is always a prefix of it.
 *
 * Fan-out: followers on this process hear its appends at once. On PostgreSQL each append
 * also notifies (channel berth_task_events, payload `taskId:seq`, sent at commit), and a
 * replica with followers of that task reads the rows they have not had yet; after the
 * listening connection was lost, every follower reads again.
 */
export class TaskEvents {
  readonly #db: Db;
  readonly #feed: ChangeFeed | undefined;
  /** A chain per task that keeps this process's appends to it in the order they were made. */
  readonly #tails = new Map<string, Promise<unknown>>();
  readonly #followers = new Map<string, Set<Follower>>();
  /** Reads under way for all of a task's followers here, and whether to read once more after. */
  readonly #taskReads = new Map<string, { again: boolean }>();
  readonly #unlisten: (() => void)[] = [];
  #poll: NodeJS.Timeout | undefined;

  constructor(db: Db, feed?: ChangeFeed) {
    this.#db = db;
    this.#feed = feed;
    if (feed?.shared) {
      this.#unlisten.push(
        feed.listen(CHANNELS.taskEvents, (payload) => this.#heard(payload)),
        feed.onResume(() => this.#readAll()),
      );
    }
  }

  append(taskId: string, data: TaskEventData): Promise<TaskEvent> {
    const tail = this.#tails.get(taskId) ?? Promise.resolve();
    const write = tail.catch(() => {}).then(async () => {
      const event = await this.#insert(taskId, data);
      for (const f of this.#followers.get(taskId) ?? []) this.#live(f, event);
      return event;
    });
    this.#tails.set(taskId, write);
    return write;
  }

  async #insert(taskId: string, data: TaskEventData): Promise<TaskEvent> {
    const at = new Date().toISOString();
    const json = JSON.stringify(data);
    const notify = this.#feed?.shared === true;
    for (let attempt = 1; ; attempt++) {
      try {
        const added = sql`insert into task_events (task_id, seq, at, data)
          select ${taskId}::text, coalesce(max(seq), 0) + 1, ${at}::timestamptz, ${json}::jsonb from task_events where task_id = ${taskId}
          returning task_id, seq`;
        // The notification goes out when the insert commits, never before.
        const { rows } = notify
          ? await sql<{ seq: number }>`with added as (${added}) select seq, pg_notify(${CHANNELS.taskEvents}, task_id || ':' || seq) from added`.execute(this.#db)
          : await sql<{ seq: number }>`${added}`.execute(this.#db);
        return { seq: Number(rows[0]!.seq), at, data };
      } catch (err) {
        if (!isUniqueViolation(err) || attempt >= MAX_SEQ_RETRIES) throw err;
      }
    }
  }

  /** Forgets a finished task's append chain; its events stay in the database. */
  release(taskId: string): void {
    const tail = this.#tails.get(taskId);
    if (tail) void tail.catch(() => {}).finally(() => this.#tails.get(taskId) === tail && this.#tails.delete(taskId));
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
   * Calls onEvent with every event after `afterSeq`, stored ones first, then live ones
   * (appended here or on another replica), each exactly once and in order, until the
   * returned function is called.
   */
  follow(taskId: string, afterSeq: number, onEvent: Listener): () => void {
    const f: Follower = { taskId, last: afterSeq, onEvent, reading: false, again: false, held: [], stopped: false };
    const set = this.#followers.get(taskId) ?? new Set();
    set.add(f);
    this.#followers.set(taskId, set);
    this.#startPoll();
    this.#read(f);
    return () => {
      f.stopped = true;
      set.delete(f);
      if (!set.size && this.#followers.get(taskId) === set) this.#followers.delete(taskId);
      if (!this.#followers.size) this.#stopPoll();
    };
  }

  close(): void {
    for (const stop of this.#unlisten.splice(0)) stop();
    this.#stopPoll();
  }

  /** An event just appended here: given at once when it is the next one, else read with those before it. */
  #live(f: Follower, e: TaskEvent): void {
    if (f.stopped || e.seq <= f.last) return;
    if (f.reading) f.held.push(e);
    else if (e.seq === f.last + 1) this.#give(f, e);
    // Another replica's events come before it: read them (and it) from the table.
    else this.#read(f);
  }

  #give(f: Follower, e: TaskEvent): void {
    if (f.stopped || e.seq <= f.last) return;
    f.last = e.seq;
    f.onEvent(e);
  }

  /** Reads what the follower has not had yet; one read at a time, repeated when asked meanwhile. */
  #read(f: Follower): void {
    if (f.stopped) return;
    if (f.reading) {
      f.again = true;
      return;
    }
    f.reading = true;
    f.again = false;
    void this.list(f.taskId, { after: f.last }).then(
      (stored) => {
        f.reading = false;
        for (const e of stored) this.#give(f, e);
        for (const e of f.held.splice(0)) {
          if (e.seq === f.last + 1) this.#give(f, e);
          else if (e.seq > f.last) f.again = true;
        }
        // A full page: there is more to read.
        if (f.again || stored.length >= 10_000) this.#read(f);
      },
      () => {
        // The database is unreachable: the poll tries again (the table has what was held).
        f.reading = false;
        f.held.length = 0;
      },
    );
  }

  /**
   * Reads a task's new events once for all its followers here (many people may watch one
   * task): from the earliest any of them has, each given what follows its own last.
   */
  #readTask(taskId: string): void {
    const followers = this.#followers.get(taskId);
    if (!followers) return;
    const under = this.#taskReads.get(taskId);
    if (under) {
      under.again = true;
      return;
    }
    // A follower reading on its own reads again after, which picks this up.
    const idle = [...followers].filter((f) => {
      if (f.reading) f.again = true;
      return !f.reading;
    });
    if (!idle.length) return;
    const state = { again: false };
    this.#taskReads.set(taskId, state);
    void this.list(taskId, { after: Math.min(...idle.map((f) => f.last)) })
      .then(
        (stored) => {
          for (const f of idle) {
            if (f.reading) f.again = true;
            else for (const e of stored) this.#give(f, e);
          }
          if (stored.length >= 10_000) state.again = true;
        },
        () => {},
      )
      .finally(() => {
        this.#taskReads.delete(taskId);
        if (state.again) this.#readTask(taskId);
      });
  }

  #heard(payload: string): void {
    const at = payload.lastIndexOf(':');
    const seq = Number(payload.slice(at + 1));
    const taskId = payload.slice(0, at);
    const followers = this.#followers.get(taskId);
    if (at < 0 || !Number.isInteger(seq) || !followers) return;
    // This process's own appends were given already: nothing to read for them.
    if ([...followers].some((f) => seq > f.last)) this.#readTask(taskId);
  }

  #readAll(): void {
    for (const taskId of this.#followers.keys()) this.#readTask(taskId);
  }

  // A safety net, not the way events travel: notifications carry them (or, on PGlite and
  // without a feed, this process's own appends do). It also retries a read that failed.
  #startPoll(): void {
    if (this.#poll) return;
    this.#poll = setInterval(() => this.#readAll(), this.#feed?.shared ? 5_000 : 2_000);
    this.#poll.unref();
  }

  #stopPoll(): void {
    clearInterval(this.#poll);
    this.#poll = undefined;
  }
}
