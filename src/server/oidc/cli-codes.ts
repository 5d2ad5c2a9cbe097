// Sign-ins started by `berth login`: after the provider's redirect, the browser is sent to the
// CLI's loopback listener with a one-time code, never the token. The CLI trades the code for a
// token by showing the verifier whose S256 challenge it sent at the start (PKCE, as RFC 8252
// asks of native apps), so a code read from the browser's history or by another local process
// is worth nothing. Kept in memory for a minute, like the pending sign-ins.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

export interface CliCode {
  userId: string;
  challenge: string;
}

export class CliCodes {
  readonly #ttlMs: number;
  readonly #now: () => number;
  readonly #codes = new Map<string, CliCode & { expiresAt: number }>();

  constructor(opts: { ttlMs?: number; now?: () => number } = {}) {
    this.#ttlMs = opts.ttlMs ?? 60_000;
    this.#now = opts.now ?? Date.now;
  }

  issue(entry: CliCode): string {
    const now = this.#now();
    for (const [code, e] of this.#codes) if (e.expiresAt <= now) this.#codes.delete(code);
    const code = randomBytes(24).toString('base64url');
    this.#codes.set(code, { ...entry, expiresAt: now + this.#ttlMs });
    return code;
  }

  /** The user the code was issued for, once, and only to the holder of the verifier; undefined otherwise. */
  take(code: string, verifier: string): string | undefined {
    const entry = this.#codes.get(code);
    if (!entry) return undefined;
    // Spent on any attempt: a wrong verifier does not get a second guess.
    this.#codes.delete(code);
    if (entry.expiresAt <= this.#now()) return undefined;
    const expected = Buffer.from(entry.challenge);
    const got = Buffer.from(createHash('sha256').update(verifier).digest('base64url'));
    return expected.length === got.length && timingSafeEqual(expected, got) ? entry.userId : undefined;
  }
}
