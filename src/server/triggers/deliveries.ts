// Webhook deliveries, written before they are acted on. The first delivery of an id is
// recorded with its payload and handled after the sender has its answer; a redelivery of
// the same id (GitHub's "Redeliver", a sender's retry) is recognised and starts nothing.
// One that a crash interrupted still has its payload and no outcome: it is taken up again
// when the control plane starts (Deliveries.pending).
import { sql } from 'kysely';
import type { Db } from '../db/index.ts';
import { storable } from './payload.ts';

export interface PendingDelivery {
  source: string;
  deliveryId: string;
  event: string;
  payload: unknown;
}

export interface DeliveryOutcome {
  /** What came of it, in words (`task task_… queued`, `ignored: no project uses o/r`). */
  outcome: string;
  orgId?: string | null | undefined;
  taskId?: string | null | undefined;
}

/** Delivery ids are the sender's: bounded so a hostile one cannot bloat the table or the log. */
const MAX_ID = 200;

export class Deliveries {
  readonly #db: Db;

  constructor(db: Db) {
    this.#db = db;
  }

  /**
   * Records a delivery; false when this source already had one with this id (a redelivery:
   * do nothing). The payload is kept until `finish`, so a crash in between loses nothing;
   * what jsonb cannot hold (NUL, unpaired surrogates) is replaced (payload.ts).
   */
  async record(source: string, deliveryId: string, event: string, payload: unknown): Promise<boolean> {
    const row = await this.#db
      .insertInto('webhook_deliveries')
      .values({ source, delivery_id: deliveryId.slice(0, MAX_ID), event: event.slice(0, 100), payload: JSON.stringify(storable(payload)) })
      .onConflict((oc) => oc.columns(['source', 'delivery_id']).doNothing())
      .returning('delivery_id')
      .executeTakeFirst();
    return row !== undefined;
  }

  /** What came of a delivery; its payload is dropped (the task and the audit log keep what matters). */
  async finish(source: string, deliveryId: string, o: DeliveryOutcome): Promise<void> {
    await this.#db
      .updateTable('webhook_deliveries')
      .set({ processed_at: new Date(), outcome: o.outcome.slice(0, 1000), org_id: o.orgId ?? null, task_id: o.taskId ?? null, payload: null })
      .where('source', '=', source)
      .where('delivery_id', '=', deliveryId.slice(0, MAX_ID))
      .execute();
  }

  /** What became of one delivery, for tests and support: null when it never arrived. */
  async get(source: string, deliveryId: string): Promise<{ outcome: string | null; taskId: string | null; processed: boolean } | null> {
    const row = await this.#db.selectFrom('webhook_deliveries').select(['outcome', 'task_id', 'processed_at']).where('source', '=', source).where('delivery_id', '=', deliveryId).executeTakeFirst();
    return row ? { outcome: row.outcome, taskId: row.task_id, processed: row.processed_at !== null } : null;
  }

  /**
   * Deliveries recorded but never finished, received more than `olderThanMs` ago (a younger
   * one may still be in hand), oldest first.
   */
  async pending(olderThanMs: number, limit = 100): Promise<PendingDelivery[]> {
    const rows = await this.#db
      .selectFrom('webhook_deliveries')
      .select(['source', 'delivery_id', 'event', 'payload'])
      .where('processed_at', 'is', null)
      .where('received_at', '<', sql<Date>`now() - ${`${Math.max(0, Math.round(olderThanMs))} milliseconds`}::interval`)
      .orderBy('received_at')
      .limit(limit)
      .execute();
    return rows.map((r) => ({ source: r.source, deliveryId: r.delivery_id, event: r.event, payload: r.payload }));
  }
}
