/**
 * Answers remembered for a moment (a second by default): a busy client asks the same
 * question many times a second. A change they depend on clears all of them at once; the
 * map is bounded by clearing it whole when it fills.
 */
export class Recent<V> {
  readonly #entries = new Map<string, { value: V; until: number }>();
  readonly #ttlMs: number;
  readonly #max: number;

  constructor(opts: { ttlMs?: number; max?: number } = {}) {
    this.#ttlMs = opts.ttlMs ?? 1_000;
    this.#max = opts.max ?? 10_000;
  }

  /** The remembered answer, wrapped so that a remembered `undefined` is still a hit. */
  get(key: string, now = Date.now()): { value: V } | undefined {
    const hit = this.#entries.get(key);
    return hit && hit.until > now ? hit : undefined;
  }

  /** Remembers `value` for the usual time, or until `until` if that comes sooner. */
  set(key: string, value: V, until = Infinity, now = Date.now()): void {
    if (this.#entries.size >= this.#max) this.#entries.clear();
    this.#entries.set(key, { value, until: Math.min(now + this.#ttlMs, until) });
  }

  clear(): void {
    this.#entries.clear();
  }
}
