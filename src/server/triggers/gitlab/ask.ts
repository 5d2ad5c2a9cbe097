// What a GitLab event asks of Berth, if anything: the issue labelled with the integration's
// label or assigned to its bot user, or a note starting with its command (`/berth …`) on an
// issue or on a merge request. Pure: the event and the settings in, the ask (or why there is
// none) out.
import type { IssueHook, NoteHook } from './payloads.ts';
import type { GitLabConfig } from './settings.ts';

/** The longest instruction taken from a note. */
const MAX_INSTRUCTION = 8 * 1024;

export type Ask =
  | { on: { type: 'issue'; iid: number }; why: 'label' | 'assigned' | 'command'; instruction: string; noteId: number | null }
  | { on: { type: 'merge_request'; iid: number }; why: 'command'; instruction: string; noteId: number };

/** The ask, or a string saying why the event asks nothing. */
export function askOf(hook: IssueHook | NoteHook, config: Pick<GitLabConfig, 'label' | 'botUsername' | 'command'>): Ask | string {
  if (hook.object_kind === 'issue') {
    const a = hook.object_attributes;
    const action = a.action ?? 'update';
    const label = config.label.toLowerCase();
    const bot = config.botUsername?.toLowerCase() ?? null;
    const hasLabel = (ls: readonly { title: string }[] | null | undefined) => (ls ?? []).some((l) => l.title.toLowerCase() === label);
    const hasBot = (us: readonly { username: string }[] | null | undefined) => bot !== null && (us ?? []).some((u) => u.username.toLowerCase() === bot);
    const on = { type: 'issue' as const, iid: a.iid };
    if (action === 'open' || action === 'reopen') {
      // An issue opened (or reopened) already labelled or assigned.
      if (hasLabel(hook.labels)) return { on, why: 'label', instruction: '', noteId: null };
      if (hasBot(hook.assignees)) return { on, why: 'assigned', instruction: '', noteId: null };
      return `an issue ${action === 'open' ? 'opened' : 'reopened'} without the ${config.label} label`;
    }
    if (action !== 'update') return `an issue event (${action.slice(0, 50)}) that starts nothing`;
    const labels = hook.changes?.labels;
    if (labels && hasLabel(labels.current) && !hasLabel(labels.previous)) return { on, why: 'label', instruction: '', noteId: null };
    const assignees = hook.changes?.assignees;
    if (assignees && hasBot(assignees.current) && !hasBot(assignees.previous)) return { on, why: 'assigned', instruction: '', noteId: null };
    return `an issue update that neither adds the ${config.label} label nor assigns the bot user`;
  }

  const a = hook.object_attributes;
  if (a.action && a.action !== 'create') return 'an edited note';
  if (a.system) return 'a system note';
  const text = a.note.trim();
  if (!text.toLowerCase().startsWith(config.command.toLowerCase()) || !/^(\s|$)/.test(text.slice(config.command.length))) return `a note that does not start with ${config.command}`;
  const instruction = text.slice(config.command.length).trim().slice(0, MAX_INSTRUCTION);
  if (a.noteable_type === 'Issue' && hook.issue) return { on: { type: 'issue', iid: hook.issue.iid }, why: 'command', instruction, noteId: a.id };
  if (a.noteable_type === 'MergeRequest' && hook.merge_request) return { on: { type: 'merge_request', iid: hook.merge_request.iid }, why: 'command', instruction, noteId: a.id };
  return `a note on a ${a.noteable_type.slice(0, 50)}, where ${config.command} does nothing`;
}
