// Which setup steps a task started from a prebuild runs again: the ones the project marks
// incremental whose `when` paths changed between the prebuild's commit and the task's.
// Pure: the pipeline gives it the changed paths (`git diff --name-only` on the host clone).
import type { IncrementalStep } from '../tasks/repo-config.ts';

export interface StepDecision {
  run: string;
  rerun: boolean;
  /** Why, for the task's log: "package-lock.json changed", "nothing it watches changed". */
  why: string;
}

export function planIncremental(steps: IncrementalStep[], changed: string[]): StepDecision[] {
  return steps.map((step) => {
    if (step.always) return { run: step.run, rerun: true, why: 'it runs on every start' };
    if (!changed.length) return { run: step.run, rerun: false, why: 'nothing changed' };
    if (step.when === null) return { run: step.run, rerun: true, why: `${changed.length} file(s) changed` };
    const hits = changed.filter((path) => step.when!.some((pattern) => globMatch(pattern, path)));
    if (!hits.length) return { run: step.run, rerun: false, why: `none of ${step.when.join(', ')} changed` };
    return { run: step.run, rerun: true, why: `${hits.slice(0, 3).join(', ')}${hits.length > 3 ? ` and ${hits.length - 3} more` : ''} changed` };
  });
}

/** `*` within one path segment, `**` across segments, `?` one character; a trailing `/` a folder's contents. */
export function globMatch(pattern: string, path: string): boolean {
  const p = pattern.replace(/^\.?\//, '');
  const source = (p.endsWith('/') ? `${p}**` : p)
    .split(/(\*\*\/?|\*|\?)/)
    .map((part) => (part === '**' || part === '**/' ? '(?:.*)' : part === '*' ? '[^/]*' : part === '?' ? '[^/]' : part.replace(/[.+^${}()|[\]\\]/g, '\\$&')))
    .join('');
  return new RegExp(`^${source}$`).test(path);
}
