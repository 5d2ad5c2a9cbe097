// Flood control for what denials write beyond their own row: a loop in an environment
// can be refused hundreds of times a second, and the audit log and the task transcript
// should say so once, not hundreds of times. The first denial of a key (environment,
// host, port, rule) in a window is written at once; the repeats are counted, and the
// count is written once when the window closes.

export interface DenialWindow<T> {
  /** The denial that opened the window (written when it came). */
  first: T;
  /** Denials after it, within the window. */
  repeated: number;
  /** Packets in those repeats (firewall events count packets). */
  packets: number;
  openedAt: number;
}

export class DenialWindows<T> {
  readonly #windowMs: number;
  readonly #maxOpen: number;
  readonly #open = new Map<string, DenialWindow<T>>();

  /** @param maxOpen windows kept at once; past it a new key is written as it comes, uncounted (memory stays bounded). */
  constructor(opts: { windowMs: number; maxOpen?: number }) {
    this.#windowMs = opts.windowMs;
    this.#maxOpen = opts.maxOpen ?? 20_000;
  }

  /**
   * True when `item` is the first of its key in an open window (write it now); false when
   * it was counted as a repeat. Call close(now) first, so no window here has run out.
   */
  note(key: string, item: T, packets: number, now: number): boolean {
    const w = this.#open.get(key);
    if (w) {
      w.repeated += 1;
      w.packets += packets;
      return false;
    }
    if (this.#open.size < this.#maxOpen) this.#open.set(key, { first: item, repeated: 0, packets: 0, openedAt: now });
    return true;
  }

  /** Removes the windows that ran out by `now` (every window with `all`); returns those with repeats to write. */
  close(now: number, all = false): DenialWindow<T>[] {
    const out: DenialWindow<T>[] = [];
    // A Map iterates in insertion order, which is the order windows opened.
    for (const [key, w] of this.#open) {
      if (!all && now - w.openedAt < this.#windowMs) break;
      this.#open.delete(key);
      if (w.repeated > 0) out.push(w);
    }
    return out;
  }

  get size(): number {
    return this.#open.size;
  }
}
