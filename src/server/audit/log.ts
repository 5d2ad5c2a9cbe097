import pino from 'pino';
import { invalid } from '../../shared/errors.ts';
import type { Db } from '../db/index.ts';
import { prepare } from './chain.ts';
import { decodeCursor, encodeCursor, selectEntries, toEntry } from './rows.ts';
import { verifyChain } from './verify.ts';
import { AuditWriter } from './writer.ts';
import type { AuditEntry, AuditFilter, AuditListOptions, AuditLogger, AuditPage, AuditSink, NewAuditEntry, VerifyResult } from './types.ts';

const DEFAULT_LIMIT = 100;
const MAX_LIMIT = 1000;
const EXPORT_PAGE = 1000;

export interface AuditLogOptions {
  db: Db;
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
  readonly #log: AuditLogger;
  readonly #now: () => Date;
  readonly #sinks: AuditSink[];
  readonly #writer: AuditWriter;

  constructor(opts: AuditLogOptions) {
    this.#db = opts.db;
    this.#log = opts.logger ?? pino({ name: 'audit' });
    this.#now = opts.now ?? (() => new Date());
    this.#sinks = opts.sinks ?? [];
    this.#writer = new AuditWriter({ db: opts.db, maxBatchSize: opts.maxBatchSize, onCommit: (entries) => this.#toSinks(entries) });
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

  /** Recomputes the org's chain; memory stays bounded however long it is. */
  verify(orgId: string): Promise<VerifyResult> {
    return verifyChain(this.#db, orgId);
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
