// A token bucket per trigger: `perMinute` deliveries at once, refilled evenly over the minute.
// Kept in this process: behind several replicas a trigger takes up to its rate at each one.

interface Bucket {
  tokens: number;
  at: number;
  perMinute: number;
}

export class TriggerRates {
  readonly #buckets = new Map<string, Bucket>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** Takes one delivery's token: 0 when there was one, else the seconds until there is. */
  take(triggerId: string, perMinute: number): number {
    const now = this.#now();
    let b = this.#buckets.get(triggerId);
    if (!b || b.perMinute !== perMinute) {
      b = { tokens: perMinute, at: now, perMinute };
      this.#buckets.set(triggerId, b);
    }
    b.tokens = Math.min(perMinute, b.tokens + ((now - b.at) / 60_000) * perMinute);
    b.at = now;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil(((1 - b.tokens) * 60) / perMinute));
  }

  forget(triggerId: string): void {
    this.#buckets.delete(triggerId);
  }
}
