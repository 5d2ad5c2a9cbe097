// Sign-ins between begin() and the provider's redirect back. Kept in memory: they live for
// minutes and losing them on restart only means the user clicks "sign in" again. With several
// control-plane replicas behind a load balancer, use a shared table instead.
import type { PendingSignIn } from './sign-in.ts';

export interface PendingSignInsOptions {
  /** How long a sign-in may take at the provider. Default 10 minutes. */
  ttlMs?: number;
  /** At most this many are kept; the oldest are dropped first. Default 1000. */
  maxEntries?: number;
  /** Milliseconds since the epoch; tests pass a fake clock. */
  now?: () => number;
}

interface Entry {
  pending: PendingSignIn;
  expiresAt: number;
}

/** An in-memory store of pending sign-ins keyed by state; each can be taken once. */
export class PendingSignIns {
  readonly #ttlMs: number;
  readonly #maxEntries: number;
  readonly #now: () => number;
  // Insertion order is expiry order (one TTL for all), so the first entries are the oldest.
  readonly #entries = new Map<string, Entry>();

  constructor(options: PendingSignInsOptions = {}) {
    this.#ttlMs = options.ttlMs ?? 10 * 60_000;
    this.#maxEntries = options.maxEntries ?? 1000;
    this.#now = options.now ?? Date.now;
    if (this.#maxEntries < 1) throw new RangeError('PendingSignIns: maxEntries must be at least 1');
  }

  get size(): number {
    this.#sweep();
    return this.#entries.size;
  }

  put(pending: PendingSignIn): void {
    this.#sweep();
    this.#entries.delete(pending.state);
    // A flood of begun-but-never-finished sign-ins must not grow memory without bound; dropping
    // the oldest keeps the store working for the newest, which are the likeliest to come back.
    while (this.#entries.size >= this.#maxEntries) {
      const oldest = this.#entries.keys().next().value;
      if (oldest === undefined) break;
      this.#entries.delete(oldest);
    }
    this.#entries.set(pending.state, { pending, expiresAt: this.#now() + this.#ttlMs });
  }

  /** The pending sign-in for `state`, removed so a callback can be used only once; undefined when unknown or expired. */
  take(state: string): PendingSignIn | undefined {
    const entry = this.#entries.get(state);
    if (!entry) return undefined;
    this.#entries.delete(state);
    return entry.expiresAt > this.#now() ? entry.pending : undefined;
  }

  #sweep(): void {
    const now = this.#now();
    for (const [state, entry] of this.#entries) {
      if (entry.expiresAt > now) break;
      this.#entries.delete(state);
    }
  }
}
