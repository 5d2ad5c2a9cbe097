// A Slack task's thread. Its first message shows the task and its state and is kept up to
// date (chat.update): for a slash command it is a new message in the channel, the thread's
// parent; for a mention it is the first reply under the mention. Each step worth a
// notification gets a reply of its own in the thread: started, pull request opened, done or
// failed (with the reason). The target keeps what was posted, so nothing is said twice.
//
// Berth has no "needs input" state (an agent works to an end or fails): when a task cannot go
// on, it fails with the reason, and that is what the thread is told.
import type { Logger } from 'pino';
import { z } from 'zod';
import type { ReplyTarget } from '../../db/schema.ts';
import type { IntegrationStore } from '../integrations.ts';
import { isFinal, stateWords, type Replier, type TaskReplyView } from '../replies.ts';
import { slackApp, slackClient, slackError } from './client.ts';

/** What a Slack task's `reply_to` holds. */
export const SlackTarget = z.object({
  kind: z.literal('slack'),
  team: z.string(),
  channel: z.string(),
  /** The thread: the mention's, or (for a slash command) the status message once posted. */
  threadTs: z.string().nullable(),
  /** The Slack user who asked. */
  user: z.string().optional(),
  /** The status message, updated at each state. */
  statusTs: z.string().optional(),
  /** The steps already told in the thread. */
  told: z.array(z.enum(['started', 'pr', 'end'])).default([]),
  /** Set when Slack said the thread cannot be written to (Slack's error): nothing more is tried. */
  lost: z.string().optional(),
});
export type SlackTarget = z.infer<typeof SlackTarget>;
type Step = SlackTarget['told'][number];

/**
 * Slack's answers that no retry changes for this thread (the channel gone, archived, or closed
 * to the app): the thread is given up, said once in the log, instead of tried every pass.
 * Others (Slack down, a revoked token an administrator may replace) are tried again.
 */
const THREAD_LOST = new Set(['channel_not_found', 'not_in_channel', 'is_archived', 'restricted_action', 'cannot_reply_to_message', 'thread_locked']);

export class SlackReplier implements Replier {
  readonly kind = 'slack' as const;
  readonly #integrations: IntegrationStore;
  readonly #logger: Logger;

  constructor(o: { integrations: IntegrationStore; logger: Logger }) {
    this.#integrations = o.integrations;
    this.#logger = o.logger;
  }

  async reply(task: TaskReplyView, target: ReplyTarget): Promise<ReplyTarget | void> {
    const parsed = SlackTarget.safeParse(target);
    if (!parsed.success) {
      this.#logger.warn({ task: task.id }, 'slack: a task\'s reply target is not one this version understands; nothing told');
      return;
    }
    if (parsed.data.lost) return;
    const app = await slackApp(this.#integrations);
    // Thrown, so tried again at the next pass (for a day): an administrator may set it up again.
    if (!app) throw new Error('the Slack app is not set up');
    const slack = slackClient(app, this.#logger);
    const t = { ...parsed.data, told: [...parsed.data.told] };

    try {
      const status = statusText(task, t.user);
      if (t.statusTs) {
        await slack.chat.update({ channel: t.channel, ts: t.statusTs, text: status }).catch((err: unknown) => {
          // Someone deleted it: the thread's replies still tell the rest.
          if (slackError(err) !== 'message_not_found') throw err;
        });
      } else {
        const posted = await slack.chat.postMessage({ channel: t.channel, text: status, unfurl_links: false, ...(t.threadTs ? { thread_ts: t.threadTs } : {}) });
        t.statusTs = posted.ts!;
        t.threadTs ??= posted.ts!;
      }
      for (const step of stepsOwed(task, t.told)) {
        await slack.chat.postMessage({ channel: t.channel, thread_ts: t.threadTs!, text: stepText(step, task), unfurl_links: false });
        t.told.push(step);
      }
    } catch (err) {
      const error = slackError(err);
      if (!THREAD_LOST.has(error)) throw err;
      this.#logger.warn({ task: task.id, channel: t.channel, error }, 'slack: the task\'s thread cannot be written to (invite the app to the channel for the next tasks); its progress is no longer told there');
      return { ...t, lost: error };
    }
    return t;
  }
}

/** Steps to tell now, in order; a task that ended before it was told it started skips "started". */
function stepsOwed(task: TaskReplyView, told: readonly Step[]): Step[] {
  const owed: Step[] = [];
  if (!told.includes('started') && (task.state === 'provisioning' || task.state === 'running')) owed.push('started');
  if (!told.includes('pr') && task.changeRequest?.url) owed.push('pr');
  if (!told.includes('end') && isFinal(task.state)) owed.push('end');
  return owed;
}

function stepText(step: Step, task: TaskReplyView): string {
  const link = `<${task.url}|${task.id}>`;
  switch (step) {
    case 'started':
      return `Started ${link}${task.project ? ` in \`${escape(task.project)}\`` : ''}: ${task.state === 'running' ? 'the agent is at work' : 'preparing its environment'}.`;
    case 'pr':
      return `Opened a pull request: ${task.changeRequest!.url}`;
    case 'end':
      if (task.state === 'succeeded') {
        const where = task.changeRequest?.url ? `: ${task.changeRequest.url}` : task.branch ? `: the changes are on branch \`${escape(task.branch)}\`` : '';
        return `Done ${link}${where}.${task.summary ? `\n>${escape(task.summary.slice(0, 1500)).replace(/\n/g, '\n>')}` : ''}`;
      }
      return `${task.state === 'timed_out' ? 'Timed out' : task.state === 'cancelled' ? 'Cancelled' : 'Failed'} ${link}${task.stateReason ? `: ${escape(task.stateReason.slice(0, 1500))}` : '.'}`;
  }
}

function statusText(task: TaskReplyView, user: string | undefined): string {
  const goal = escape(task.goal.length > 300 ? `${task.goal.slice(0, 300)}…` : task.goal);
  return `Task <${task.url}|${task.id}>${user ? ` for <@${user}>` : ''}${task.project ? ` in \`${escape(task.project)}\`` : ''}: ${escape(stateWords(task))}\n>${goal.replace(/\n/g, '\n>')}`;
}

/** Slack reads `&`, `<` and `>` as markup; text from a task or a person is shown as written. */
function escape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
