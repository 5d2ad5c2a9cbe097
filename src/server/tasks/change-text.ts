// The words a task leaves behind: branch name, commit message, pull request body.
import type { Usage } from '../../shared/tasks.ts';

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

export function commitMessage(goal: string, summary: string, url: string): string {
  return `${titleOf(goal)}\n\n${summary.trim()}\n\nGoal: ${goal.trim()}\nTask: ${url}\n`;
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
}): string {
  const files = o.files.slice(0, 50).map((f) => `- \`${f}\``).join('\n') + (o.files.length > 50 ? `\n- …and ${o.files.length - 50} more` : '');
  const checks = !o.check
    ? 'No check command is configured for this repository.'
    : o.checks?.passed
      ? `✅ \`${o.check}\` passed${o.checks.attempts > 1 ? ` on attempt ${o.checks.attempts}` : ''}.`
      : `❌ \`${o.check}\` still fails after ${o.checks?.attempts ?? 0} attempt(s). This is a draft: the change is not done.\n\n<details><summary>last output</summary>\n\n\`\`\`\n${o.checks?.output ?? ''}\n\`\`\`\n</details>`;
  return [
    `## Goal\n\n${o.goal.trim()}`,
    `## What changed\n\n${o.summary.trim()}\n\n${files}`,
    `## Checks\n\n${checks}`,
    ...(o.budgetNote ? [`## Stopped early\n\n${o.budgetNote}. This is a draft.`] : []),
    `---\nOpened by [Berth task](${o.url}) · ${o.model ?? 'agent'} · ${o.usage.inputTokens + o.usage.outputTokens} tokens · $${o.usage.costUsd.toFixed(4)}`,
  ].join('\n\n');
}
