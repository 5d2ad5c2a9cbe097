// The words a task leaves behind: branch name, commit message, pull request body.
import type { ChangeRequest, Usage } from '../../shared/tasks.ts';

/** What a continuation's goal adds to the goal of the task it continues (triggers/tasks.ts). */
export const FOLLOW_UP = 'Follow-up (review on the pull request):';

/** The goal of a task that continues another: its goal and the new instruction, after it. */
export function followUpGoal(previous: string, instruction: string): string {
  return `${previous.trim()}\n\n${FOLLOW_UP} ${instruction.trim()}`;
}

/**
 * The line that closes the issue a task was started from when its change is merged:
 * GitHub's `Fixes #N` for an issue (not a pull request), GitLab's `Closes #N`. Null for
 * anything else (a Slack thread, a merge request note): there is no issue to close.
 */
export function issueReference(replyTo: { kind: string; [key: string]: unknown } | null): string | null {
  const n = (v: unknown) => (typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? v : null);
  if (replyTo?.kind === 'github' && replyTo.pullRequest === false && n(replyTo.issue)) return `Fixes #${n(replyTo.issue)}`;
  if (replyTo?.kind === 'gitlab' && n(replyTo.issueIid)) return `Closes #${n(replyTo.issueIid)}`;
  return null;
}

/** `pull request #12`, `merge request !3`, or the change kept in Berth (plain git), for log lines. */
export function changeRequestName(cr: ChangeRequest): string {
  if (cr.kind === 'pull_request') return `pull request${cr.number ? ` #${cr.number}` : ''}`;
  if (cr.kind === 'merge_request') return `merge request${cr.number ? ` !${cr.number}` : ''}`;
  return 'change request kept in Berth';
}

export function slugOf(goal: string): string {
  const slug = goal.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 40).replace(/-+$/, '');
  return slug || 'change';
}

export function repoNameOf(url: string): string {
  const last = url.replace(/\/+$/, '').split(/[/:]/).pop() ?? 'repo';
  return last.replace(/\.git$/, '').replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[.-]+/, '') || 'repo';
}

export function titleOf(goal: string): string {
  const first = goal.split('\n')[0]!.trim();
  return first.length > 72 ? `${first.slice(0, 71)}…` : first;
}

/** A continuation's commit is titled by its own instruction, not by the goal it builds on. */
function commitTitleOf(goal: string): string {
  const at = goal.lastIndexOf(FOLLOW_UP);
  return at < 0 ? titleOf(goal) : titleOf(goal.slice(at + FOLLOW_UP.length).trim() || goal);
}

export function commitMessage(goal: string, summary: string, url: string): string {
  return `${commitTitleOf(goal)}\n\n${summary.trim()}\n\nGoal: ${goal.trim()}\nTask: ${url}\n`;
}

export function prBody(o: {
  goal: string;
  summary: string;
  files: string[];
  checks: { passed: boolean; attempts: number; output: string } | null;
  check: string | null;
  budgetNote: string | null;
  url: string;
  usage: Usage;
  model: string | null;
  /** `Fixes #12`: the issue the task came from, closed when the change is merged. */
  closes?: string | null | undefined;
}): string {
  const files = o.files.slice(0, 50).map((f) => `- \`${f}\``).join('\n') + (o.files.length > 50 ? `\n- …and ${o.files.length - 50} more` : '');
  const checks = !o.check
    ? 'No check command is configured for this repository.'
    : o.checks?.passed
      ? `✅ \`${o.check}\` passed${o.checks.attempts > 1 ? ` on attempt ${o.checks.attempts}` : ''}.`
      : `❌ \`${o.check}\` still fails after ${o.checks?.attempts ?? 0} attempt(s). This is a draft: the change is not done.\n\n<details><summary>last output</summary>\n\n\`\`\`\n${o.checks?.output ?? ''}\n\`\`\`\n</details>`;
  return [
    `## Goal\n\n${o.goal.trim()}`,
    ...(o.closes ? [o.closes] : []),
    `## What changed\n\n${o.summary.trim()}\n\n${files}`,
    `## Checks\n\n${checks}`,
    ...(o.budgetNote ? [`## Stopped early\n\n${o.budgetNote}. This is a draft.`] : []),
    `---\nOpened by [Berth task](${o.url}) · ${o.model ?? 'agent'} · ${o.usage.inputTokens + o.usage.outputTokens} tokens · $${o.usage.costUsd.toFixed(4)}`,
  ].join('\n\n');
}
