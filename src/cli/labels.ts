import { usageError } from './output.ts';

/** Commander's collector for a repeatable `--runner-label KEY=VALUE`: the labels so far with this one added. */
export function runnerLabel(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const i = value.indexOf('=');
  if (i < 1) throw usageError(`--runner-label takes KEY=VALUE, e.g. gpu=true, not '${value}'`);
  return { ...previous, [value.slice(0, i)]: value.slice(i + 1) };
}

/** Labels as one word: `gpu=true,zone=a`, or `-` for none. */
export function labelsText(labels: Record<string, string> | undefined): string {
  const entries = Object.entries(labels ?? {});
  return entries.length ? entries.map(([k, v]) => `${k}=${v}`).join(',') : '-';
}
