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

/**
 * `*` within one path segment, `**` across segments (none too), `?` one character; a trailing `/`
 * a folder's contents. Matched without a regular expression: the pattern is a repository's
 * (hostile), and a regex of `**`s or `*a*a…` backtracks exponentially (a few dozen characters held
 * the control plane's event loop for minutes; node's path.matchesGlob too). Greedy with one resume
 * point, per segment and per character: at worst pattern × path steps.
 */
export function globMatch(pattern: string, path: string): boolean {
  let p = pattern.replace(/^\.?\//, '');
  if (p.endsWith('/')) p += '**';
  const parts = p.split('/');
  return wildcard(parts.filter((s, i) => !(s === '**' && parts[i - 1] === '**')), path.split('/'), (s) => s === '**', segmentMatch);
}

function segmentMatch(pattern: string, segment: string): boolean {
  return wildcard([...pattern], [...segment], (c) => c === '*', (c, ch) => c === '?' || c === ch);
}

/** The classic wildcard walk over any sequence: `isStar` items match any run (none too), `one` matches one item. */
function wildcard<P, S>(pattern: P[], items: S[], isStar: (p: P) => boolean, one: (p: P, s: S) => boolean): boolean {
  let i = 0;
  let j = 0;
  let star = -1;
  let resume = 0;
  while (j < items.length) {
    if (i < pattern.length && isStar(pattern[i]!)) {
      star = i++;
      resume = j;
    } else if (i < pattern.length && one(pattern[i]!, items[j]!)) {
      i++;
      j++;
    } else if (star >= 0) {
      i = star + 1;
      j = ++resume;
    } else {
      return false;
    }
  }
  while (i < pattern.length && isStar(pattern[i]!)) i++;
  return i === pattern.length;
}
