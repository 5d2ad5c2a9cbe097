import pino from 'pino';
import { conflict, invalid } from '../../shared/errors.ts';
import type { Db } from '../db/index.ts';
import { GENESIS_HASH, prepare } from './chain.ts';
import { processAuditKey, type AuditKey, type Checkpoint } from './key.ts';
import { decodeCursor, encodeCursor, selectEntries, toEntry } from './rows.ts';
import { verifyChain } from './verify.ts';
import { AuditWriter } from './writer.ts';
import type { AuditEntry, AuditFilter, AuditListOptions, AuditLogger, AuditPage, AuditSink, NewAuditEntry, VerifyResult } from './types.ts';

const DEFAULT_LIMIT = 100;
const MAX_LIMIT = 1000;
const EXPORT_PAGE = 1000;

export interface AuditLogOptions {
  db: Db;
  /** Signs chain heads and checkpoints; startBerth passes the one from BERTH_AUDIT_KEY or DATA_DIR/audit.key. */
  key?: AuditKey | undefined;
  logger?: AuditLogger | undefined;
  now?: (() => Date) | undefined;
  /** Each gets every committed batch, after the appends in it have resolved. */
  sinks?: AuditSink[] | undefined;
  /** Most entries per transaction (default 1000); 1 turns batching off. */
  maxBatchSize?: number | undefined;
}

/**
 * The org's tamper-evident record of who did what: each entry carries the hash of the
 * one before it, so an edited, deleted or forged entry shows up in verify().
 */
export class AuditLog {
  readonly #db: Db;
  readonly #key: AuditKey;
  readonly #log: AuditLogger;
  readonly #now: () => Date;
  readonly #sinks: AuditSink[];
  readonly #writer: AuditWriter;

  constructor(opts: AuditLogOptions) {
    this.#db = opts.db;
    this.#key = opts.key ?? processAuditKey();
    this.#log = opts.logger ?? pino({ name: 'audit' });
    this.#now = opts.now ?? (() => new Date());
    this.#sinks = opts.sinks ?? [];
    this.#writer = new AuditWriter({
      db: opts.db,
      key: this.#key,
      maxBatchSize: opts.maxBatchSize,
      onCommit: (entries) => this.#toSinks(entries),
      onUnsignedHead: (orgId, seq) =>
        this.#log.error({ org: orgId, seq }, 'audit head has no valid signature: entries are appended but not signed; run `berth audit verify`, then `berth audit reseal`'),
    });
  }

  /** Resolves once the entry is committed, with its place in the chain. */
  async append(entry: NewAuditEntry): Promise<AuditEntry> {
    return this.#writer.append(prepare(entry, this.#now()));
  }

  /** Newest first, a page at a time. */
  async list(orgId: string, opts: AuditListOptions = {}): Promise<AuditPage> {
    const limit = opts.limit ?? DEFAULT_LIMIT;
    if (!Number.isInteger(limit) || limit < 1) throw invalid(`limit must be a whole number from 1 to ${MAX_LIMIT}`, 'limit');
    const take = Math.min(limit, MAX_LIMIT);
    const before = opts.cursor === undefined ? undefined : decodeCursor(opts.cursor);
    const rows = await selectEntries(this.#db, orgId, opts)
      .$if(before !== undefined, (q) => q.where('seq', '<', String(before)))
      .orderBy('seq', 'desc')
      .limit(take + 1)
      .execute();
    const items = rows.slice(0, take).map(toEntry);
    return { items, nextCursor: rows.length > take ? encodeCursor(items.at(-1)!.seq) : null };
  }

  /**
   * Recomputes the org's chain and checks the head's signature; memory stays bounded
   * however long it is. With a checkpoint (one this server signed), the chain must still
   * hold the entry it recorded. See verify.ts for what this can and cannot prove.
   */
  verify(orgId: string, opts: { checkpoint?: Checkpoint | undefined } = {}): Promise<VerifyResult> {
    if (opts.checkpoint) this.#checkCheckpoint(orgId, opts.checkpoint);
    return verifyChain(this.#db, this.#key, orgId, opts.checkpoint);
  }

  /**
   * The org's head, signed, for an outside system to keep: a later verify with it shows
   * entries deleted or rewritten since, even by someone who restored an older signed head.
   */
  async checkpoint(orgId: string): Promise<Checkpoint> {
    const head = await this.#db.selectFrom('audit_heads').select(['seq', 'hash', 'mac']).where('org_id', '=', orgId).executeTakeFirst();
    const seq = head ? Number(head.seq) : 0;
    const hash = head?.hash ?? GENESIS_HASH;
    // A checkpoint of a head nobody vouched for would carry its doubt outside under our name.
    if (head && !this.#key.checkHead(orgId, seq, hash, head.mac)) {
      throw conflict("the audit log's head has no valid signature, so no checkpoint is given: run `berth audit verify` to see why");
    }
    return this.#key.checkpoint(orgId, seq, hash, this.#now());
  }

  /**
   * Signs the org's head as it stands: for a head left unsigned (written before heads were
   * signed, by a server with another key, or after a break). Whoever calls it vouches for
   * the chain up to there, so it is an owner's act, and on record.
   */
  async reseal(orgId: string): Promise<{ seq: number; hash: string }> {
    return this.#db.transaction().execute(async (tx) => {
      const head = await tx.selectFrom('audit_heads').select(['seq', 'hash', 'mac']).where('org_id', '=', orgId).forUpdate().executeTakeFirst();
      if (!head) throw conflict('the audit log has no entries yet: there is nothing to reseal');
      const seq = Number(head.seq);
      if (this.#key.checkHead(orgId, seq, head.hash, head.mac)) throw conflict('the head is signed already: nothing to reseal (`berth audit verify` checks the chain)');
      await tx.updateTable('audit_heads').set({ mac: this.#key.signHead(orgId, seq, head.hash) }).where('org_id', '=', orgId).execute();
      return { seq, hash: head.hash };
    });
  }

  /**
   * Signs every head that has no signature at all. Only safe when no head can have been
   * signed before with this key: on the start that created the key file (an upgrade from
   * before heads were signed). Returns how many were signed.
   */
  async sealUnsigned(): Promise<number> {
    const heads = await this.#db.selectFrom('audit_heads').select('org_id').where('mac', 'is', null).execute();
    for (const { org_id } of heads) await this.reseal(org_id).catch((err: unknown) => this.#log.warn({ err, org: org_id }, 'could not sign an audit head'));
    return heads.length;
  }

  /** JSON Lines, oldest first, each line ending in '\n'; read from the database a page at a time. */
  async *exportJsonl(orgId: string, filter: AuditFilter = {}): AsyncIterable<string> {
    let after = 0;
    for (;;) {
      const rows = await selectEntries(this.#db, orgId, filter).where('seq', '>', String(after)).orderBy('seq', 'asc').limit(EXPORT_PAGE).execute();
      for (const row of rows) yield `${JSON.stringify(toEntry(row))}\n`;
      if (rows.length < EXPORT_PAGE) return;
      after = Number(rows.at(-1)!.seq);
    }
  }

  /** Waits for pending appends, then closes the sinks (which deliver what they hold). */
  async close(): Promise<void> {
    await this.#writer.idle();
    await Promise.all(this.#sinks.map((s) => s.close?.()));
  }

  #checkCheckpoint(orgId: string, cp: Checkpoint): void {
    if (cp.org !== orgId) throw invalid(`the checkpoint is for org ${cp.org}, not this one: pass --org`, 'checkpoint');
    if (!this.#key.checkCheckpoint(cp)) {
      throw invalid('the checkpoint is not one this server signed: it was edited, or BERTH_AUDIT_KEY changed since it was taken', 'checkpoint');
    }
  }

  // Sinks run after the appends resolved and can neither slow nor fail them.
  #toSinks(entries: AuditEntry[]): void {
    for (const sink of this.#sinks) {
      try {
        sink.deliver(entries).catch((err: unknown) => this.#log.error({ err }, 'audit sink failed to take a batch'));
      } catch (err) {
        this.#log.error({ err }, 'audit sink failed to take a batch');
      }
    }
  }
}
