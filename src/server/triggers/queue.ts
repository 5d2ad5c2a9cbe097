// Deliveries are answered at once and handled after: the sender (GitHub waits ten seconds,
// Slack three) hears within milliseconds that the delivery is on record, and the work (asking
// the forge who the sender is, reading the issue, queuing the task, commenting) happens here,
// a few at a time. A delivery whose handler a crash interrupted is handled when the control
// plane starts again (Deliveries.pending), by whichever source it came from.
import type { Logger } from 'pino';
import { Deliveries, type DeliveryOutcome, type PendingDelivery } from './deliveries.ts';
import { storable } from './payload.ts';

export type DeliveryHandler = (d: PendingDelivery) => Promise<DeliveryOutcome>;

const CONCURRENCY = 8;
/** A delivery younger than this may still be in another replica's hands. */
const RECOVER_AFTER_MS = 60_000;

export class DeliveryQueue {
  readonly #deliveries: Deliveries;
  readonly #logger: Logger;
  readonly #handlers = new Map<string, DeliveryHandler>();
  readonly #waiting: PendingDelivery[] = [];
  readonly #idle = new Set<() => void>();
  #active = 0;
  #closed = false;

  constructor(o: { deliveries: Deliveries; logger: Logger }) {
    this.#deliveries = o.deliveries;
    this.#logger = o.logger;
  }

  /** `source` is the delivery's source, or its prefix before ':' (`webhook:whk_…` → `webhook`). */
  handle(source: string, handler: DeliveryHandler): void {
    this.#handlers.set(source, handler);
  }

  /**
   * Records a delivery and queues it; false when it is a redelivery of one on record (do
   * nothing). Resolves once the delivery is written, before it is handled.
   */
  async accept(d: PendingDelivery): Promise<boolean> {
    // Handled as stored, whether now or after a restart.
    const payload = storable(d.payload);
    if (!(await this.#deliveries.record(d.source, d.deliveryId, d.event, payload))) return false;
    this.#enqueue({ ...d, payload });
    return true;
  }

  /** Takes up deliveries a crash left unhandled. */
  async recover(): Promise<number> {
    const pending = await this.#deliveries.pending(RECOVER_AFTER_MS);
    for (const d of pending) this.#enqueue(d);
    if (pending.length) this.#logger.info({ deliveries: pending.length }, 'webhooks: handling deliveries a restart interrupted');
    return pending.length;
  }

  /** Resolves when nothing is queued or being handled (tests, shutdown). */
  async idle(): Promise<void> {
    if (this.#active === 0 && this.#waiting.length === 0) return;
    await new Promise<void>((resolve) => this.#idle.add(resolve));
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#waiting.length = 0;
    if (this.#active) await new Promise<void>((resolve) => this.#idle.add(resolve));
  }

  #enqueue(d: PendingDelivery): void {
    if (this.#closed) return;
    this.#waiting.push(d);
    this.#drain();
  }

  #drain(): void {
    while (this.#active < CONCURRENCY && this.#waiting.length) {
      const d = this.#waiting.shift()!;
      this.#active++;
      void this.#run(d).finally(() => {
        this.#active--;
        if (this.#active === 0 && this.#waiting.length === 0) {
          for (const resolve of this.#idle) resolve();
          this.#idle.clear();
        }
        this.#drain();
      });
    }
  }

  async #run(d: PendingDelivery): Promise<void> {
    const handler = this.#handlers.get(d.source) ?? this.#handlers.get(d.source.split(':')[0]!);
    let outcome: DeliveryOutcome;
    try {
      outcome = handler ? await handler(d) : { outcome: `ignored: nothing handles ${d.source} deliveries` };
    } catch (err) {
      // Handlers answer bad input with an outcome; what reaches here is ours or the database's.
      this.#logger.error({ err, source: d.source, delivery: d.deliveryId, event: d.event }, 'webhooks: a delivery could not be handled');
      outcome = { outcome: `failed: ${(err as Error).message.slice(0, 500)}` };
    }
    try {
      await this.#deliveries.finish(d.source, d.deliveryId, outcome);
    } catch (err) {
      // Left pending: taken up again at the next start (a handler must then find its own work done).
      this.#logger.warn({ err, source: d.source, delivery: d.deliveryId }, 'webhooks: could not record what came of a delivery');
    }
  }
}
