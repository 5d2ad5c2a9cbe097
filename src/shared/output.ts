// Output that Berth holds in memory before it answers (a non-streaming exec's reply, a
// host command's stdout) is capped: a command that prints without end must not take the
// control plane's memory with it. Past the cap the rest is read and dropped, so the
// command runs to its end and its exit code is kept, and a marker says what happened.
import type { Readable } from 'node:stream';

/** What one buffered stream keeps at most: 16 MiB. Stream the output (SSE, a terminal) to see all of it. */
export const MAX_BUFFERED_OUTPUT = 16 * 1024 * 1024;

/** Appended where buffered output was cut. */
export function truncationMarker(cap: number): string {
  const size = cap % (1024 * 1024) === 0 ? `${cap / (1024 * 1024)} MiB` : `${cap} bytes`;
  return `\n[berth: output truncated at ${size}]\n`;
}

/** Keeps the first `cap` bytes pushed to it and counts the rest. */
export class CappedOutput {
  readonly #cap: number;
  readonly #chunks: Buffer[] = [];
  #kept = 0;
  #dropped = 0;

  constructor(cap = MAX_BUFFERED_OUTPUT) {
    this.#cap = cap;
  }

  push(chunk: Buffer): void {
    const room = this.#cap - this.#kept;
    if (room >= chunk.length) {
      this.#chunks.push(chunk);
      this.#kept += chunk.length;
      return;
    }
    if (room > 0) {
      // A copy, so the dropped part of a large chunk is not kept alive by its view.
      this.#chunks.push(Buffer.from(chunk.subarray(0, room)));
      this.#kept += room;
    }
    this.#dropped += chunk.length - Math.max(room, 0);
  }

  /** Bytes read past the cap and dropped. */
  get dropped(): number {
    return this.#dropped;
  }

  get truncated(): boolean {
    return this.#dropped > 0;
  }

  /** What was kept, with the marker after it when something was dropped. */
  bytes(): Buffer {
    const kept = Buffer.concat(this.#chunks);
    return this.truncated ? Buffer.concat([kept, Buffer.from(truncationMarker(this.#cap))]) : kept;
  }

  text(): string {
    return this.bytes().toString('utf8');
  }
}

/** Collects a stream into a CappedOutput as it flows (the stream is read to its end either way). */
export function collectCapped(stream: Readable, cap = MAX_BUFFERED_OUTPUT): CappedOutput {
  const out = new CappedOutput(cap);
  stream.on('data', (chunk: Buffer | string) => out.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk));
  return out;
}
