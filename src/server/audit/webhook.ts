// Streams committed audit entries to a SIEM's HTTP collector as JSON Lines.
import { createHmac } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import type { AuditEntry, AuditLogger, AuditSink } from './types.ts';

export interface WebhookSinkOptions {
  url: string;
  /** When set, each body is signed: `x-berth-signature: sha256=<hex HMAC-SHA256 of the body>`. */
  secret?: string | undefined;
  /** Most entries per POST (default 100). */
  batchSize?: number | undefined;
  /** How long a partial batch waits for company before it is sent (default 1000 ms). */
  flushIntervalMs?: number | undefined;
  /** Most entries waiting while the SIEM is unreachable (default 10,000). */
  maxQueue?: number | undefined;
  /** First retry delay; doubles per attempt up to retryMaxMs (defaults 500 ms and 30 s). */
  retryBaseMs?: number | undefined;
  retryMaxMs?: number | undefined;
  /** Per request (default 10 s). */
  timeoutMs?: number | undefined;
  fetch?: typeof fetch | undefined;
  logger?: AuditLogger | undefined;
}

/**
 * Delivery is at least once and in commit order: a POST that timed out may have arrived,
 * so the collector should drop repeats by (orgId, seq).
 */
export class WebhookSink implements AuditSink {
  readonly #url: string;
  readonly #secret: string | undefined;
  readonly #batchSize: number;
  readonly #flushIntervalMs: number;
  readonly #maxQueue: number;
  readonly #retryBaseMs: number;
  readonly #retryMaxMs: number;
  readonly #timeoutMs: number;
  readonly #fetch: typeof fetch;
  readonly #log: AuditLogger;

  #queue: AuditEntry[] = [];
  #pump: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** Entries dropped since the SIEM last took a batch. */
  #dropped = 0;
  /** Aborted by close() when its deadline passes: stops retries and requests in flight. */
  readonly #stop = new AbortController();

  constructor(opts: WebhookSinkOptions) {
    this.#url = opts.url;
    this.#secret = opts.secret;
    this.#batchSize = Math.max(1, opts.batchSize ?? 100);
    this.#flushIntervalMs = opts.flushIntervalMs ?? 1000;
    this.#maxQueue = Math.max(this.#batchSize, opts.maxQueue ?? 10_000);
    this.#retryBaseMs = opts.retryBaseMs ?? 500;
    this.#retryMaxMs = opts.retryMaxMs ?? 30_000;
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    this.#fetch = opts.fetch ?? fetch;
    this.#log = opts.logger ?? pino({ name: 'audit-webhook' });
  }

  /** Queues the entries and returns at once: delivery never slows or fails an append. */
  async deliver(entries: AuditEntry[]): Promise<void> {
    if (this.#stop.signal.aborted) {
      this.#log.warn({ entries: entries.length }, 'audit webhook is closed: entries not sent to the SIEM');
      return;
    }
    for (const e of entries) this.#queue.push(e);
    // Bounded, so a SIEM that is down for hours cannot grow the control plane's memory
    // without limit: the oldest waiting entries go first. They stay in the database, and
    // `exportJsonl` can send the gap once the SIEM is back.
    const excess = this.#queue.length - this.#maxQueue;
    if (excess > 0) {
      this.#queue.splice(0, excess);
      if (this.#dropped === 0) {
        this.#log.warn({ url: this.#url, maxQueue: this.#maxQueue }, 'SIEM is not taking audit entries and the queue is full: dropping the oldest');
      }
      this.#dropped += excess;
    }
    if (this.#queue.length >= this.#batchSize) this.#start();
    else this.#timer ??= setTimeout(() => this.#start(), this.#flushIntervalMs).unref();
  }

  /** Resolves once everything queued so far has been sent (or refused for good). */
  async flush(): Promise<void> {
    while ((this.#pump || this.#queue.length > 0) && !this.#stop.signal.aborted) {
      this.#start();
      await this.#pump;
    }
  }

  /** Sends what is queued, giving up after timeoutMs (default 5 s). */
  async close(opts: { timeoutMs?: number } = {}): Promise<void> {
    const deadline = setTimeout(() => this.#stop.abort(), opts.timeoutMs ?? 5000);
    try {
      await this.flush();
    } finally {
      clearTimeout(deadline);
      this.#stop.abort();
      if (this.#queue.length > 0) this.#log.warn({ entries: this.#queue.length }, 'audit webhook closed before the SIEM took every entry');
      this.#queue = [];
    }
  }

  #start(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#pump ??= this.#run().finally(() => (this.#pump = undefined));
  }

  // One POST at a time keeps batches in commit order.
  async #run(): Promise<void> {
    while (this.#queue.length > 0 && !this.#stop.signal.aborted) {
      await this.#send(this.#queue.splice(0, this.#batchSize));
    }
  }

  async #send(batch: AuditEntry[]): Promise<void> {
    const body = batch.map((e) => `${JSON.stringify(e)}\n`).join('');
    const headers: Record<string, string> = { 'content-type': 'application/x-ndjson' };
    if (this.#secret !== undefined) headers['x-berth-signature'] = `sha256=${createHmac('sha256', this.#secret).update(body).digest('hex')}`;

    for (let attempt = 1; ; attempt++) {
      let failure: { status?: number; err?: unknown };
      try {
        const res = await this.#fetch(this.#url, {
          method: 'POST',
          headers,
          body,
          signal: AbortSignal.any([AbortSignal.timeout(this.#timeoutMs), this.#stop.signal]),
        });
        await res.body?.cancel();
        if (res.ok) {
          if (this.#dropped > 0) this.#log.warn({ dropped: this.#dropped }, 'SIEM is taking audit entries again; some were dropped while it was not');
          this.#dropped = 0;
          return;
        }
        // Other 4xx will not get better by asking again: a bad URL or a rejected signature.
        if (res.status < 500 && res.status !== 408 && res.status !== 429) {
          this.#log.error({ url: this.#url, status: res.status, entries: batch.length }, 'SIEM refused a batch of audit entries: not retrying');
          return;
        }
        failure = { status: res.status };
      } catch (err) {
        failure = { err };
      }
      if (this.#stop.signal.aborted) return this.#requeue(batch);
      const delay = Math.min(this.#retryMaxMs, this.#retryBaseMs * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2);
      this.#log.warn({ url: this.#url, attempt, ...failure, retryInMs: Math.round(delay) }, 'SIEM delivery failed: retrying');
      try {
        await sleep(delay, undefined, { signal: this.#stop.signal });
      } catch {
        return this.#requeue(batch); // closed
      }
    }
  }

  /** Puts an undelivered batch back in front, so close() counts it as undelivered. */
  #requeue(batch: AuditEntry[]): void {
    this.#queue = [...batch, ...this.#queue];
  }
}
