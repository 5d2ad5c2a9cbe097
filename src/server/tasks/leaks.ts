// Which secrets a change would carry out of Berth: looked for, in every form redaction knows,
// in what the change adds (added lines, new and renamed file names, binary files read as
// text), not in what the repository already had (context and removed lines).
import type { Redactor } from '../../shared/redact.ts';

export interface Leak {
  /** Names of the secrets found, first seen first. */
  names: string[];
  /** The files they were found in, redacted, as the diff names them. */
  files: string[];
}

/** `diff`: a unified diff of the change, binary files included as text (`git diff --text`). */
export function secretsInChange(diff: string, redactor: Redactor): Leak | null {
  const names = new Set<string>();
  const files: string[] = [];
  for (const file of addedByFile(diff)) {
    const found = redactor.detect(file.added);
    if (found.length === 0) continue;
    for (const name of found) names.add(name);
    files.push(redactor.redact(file.label));
  }
  return names.size > 0 ? { names: [...names], files } : null;
}

/** Per file of the diff: its header lines and its added lines, one text (so a value wrapped over added lines is found). */
function addedByFile(diff: string): { label: string; added: string }[] {
  const files: { label: string; lines: string[] }[] = [];
  let file: { label: string; lines: string[] } | undefined;
  let inHunk = false;
  for (const line of diff.split('\n')) {
    if (line.startsWith('diff --git ')) {
      // `diff --git a/NAME b/NAME`; the +++ line, when there is one, says it better.
      file = { label: / b\/(.*)$/.exec(line)?.[1] ?? line.slice('diff --git '.length), lines: [line] };
      files.push(file);
      inHunk = false;
    } else if (!file) {
      continue;
    } else if (line.startsWith('@@')) {
      inHunk = true;
    } else if (!inHunk) {
      // Headers name the files (new names included) and modes.
      file.lines.push(line);
      const named = /^(?:\+\+\+ b\/|rename to |copy to )(.*)$/.exec(line);
      if (named) file.label = named[1]!;
    } else if (line.startsWith('+')) {
      file.lines.push(line.slice(1));
    }
  }
  return files.map((f) => ({ label: f.label, added: f.lines.join('\n') }));
}
