// A test reporter for scripts/test.ts: each top-level test's file and duration, appended as it
// ends to the file BERTH_TEST_DURATIONS names (synchronously: --test-force-exit ends the run
// before a reporter's output stream drains); scripts/test.ts prints the slowest files from it
// after each group, so CI's time has names on it.
import { appendFileSync, readFileSync } from 'node:fs';
import { relative } from 'node:path';

type TestEvent = { type: string; data: { nesting?: number; file?: string; details?: { duration_ms?: number } } };

export default async function* durations(source: AsyncIterable<TestEvent>): AsyncGenerator<string> {
  const out = process.env.BERTH_TEST_DURATIONS;
  for await (const { type, data } of source) {
    if (out && (type === 'test:pass' || type === 'test:fail') && data.nesting === 0 && data.file) {
      appendFileSync(out, `${JSON.stringify([data.file, data.details?.duration_ms ?? 0])}\n`);
    }
  }
  yield '';
}

/** The slowest files of a group, from what the reporter wrote. */
export function slowestFiles(path: string, root: string): string {
  const byFile = new Map<string, number>();
  let text = '';
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return '';
  }
  for (const line of text.split('\n').filter(Boolean)) {
    const [file, ms] = JSON.parse(line) as [string, number];
    byFile.set(file, (byFile.get(file) ?? 0) + ms);
  }
  const top = [...byFile].sort((a, b) => b[1] - a[1]).slice(0, 12);
  const total = [...byFile.values()].reduce((a, b) => a + b, 0);
  return [`\n# slowest files (of ${byFile.size}, ${(total / 60_000).toFixed(1)} min of tests in all)`, ...top.map(([file, ms]) => `#   ${(ms / 1000).toFixed(1).padStart(6)} s  ${relative(root, file)}`), ''].join('\n');
}
