// Appends in batches: entries that arrive while an org's previous batch commits wait in a
// queue and go in together, one transaction and one multi-row insert for all of them.
import type { Db } from '../db/index.ts';
import { computeHash, GENESIS_HASH, type PreparedEntry } from './chain.ts';
import type { AuditKey } from './key.ts';
import type { AuditEntry } from './types.ts';

interface Pending {
  entry: PreparedEntry;
  resolve(entry: AuditEntry): void;
  reject(err: unknown): void;
}

export interface AuditWriterOptions {
  db: Db;
  /** Signs each head the writer moves to, when the head it moved from carried a good signature. */
  key: AuditKey;
  /** Told when an org's head had no good signature: the batch is appended, and its new head is left unsigned. */
  onUnsignedHead(orgId: string, seq: number): void;
  /** Most entries per transaction; 1 turns batching off. 10 parameters a row, 65,535 a statement. */
  maxBatchSize?: number | undefined;
  /** Called with every committed batch, in commit order per org; must not throw. */
  onCommit(entries: AuditEntry[]): void;
}

export class AuditWriter {
  readonly #db: Db;
  readonly #key: AuditKey;
  readonly #onUnsignedHead: (orgId: string, seq: number) => void;
  readonly #maxBatchSize: number;
  readonly #onCommit: (entries: AuditEntry[]) => void;
  /** Waiting entries per org; an org is in the map while its drain loop runs. */
  readonly #queues = new Map<string, Pending[]>();
  readonly #drains = new Set<Promise<void>>();

  constructor(opts: AuditWriterOptions) {
    this.#db = opts.db;
    this.#key = opts.key;
    this.#onUnsignedHead = opts.onUnsignedHead;
    this.#maxBatchSize = Math.max(1, Math.min(opts.maxBatchSize ?? 1000, 6000));
    this.#onCommit = opts.onCommit;
  }

  /** Resolves with the entry as committed; rejects when its batch's transaction failed. */
  append(entry: PreparedEntry): Promise<AuditEntry> {
    return new Promise((resolve, reject) => {
      const queue = this.#queues.get(entry.orgId);
      if (queue) {
        queue.push({ entry, resolve, reject });
        return;
      }
      this.#queues.set(entry.orgId, [{ entry, resolve, reject }]);
      const drain = this.#drain(entry.orgId);
      this.#drains.add(drain);
      void drain.finally(() => this.#drains.delete(drain));
    });
  }

  /** Resolves once every entry appended so far is committed or rejected. */
  async idle(): Promise<void> {
    while (this.#drains.size > 0) await Promise.all(this.#drains);
  }

  // Orgs drain independently: one org's failing batch (say, the org was deleted) never
  // holds up or fails another's, and their transactions lock different head rows.
  async #drain(orgId: string): Promise<void> {
    // Let the appends issued in the same tick join the first batch.
    await Promise.resolve();
    const queue = this.#queues.get(orgId)!;
    while (queue.length > 0) {
      const batch = queue.splice(0, this.#maxBatchSize);
      let committed: AuditEntry[];
      try {
        committed = await this.#commit(orgId, batch.map((p) => p.entry));
      } catch (err) {
        for (const p of batch) p.reject(err);
        continue;
      }
      batch.forEach((p, i) => p.resolve(committed[i]!));
      this.#onCommit(committed);
    }
    this.#queues.delete(orgId);
  }

  #commit(orgId: string, entries: PreparedEntry[]): Promise<AuditEntry[]> {
    return this.#db.transaction().execute(async (tx) => {
      // The head row lock is what keeps the chain a line when several replicas append.
      const lockHead = () => tx.selectFrom('audit_heads').select(['seq', 'hash', 'mac']).where('org_id', '=', orgId).forUpdate().executeTakeFirst();
      let head = await lockHead();
      if (!head) {
        // Two replicas may both find no head: one insert wins, the other does nothing
        // (after waiting for the winner to commit), and both then queue on the row lock.
        await tx
          .insertInto('audit_heads')
          .values({ org_id: orgId, seq: 0, hash: GENESIS_HASH, mac: this.#key.signHead(orgId, 0, GENESIS_HASH) })
          .onConflict((oc) => oc.column('org_id').doNothing())
          .execute();
        head = await lockHead();
        if (!head) throw new Error(`audit head of org ${orgId} vanished while being created`);
      }

      let seq = Number(head.seq);
      let prevHash = head.hash;
      // Signing on from a head nobody holding the key vouched for would launder whatever
      // was done to the chain below it: such a head's successors stay unsigned, and verify
      // keeps saying so, until someone checks the chain and reseals it (AuditLog.reseal).
      const vouched = this.#key.checkHead(orgId, seq, prevHash, head.mac);
      if (!vouched) this.#onUnsignedHead(orgId, seq);
      const chained = entries.map((e): AuditEntry => {
        seq += 1;
        const entry = { orgId, seq, at: e.at, actor: e.actor, action: e.action, target: e.target, environmentId: e.environmentId, details: e.details, prevHash };
        prevHash = computeHash(entry);
        return { ...entry, hash: prevHash };
      });
      // Entries and head in one statement: one round trip fewer per batch.
      await tx
        .with('inserted', (db) =>
          db.insertInto('audit_entries').values(
            chained.map((e, i) => ({
              org_id: e.orgId,
              seq: e.seq,
              at: e.at,
              actor: e.actor,
              action: e.action,
              target: e.target,
              environment_id: e.environmentId,
              details: entries[i]!.detailsJson,
              prev_hash: e.prevHash,
              hash: e.hash,
            })),
          ),
        )
        .updateTable('audit_heads')
        .set({ seq, hash: prevHash, mac: vouched ? this.#key.signHead(orgId, seq, prevHash) : null })
        .where('org_id', '=', orgId)
        .execute();
      return chained;
    });
  }
}
