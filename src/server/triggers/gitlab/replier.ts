// How a task started from GitLab tells its progress: one note on the issue (or merge request)
// it came from, written when the task is first told and edited as its state changes, ending
// with the merge request's link or the reason it failed. The note's id is kept in the task's
// reply_to, so a continuation (which inherits it) edits the same note.
import type { Logger } from 'pino';
import { z } from 'zod';
import type { ReplyTarget } from '../../db/schema.ts';
import type { IntegrationStore } from '../integrations.ts';
import { isFinal, stateWords, type Replier, type TaskReplyView } from '../replies.ts';
import { GitLabApi, GitLabApiError, type Noteable } from './api.ts';
import { gitlabConfig } from './settings.ts';

/** Where a GitLab task's note goes. */
export const GitLabReplyTarget = z.object({
  kind: z.literal('gitlab'),
  apiUrl: z.string(),
  projectId: z.number().int().positive(),
  /** `group/project`, for people reading the task. */
  path: z.string(),
  issueIid: z.number().int().positive().optional(),
  mergeRequestIid: z.number().int().positive().optional(),
  /** The note written, once it is. */
  noteId: z.number().int().positive().optional(),
});
export type GitLabReplyTarget = z.infer<typeof GitLabReplyTarget>;

export function gitlabReplier(o: { integrations: IntegrationStore; logger: Logger }): Replier {
  return {
    kind: 'gitlab',
    async reply(view: TaskReplyView, raw: ReplyTarget): Promise<ReplyTarget | void> {
      const parsed = GitLabReplyTarget.safeParse(raw);
      if (!parsed.success) return o.logger.warn({ task: view.id }, 'gitlab replies: the task\'s reply target is not one Berth wrote; nothing told');
      const target = parsed.data;
      const on: Noteable | null = target.mergeRequestIid ? { type: 'merge_request', iid: target.mergeRequestIid } : target.issueIid ? { type: 'issue', iid: target.issueIid } : null;
      if (!on) return;
      const integration = await o.integrations.get('gitlab');
      const config = integration && gitlabConfig(integration.settings, integration.secrets);
      // The token is the configured GitLab's: it is never sent anywhere else.
      if (!config || config.apiUrl !== target.apiUrl) {
        return o.logger.warn({ task: view.id }, 'gitlab replies: the GitLab integration is gone or now points at another GitLab; the task\'s note is left as it was');
      }
      const api = new GitLabApi(config);
      const body = noteBody(view);
      if (target.noteId) {
        try {
          await api.updateNote(target.projectId, on, target.noteId, body);
          return;
        } catch (err) {
          // Deleted by someone: a new note says it again.
          if (!(err instanceof GitLabApiError && err.status === 404)) throw err;
        }
      }
      const note = await api.createNote(target.projectId, on, body);
      return { ...target, noteId: note.id };
    },
  };
}

/** The note's text for the task's state now. */
export function noteBody(view: TaskReplyView): string {
  const lines = [`**Berth** ${view.continues ? 'is following up' : 'is on it'}: [${view.id}](${view.url})${view.project ? ` in project \`${view.project}\`` : ''}.`, '', `**Status:** ${stateWords(view)}`];
  // A task that failed may still have left a draft (its checks failed): say where.
  if (view.state !== 'succeeded' && view.changeRequest?.url) lines.push('', `Merge request: ${view.changeRequest.url}`);
  if (isFinal(view.state) && view.summary?.trim()) lines.push('', `<details><summary>What the agent said</summary>\n\n${view.summary.trim().slice(0, 4000)}\n\n</details>`);
  if (!isFinal(view.state)) lines.push('', '_This note is updated as the task goes on._');
  return lines.join('\n');
}
