// Concurrent requests for the same work share one run, and every caller sees its progress.
import type { ImageProgress } from './types.ts';

export class Inflight<T> {
  #runs = new Map<string, { promise: Promise<T>; listeners: Set<ImageProgress> }>();

  run(key: string, onProgress: ImageProgress | undefined, work: (progress: ImageProgress) => Promise<T>): Promise<T> {
    const joined = this.#runs.get(key);
    if (joined) {
      if (onProgress) joined.listeners.add(onProgress);
      return joined.promise;
    }
    const listeners = new Set<ImageProgress>(onProgress ? [onProgress] : []);
    const progress: ImageProgress = (event) => {
      for (const listener of listeners) {
        try {
          listener(event);
        } catch {
          // A broken spinner must not break an import.
        }
      }
    };
    const promise = work(progress).finally(() => this.#runs.delete(key));
    this.#runs.set(key, { promise, listeners });
    return promise;
  }
}
