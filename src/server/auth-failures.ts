// Failed authentication, counted per client address. An address over its limit is refused
// before its token is hashed or looked up, so guessing or replaying tokens costs the
// control plane a map lookup, not a hash and a query. Per address and not per token:
// every wrong token is a new one, and a per-token budget would be fresh for each.

const WINDOW_MS = 60_000;

/**
 * The key an address is counted under. IPv6 clients are counted by their /64: a single
 * host is usually handed a whole /64, and per-address counting would give it 2^64 budgets.
 */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!address.includes(':')) return address;
  const [head = '', tail] = address.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return `${groups.slice(0, 4).map((g) => g.toLowerCase().replace(/^0+(?=.)/, '')).join(':')}::/64`;
}

export class AuthFailures {
  readonly #limit: number;
  readonly #windowMs: number;
  readonly #max: number;
  readonly #byAddress = new Map<string, { count: number; resetAt: number }>();

  /** `limit` failures per address in a minute; 0 turns the limit off. */
  constructor(opts: { limit: number; windowMs?: number; max?: number }) {
    this.#limit = opts.limit;
    this.#windowMs = opts.windowMs ?? WINDOW_MS;
    this.#max = opts.max ?? 100_000;
  }

  get limit(): number {
    return this.#limit;
  }

  /** Seconds until this address may try again; 0 when it may now. */
  retryAfter(address: string, now = Date.now()): number {
    if (!this.#limit) return 0;
    const key = addressKey(address);
    const entry = this.#byAddress.get(key);
    if (!entry) return 0;
    if (entry.resetAt <= now) {
      this.#byAddress.delete(key);
      return 0;
    }
    return entry.count >= this.#limit ? Math.max(1, Math.ceil((entry.resetAt - now) / 1000)) : 0;
  }

  /** Counts one failed authentication from this address. */
  note(address: string, now = Date.now()): void {
    if (!this.#limit) return;
    const key = addressKey(address);
    const entry = this.#byAddress.get(key);
    if (entry && entry.resetAt > now) {
      entry.count++;
      return;
    }
    // Bounded: the oldest windows go first (a Map iterates in insertion order), and they
    // are the ones closest to ending anyway.
    if (this.#byAddress.size >= this.#max) {
      for (const k of this.#byAddress.keys()) {
        this.#byAddress.delete(k);
        if (this.#byAddress.size < this.#max * 0.9) break;
      }
    }
    this.#byAddress.delete(key);
    this.#byAddress.set(key, { count: 1, resetAt: now + this.#windowMs });
  }
}
