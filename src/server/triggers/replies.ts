// Telling where a task came from how it is doing: the issue comment a GitHub or GitLab task
// keeps up to date, the Slack thread. A task's `reply_to` says where; `replied_state` is the
// state last told, so a reply is owed while it differs from `state`. Replies are sent by one
// replica at a time (a singleton job), woken by the task-event notifications and by a slow
// poll, and a reply that failed (the forge down) is tried again at the next pass: a restart
// or a lost notification only delays one. Only the newest state is told: a comment that was
// behind by two states jumps to the last.
import type { Logger } from 'pino';
import { FINAL_TASK_STATES, type TaskState } from '../../shared/tasks.ts';
import type { Db } from '../db/index.ts';
import { CHANNELS, type ChangeFeed } from '../db/notify.ts';
import type { ReplyTarget } from '../db/schema.ts';
import type { ChangeRequest } from '../../shared/tasks.ts';
import type { Singletons } from '../db/singleton.ts';

/** What a reply tells of a task. */
export interface TaskReplyView {
  id: string;
  goal: string;
  state: TaskState;
  stateReason: string | null;
  /** The task's page in the web UI. */
  url: string;
  project: string | null;
  branch: string | null;
  changeRequest: ChangeRequest | null;
  summary: string | null;
  /** The task this one continues (a review asked for changes): its comment is the one to update. */
  continues: string | null;
}

/**
 * Tells one kind of target (github, gitlab, slack). Returns the target as it should be kept
 * (with the id of the comment or message it made, to update next time), or nothing to keep
 * it as it was. Throws to be tried again later.
 */
export interface Replier {
  readonly kind: ReplyTarget['kind'];
  reply(task: TaskReplyView, target: ReplyTarget): Promise<ReplyTarget | void>;
}

const POLL_MS = 5_000;
/** A task whose replies keep failing is left alone after this long (its forge may be gone for good). */
const GIVE_UP_AFTER_MS = 24 * 60 * 60_000;

export class TriggerReplies {
  readonly #db: Db;
  readonly #feed: ChangeFeed | undefined;
  readonly #singletons: Singletons | undefined;
  readonly #logger: Logger;
  readonly #publicUrl: () => string;
  readonly #repliers = new Map<string, Replier>();
  #timer: NodeJS.Timeout | undefined;
  #stopListening: (() => void) | undefined;
  /** One pass at a time; a wake-up during a pass runs one more after it. */
  #running: Promise<void> | null = null;
  #again = false;
  #closed = false;
  #chain: Promise<void> = Promise.resolve();

  constructor(o: { db: Db; feed?: ChangeFeed | undefined; singletons?: Singletons | undefined; logger: Logger; publicUrl: () => string }) {
    this.#db = o.db;
    this.#feed = o.feed;
    this.#singletons = o.singletons;
    this.#logger = o.logger;
    this.#publicUrl = o.publicUrl;
  }

  register(replier: Replier): void {
    this.#repliers.set(replier.kind, replier);
  }

  start(): void {
    this.#stopListening = this.#feed?.listen(CHANNELS.taskEvents, () => this.wake());
    this.#timer = setInterval(() => this.wake(), POLL_MS);
    this.#timer.unref();
    this.wake();
  }

  /** Runs a pass soon (a task changed). */
  wake(): void {
    if (this.#closed) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = (async () => {
      do {
        this.#again = false;
        try {
          if (this.#singletons) await this.#singletons.run('trigger-replies', () => this.pass());
          else await this.pass();
        } catch (err) {
          this.#logger.warn({ err }, 'trigger replies: a pass failed; trying again shortly');
        }
      } while (this.#again && !this.#closed);
    })().finally(() => {
      this.#running = null;
    });
  }

  /** Sends every reply owed now, after any pass under way (never two at once); resolves when done. */
  pass(): Promise<void> {
    const next = this.#chain.then(() => this.#pass());
    this.#chain = next.catch(() => {});
    return next;
  }

  async #pass(): Promise<void> {
    const owed = await this.#db
      .selectFrom('tasks')
      .leftJoin('projects', 'projects.id', 'tasks.project_id')
      .select(['tasks.id', 'tasks.goal', 'tasks.state', 'tasks.state_reason', 'tasks.branch', 'tasks.change_request', 'tasks.summary', 'tasks.continues_task_id', 'tasks.reply_to', 'tasks.replied_state', 'tasks.updated_at', 'projects.name as project'])
      .where('tasks.reply_to', 'is not', null)
      .where((eb) => eb.or([eb('tasks.replied_state', 'is', null), eb('tasks.replied_state', '!=', eb.ref('tasks.state'))]))
      .where('tasks.updated_at', '>', new Date(Date.now() - GIVE_UP_AFTER_MS))
      .orderBy('tasks.updated_at')
      .limit(200)
      .execute();
    for (const row of owed) {
      if (this.#closed) return;
      const target = row.reply_to!;
      const replier = this.#repliers.get(target.kind);
      if (!replier) continue;
      const view: TaskReplyView = {
        id: row.id,
        goal: row.goal,
        state: row.state,
        stateReason: row.state_reason,
        url: `${this.#publicUrl()}/tasks/${row.id}`,
        project: row.project,
        branch: row.branch,
        changeRequest: row.change_request,
        summary: row.summary,
        continues: row.continues_task_id,
      };
      try {
        const kept = await replier.reply(view, target);
        // Only if nothing was told since: the state read is what was told.
        await this.#db
          .updateTable('tasks')
          .set({ replied_state: row.state, ...(kept ? { reply_to: JSON.stringify(kept) } : {}) })
          .where('id', '=', row.id)
          .execute();
      } catch (err) {
        this.#logger.warn({ err: { message: (err as Error).message }, task: row.id, kind: target.kind }, 'trigger replies: could not tell a task\'s progress; trying again at the next pass');
      }
    }
  }

  /** Whether every reply owed for `taskId` was sent (tests). */
  async settled(taskId: string): Promise<boolean> {
    const row = await this.#db.selectFrom('tasks').select(['state', 'replied_state']).where('id', '=', taskId).executeTakeFirst();
    return !row || row.state === row.replied_state;
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#stopListening?.();
    if (this.#timer) clearInterval(this.#timer);
    await this.#running;
  }
}

/** A task state in words, for a comment or a Slack message. */
export function stateWords(task: Pick<TaskReplyView, 'state' | 'stateReason' | 'changeRequest'>): string {
  switch (task.state) {
    case 'queued':
      return 'queued: waiting for a runner';
    case 'provisioning':
      return 'starting: cloning the repository and preparing its environment';
    case 'running':
      return 'working';
    case 'succeeded':
      return task.changeRequest?.url ? `done: ${task.changeRequest.url}` : `done${task.stateReason ? ` (${task.stateReason})` : ''}`;
    default:
      return `${task.state.replace('_', ' ')}${task.stateReason ? `: ${task.stateReason}` : ''}`;
  }
}

export const isFinal = (state: TaskState) => FINAL_TASK_STATES.has(state);
