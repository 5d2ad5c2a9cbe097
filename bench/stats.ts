export function percentile(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export function summary(label: string, samples: number[], unit = 'ms'): { p50: number; p99: number } {
  const p50 = percentile(samples, 50);
  const p99 = percentile(samples, 99);
  console.log(`${label.padEnd(52)} p50 ${p50.toFixed(1).padStart(7)} ${unit}   p99 ${p99.toFixed(1).padStart(7)} ${unit}   (n=${samples.length})`);
  return { p50, p99 };
}

export async function time(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}
