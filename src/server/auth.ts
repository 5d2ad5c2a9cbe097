import { createHash, randomBytes } from 'node:crypto';
import { unauthorized } from '../shared/errors.ts';
import { newId } from '../shared/ids.ts';
import type { Db, TokenRow } from './db/index.ts';

export type Role = TokenRow['role'];

/** Who is calling: resolved from the bearer token on every request. */
export interface Caller {
  tokenId: string;
  orgId: string;
  role: Role;
}

const TOKEN_PREFIX = 'berth_';
const LAST_USED_RESOLUTION_MS = 60_000;

const hashToken = (token: string) => createHash('sha256').update(token).digest('hex');

/** API tokens: shown once at creation, stored only as a sha256 hash. */
export class TokenService {
  readonly #db: Db;
  /** When each token's last_used_at was last written; writing it on every call would cost a write per read. */
  readonly #lastUsedWritten = new Map<string, number>();

  constructor(db: Db) {
    this.#db = db;
  }

  async create(opts: { orgId: string; name: string; role: Role; expiresAt?: Date | null }): Promise<{ id: string; token: string }> {
    const id = newId('tok');
    const token = `${TOKEN_PREFIX}${randomBytes(24).toString('base64url')}`;
    await this.#db
      .insertInto('tokens')
      .values({ id, org_id: opts.orgId, name: opts.name, hash: hashToken(token), role: opts.role, expires_at: opts.expiresAt ?? null })
      .execute();
    return { id, token };
  }

  async authenticate(header: string | undefined): Promise<Caller> {
    const token = header?.startsWith('Bearer ') ? header.slice(7).trim() : undefined;
    if (!token) throw unauthorized('missing API token: send "Authorization: Bearer <token>" (the CLI reads it from the data dir or BERTH_TOKEN)');
    const row = await this.#db.selectFrom('tokens').selectAll().where('hash', '=', hashToken(token)).executeTakeFirst();
    const now = Date.now();
    if (!row || row.revoked_at || (row.expires_at && new Date(row.expires_at).getTime() <= now)) {
      throw unauthorized('this API token is not valid (unknown, revoked or expired): create a new one');
    }
    if (now - (this.#lastUsedWritten.get(row.id) ?? 0) > LAST_USED_RESOLUTION_MS) {
      this.#lastUsedWritten.set(row.id, now);
      await this.#db.updateTable('tokens').set({ last_used_at: new Date(now) }).where('id', '=', row.id).execute();
    }
    return { tokenId: row.id, orgId: row.org_id, role: row.role };
  }
}

/** The first org, created on the first start of a fresh database. */
export async function ensureDefaultOrg(db: Db): Promise<string> {
  const existing = await db.selectFrom('orgs').select('id').orderBy('created_at').executeTakeFirst();
  if (existing) return existing.id;
  const id = newId('org');
  await db.insertInto('orgs').values({ id, name: 'default' }).onConflict((oc) => oc.column('name').doNothing()).execute();
  const row = await db.selectFrom('orgs').select('id').where('name', '=', 'default').executeTakeFirstOrThrow();
  return row.id;
}
