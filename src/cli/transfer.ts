// Bytes moving, as a spinner line shows them: "12.5M / 48M (26%), 3.1M/s".
import { formatSize } from '../shared/units.ts';

/** The rate over the last few seconds of samples of one step. */
export class ByteRate {
  #samples: { at: number; done: number }[] = [];

  /** Takes a sample (`at` in ms) and returns bytes per second, once two samples are a moment apart. */
  sample(done: number, at = performance.now()): number | undefined {
    if (this.#samples.length && done < this.#samples.at(-1)!.done) this.#samples = []; // a new step
    this.#samples.push({ at, done });
    while (this.#samples.length > 2 && at - this.#samples[0]!.at > 3000) this.#samples.shift();
    const first = this.#samples[0]!;
    return at - first.at >= 400 ? ((done - first.done) * 1000) / (at - first.at) : undefined;
  }

  reset(): void {
    this.#samples = [];
  }
}

export function transferText(bytes: { done: number; total?: number | undefined }, perSecond: number | undefined): string {
  const { done, total } = bytes;
  const share = total ? ` / ${formatSize(total)} (${Math.min(100, Math.floor((done * 100) / total))}%)` : '';
  return `${formatSize(done)}${share}${perSecond !== undefined ? `, ${formatSize(Math.round(perSecond))}/s` : ''}`;
}
