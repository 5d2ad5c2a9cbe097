import { createHash, randomBytes } from 'node:crypto';
import { unauthorized } from '../shared/errors.ts';
import { newId } from '../shared/ids.ts';
import type { Caller } from './authz.ts';
import type { Db, Role } from './db/index.ts';
import { Recent } from './recent.ts';

export type { Caller } from './authz.ts';

const TOKEN_PREFIX = 'berth_';
const LAST_USED_RESOLUTION_MS = 60_000;
const LATELY_MS = 15 * 60_000;
const LATELY_MAX = 50_000;

export const hashToken = (token: string) => createHash('sha256').update(token).digest('hex');

export type NewToken =
  | { kind: 'user'; userId: string; name: string; expiresAt?: Date | null }
  | { kind: 'org'; orgId: string; role: Role; userId: string | null; name: string; expiresAt?: Date | null };

/** API tokens: shown once at creation, stored only as a sha256 hash. */
export class TokenService {
  readonly #db: Db;
  /** When each token's last_used_at was last written; writing it on every call would cost a write per read. */
  readonly #lastUsedWritten = new Map<string, number>();
  /**
   * Recently verified tokens, for a second: a busy client would otherwise pay a query per
   * call. Revoking a token clears it here at once; another replica sees it within the second.
   */
  readonly #recent = new Recent<Caller>();
  /**
   * Hashes of tokens that authenticated lately, with when. Only the failure limiter reads
   * it: an address over its limit still lets these through to be checked in full, so one
   * noisy client on a shared address (a NAT, a load balancer, the host itself) cannot lock
   * everyone else there out. Bounded; oldest first out.
   */
  readonly #lately = new Map<string, number>();

  constructor(db: Db) {
    this.#db = db;
  }

  async create(t: NewToken): Promise<{ id: string; token: string }> {
    const id = newId('tok');
    const token = `${TOKEN_PREFIX}${randomBytes(24).toString('base64url')}`;
    await this.#db
      .insertInto('tokens')
      .values({
        id,
        kind: t.kind,
        org_id: t.kind === 'org' ? t.orgId : null,
        role: t.kind === 'org' ? t.role : null,
        user_id: t.userId,
        name: t.name,
        hash: hashToken(token),
        expires_at: t.expiresAt ?? null,
      })
      .execute();
    return { id, token };
  }

  async authenticate(header: string | undefined): Promise<Caller> {
    const token = header?.startsWith('Bearer ') ? header.slice(7).trim() : undefined;
    if (!token) throw unauthorized('missing API token: send "Authorization: Bearer <token>" (the CLI reads it from the data dir or BERTH_TOKEN)');
    const hash = hashToken(token);
    const recent = this.#recent.get(hash);
    if (recent) return recent.value;
    const row = await this.#db
      .selectFrom('tokens')
      .leftJoin('users', 'users.id', 'tokens.user_id')
      .select(['tokens.id', 'tokens.kind', 'tokens.org_id', 'tokens.user_id', 'tokens.role', 'tokens.revoked_at', 'tokens.expires_at', 'users.disabled_at', 'users.instance_admin'])
      .where('tokens.hash', '=', hash)
      .executeTakeFirst();
    const now = Date.now();
    if (!row || !usable(row, now)) {
      throw unauthorized('this API token is not valid (unknown, revoked or expired): create a new one');
    }
    if (now - (this.#lastUsedWritten.get(row.id) ?? 0) > LAST_USED_RESOLUTION_MS) {
      this.#lastUsedWritten.set(row.id, now);
      await this.#db.updateTable('tokens').set({ last_used_at: new Date(now) }).where('id', '=', row.id).execute();
    }
    const caller: Caller = {
      tokenId: row.id,
      kind: row.kind,
      userId: row.user_id,
      orgId: row.org_id,
      role: row.role,
      instanceAdmin: row.kind === 'user' && Boolean(row.instance_admin),
    };
    this.#recent.set(hash, caller, row.expires_at ? new Date(row.expires_at).getTime() : Infinity, now);
    this.#lately.delete(hash);
    this.#lately.set(hash, now);
    if (this.#lately.size > LATELY_MAX) this.#lately.delete(this.#lately.keys().next().value!);
    return caller;
  }

  /**
   * Whether the token with this id still works, read from the database and not
   * remembered: open streams ask it every second, so a revocation, an expiry or a disabled
   * user on any replica ends them.
   */
  async stillValid(tokenId: string, now = Date.now()): Promise<boolean> {
    const row = await this.#db
      .selectFrom('tokens')
      .leftJoin('users', 'users.id', 'tokens.user_id')
      .select(['tokens.revoked_at', 'tokens.expires_at', 'users.disabled_at'])
      .where('tokens.id', '=', tokenId)
      .executeTakeFirst();
    return Boolean(row && usable(row, now));
  }

  /** Forgets cached verifications: call after revoking tokens or removing users. */
  /**
   * Whether this Authorization header's token authenticated in the last 15 minutes: a hash
   * and a map lookup, no database. Says nothing of whether it is still valid.
   */
  authenticatedLately(header: string | undefined, now = Date.now()): boolean {
    const token = header?.startsWith('Bearer ') ? header.slice(7).trim() : undefined;
    if (!token) return false;
    const at = this.#lately.get(hashToken(token));
    return at !== undefined && now - at < LATELY_MS;
  }

  forget(): void {
    this.#recent.clear();
  }
}

/** A token works until it is revoked or expires, and while its user is not disabled. */
function usable(row: { revoked_at: unknown; expires_at: unknown; disabled_at: unknown }, now: number): boolean {
  return !row.revoked_at && !row.disabled_at && !(row.expires_at && new Date(row.expires_at as string | Date).getTime() <= now);
}

/** The id of the org with this name, made if missing; two callers racing get the same one. */
export async function ensureOrg(db: Db, name: string): Promise<string> {
  const found = await db.selectFrom('orgs').select('id').where('name', '=', name).executeTakeFirst();
  if (found) return found.id;
  await db.insertInto('orgs').values({ id: newId('org'), name }).onConflict((oc) => oc.column('name').doNothing()).execute();
  return (await db.selectFrom('orgs').select('id').where('name', '=', name).executeTakeFirstOrThrow()).id;
}

/**
 * The first start of a fresh database makes the org 'default' and a local administrator
 * who owns it; `berth up` hands that user's token to the CLI.
 */
export async function ensureBootstrap(db: Db): Promise<{ orgId: string; userId: string }> {
  return db.transaction().execute(async (tx) => {
    const org = { id: await ensureOrg(tx, 'default') };
    let user = await tx.selectFrom('users').select('id').where('email', '=', 'admin@localhost').executeTakeFirst();
    if (!user) {
      user = { id: newId('usr') };
      await tx
        .insertInto('users')
        .values({ id: user.id, email: 'admin@localhost', name: 'Local administrator', instance_admin: true })
        .onConflict((oc) => oc.column('email').doNothing())
        .execute();
      user = await tx.selectFrom('users').select('id').where('email', '=', 'admin@localhost').executeTakeFirstOrThrow();
    }
    await tx
      .insertInto('memberships')
      .values({ org_id: org.id, user_id: user.id, role: 'owner' })
      .onConflict((oc) => oc.columns(['org_id', 'user_id']).doNothing())
      .execute();
    return { orgId: org.id, userId: user.id };
  });
}
