// A test reporter for scripts/test.ts: after a group of files, the ones that took longest (the
// sum of their top-level tests), so CI's time has names on it.
import { relative } from 'node:path';

type TestEvent = { type: string; data: { nesting?: number; file?: string; details?: { duration_ms?: number } } };

export default async function* durations(source: AsyncIterable<TestEvent>): AsyncGenerator<string> {
  const byFile = new Map<string, number>();
  for await (const { type, data } of source) {
    if ((type === 'test:pass' || type === 'test:fail') && data.nesting === 0 && data.file) {
      byFile.set(data.file, (byFile.get(data.file) ?? 0) + (data.details?.duration_ms ?? 0));
    }
  }
  const slowest = [...byFile].sort((a, b) => b[1] - a[1]).slice(0, 12);
  const total = [...byFile.values()].reduce((a, b) => a + b, 0);
  yield `\n# slowest files (of ${byFile.size}, ${(total / 60_000).toFixed(1)} min of tests in all)\n`;
  for (const [file, ms] of slowest) yield `#   ${(ms / 1000).toFixed(1).padStart(6)} s  ${relative(process.cwd(), file)}\n`;
}
