// Byte counts as progress events: what `berth image import` and `pull` draw as "done / total".
import type { ImagePhase, ImageProgress } from './types.ts';

/** Events at most this often while bytes flow (a chunk is often 64 KiB: thousands a second). */
const EVERY_MS = 200;

export interface ByteCounter {
  /** `bytes` more went through. */
  add(bytes: number): void;
  /** The count is `done` now (for sizes read off the disk). */
  set(done: number): void;
  /** The last count, sent whatever the time. */
  end(): void;
}

/** Counts bytes for one step (`message`), reporting the first count, then at most every 200 ms, and the last. */
export function countBytes(progress: ImageProgress, phase: ImagePhase, message: string, total?: number): ByteCounter {
  let done = 0;
  let sent = -1;
  let at = 0;
  const send = () => {
    sent = done;
    at = Date.now();
    progress({ phase, message, bytes: total === undefined ? { done } : { done, total }, ...(total && { fraction: Math.min(1, done / total) }) });
  };
  const moved = () => {
    if (sent < 0 || Date.now() - at >= EVERY_MS) send();
  };
  return {
    add(bytes) {
      done += bytes;
      moved();
    },
    set(value) {
      done = Math.max(done, value);
      moved();
    },
    end() {
      if (done !== sent) send();
    },
  };
}
