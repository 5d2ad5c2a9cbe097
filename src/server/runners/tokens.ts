import { randomBytes } from 'node:crypto';
import type { RunnerToken } from '../../shared/api-runners.ts';
import { notFound, unauthorized } from '../../shared/errors.ts';
import { newId } from '../../shared/ids.ts';
import { hashToken } from '../auth.ts';
import { isoOrNull as iso, type Db } from '../db/index.ts';

/** Runner tokens look unlike API tokens, so one pasted in the wrong place is told apart at a glance. */
const PREFIX = 'berth_runner_';
const LAST_USED_RESOLUTION_MS = 60_000;

/** The answer to every token that does not work: nothing about which it was, or why. */
const REFUSED = 'this runner token is not valid (unknown or revoked): ask an instance administrator for a new one (`berth runner token create`)';

/**
 * Tokens runners on other hosts join with (`berth runner join --token`): shown once, kept as
 * a sha256 hash and looked up by it (the database compares hashes, never tokens), revocable.
 * A runner holds only this; it never gets database credentials.
 */
export class RunnerTokenService {
  readonly #db: Db;

  constructor(db: Db) {
    this.#db = db;
  }

  async create(t: { labels: Record<string, string>; name: string | null; createdBy: string }): Promise<{ id: string; token: string }> {
    const id = newId('rtk');
    const token = `${PREFIX}${randomBytes(32).toString('base64url')}`;
    await this.#db
      .insertInto('runner_tokens')
      .values({ id, hash: hashToken(token), labels: JSON.stringify(t.labels), name: t.name, created_by: t.createdBy })
      .execute();
    return { id, token };
  }

  async list(): Promise<RunnerToken[]> {
    const rows = await this.#db.selectFrom('runner_tokens').selectAll().orderBy('created_at').orderBy('id').execute();
    return rows.map((r) => ({
      id: r.id,
      name: r.name,
      labels: r.labels,
      createdBy: r.created_by,
      createdAt: iso(r.created_at)!,
      lastUsedAt: iso(r.last_used_at),
      revokedAt: iso(r.revoked_at),
    }));
  }

  /** Revokes it: runners holding it are refused on their next connect, and the one connected now is cut off. */
  async revoke(id: string): Promise<RunnerToken> {
    const r = await this.#db.updateTable('runner_tokens').set({ revoked_at: new Date() }).where('id', '=', id).where('revoked_at', 'is', null).executeTakeFirst();
    if (r.numUpdatedRows === 0n) {
      const exists = await this.#db.selectFrom('runner_tokens').select('id').where('id', '=', id).executeTakeFirst();
      if (!exists) throw notFound(`no runner token '${id}': \`berth runner token list\` shows them`);
    }
    return (await this.list()).find((t) => t.id === id)!;
  }

  /** The token's id and labels, or 401 with the same words whatever was wrong. */
  async authenticate(header: string | undefined): Promise<{ id: string; labels: Record<string, string> }> {
    const token = header?.startsWith('Bearer ') ? header.slice(7).trim() : undefined;
    if (!token?.startsWith(PREFIX)) throw unauthorized(REFUSED);
    const row = await this.#db.selectFrom('runner_tokens').select(['id', 'labels', 'revoked_at', 'last_used_at']).where('hash', '=', hashToken(token)).executeTakeFirst();
    if (!row || row.revoked_at) throw unauthorized(REFUSED);
    if (!row.last_used_at || Date.now() - new Date(row.last_used_at).getTime() > LAST_USED_RESOLUTION_MS) {
      await this.#db.updateTable('runner_tokens').set({ last_used_at: new Date() }).where('id', '=', row.id).execute();
    }
    return { id: row.id, labels: row.labels };
  }

  /** Whether the token still works (a connected runner's is asked every few seconds). */
  async stillValid(id: string): Promise<boolean> {
    const row = await this.#db.selectFrom('runner_tokens').select('revoked_at').where('id', '=', id).executeTakeFirst();
    return Boolean(row && !row.revoked_at);
  }
}
