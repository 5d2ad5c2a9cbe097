// How a task started from GitHub tells its issue how it is doing: one comment, made when the
// first reply is owed (with the task's link), then edited in place as the state changes, ending
// with the pull request or the reason it failed. The comment's id is kept in the reply target.
import { z } from 'zod';
import type { ReplyTarget } from '../../db/schema.ts';
import { stateWords, type Replier, type TaskReplyView } from '../replies.ts';
import { GitHubCallError, type GitHubApp } from './client.ts';

/** Where a GitHub task replies, as the handler writes it. */
export const GitHubReplyTarget = z.object({
  kind: z.literal('github'),
  apiUrl: z.string(),
  owner: z.string(),
  repo: z.string(),
  issue: z.number().int().positive(),
  pullRequest: z.boolean(),
  installationId: z.number().int().positive(),
  commentId: z.number().int().positive().optional(),
});
export type GitHubReplyTarget = z.infer<typeof GitHubReplyTarget>;

const ICONS: Record<TaskReplyView['state'], string> = {
  queued: '⏳',
  provisioning: '⏳',
  running: '🛠️',
  succeeded: '✅',
  failed: '❌',
  cancelled: '⛔',
  timed_out: '⌛',
};

/** The comment's text for a state: what the task is doing, its link, and at the end the pull request or the reason. */
export function commentText(view: TaskReplyView): string {
  const lines = [`${ICONS[view.state]} **Berth** [task \`${view.id}\`](${view.url})${view.project ? ` (project ${view.project})` : ''}: ${stateWords(view)}`];
  if (view.continues) lines.push('', `Continues task \`${view.continues}\` on its branch${view.branch ? ` \`${view.branch}\`` : ''}.`);
  // stateWords names the pull request; without one, the agent's summary says what came of it.
  if (view.state === 'succeeded' && !view.changeRequest?.url && view.summary) lines.push('', view.summary.slice(0, 2_000));
  return lines.join('\n');
}

/** `app(apiUrl)`: the instance's App for that GitHub, or null when it is no longer set up. */
export function githubReplier(o: { app: (apiUrl: string) => Promise<GitHubApp | null> }): Replier {
  return {
    kind: 'github',
    async reply(view: TaskReplyView, raw: ReplyTarget): Promise<ReplyTarget | void> {
      const target = GitHubReplyTarget.safeParse(raw);
      // Not one this replier wrote: nothing it can tell (the outbox then stops asking).
      if (!target.success) return;
      const t = target.data;
      const app = await o.app(t.apiUrl);
      if (!app) return;
      const api = app.repo(t.installationId, t.owner, t.repo);
      const text = commentText(view);
      if (t.commentId) {
        try {
          await api.editComment(t.commentId, text);
          return;
        } catch (e) {
          // Someone deleted it: a new one carries the news.
          if (!(e instanceof GitHubCallError && e.status === 404)) throw e;
        }
      }
      const commentId = await api.comment(t.issue, text);
      return { ...t, commentId };
    },
  };
}
