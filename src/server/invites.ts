// One-time invite links: how a member added by email, with no identity provider, gets their
// first token. The code is shown once and kept only as a sha256 hash; it works once and not
// after it expires; using it makes a user token for the invited user and is on record.
import { randomBytes } from 'node:crypto';
import { BerthError, conflict, notFound } from '../shared/errors.ts';
import { newId } from '../shared/ids.ts';
import type { AuditLog } from './audit/index.ts';
import { atLeast } from './authz.ts';
import { hashToken, type TokenService } from './auth.ts';
import type { Db, Role } from './db/index.ts';

export const DEFAULT_INVITE_MS = 7 * 86_400_000;
export const MAX_INVITE_MS = 30 * 86_400_000;

export interface InviteDeps {
  db: Db;
  tokens: TokenService;
  audit: AuditLog;
}

export interface NewInvite {
  id: string;
  code: string;
  userId: string;
  email: string;
  role: Role;
  expiresAt: Date;
}

export interface AcceptedInvite {
  token: string;
  tokenId: string;
  user: { id: string; email: string; name: string };
  orgs: { name: string; role: Role }[];
}

/** The path of the web UI page that takes an invite; the code rides in the fragment, which no server or log sees. */
export const invitePath = (code: string) => `/invite#${code}`;

export class InviteService {
  readonly #d: InviteDeps;

  constructor(deps: InviteDeps) {
    this.#d = deps;
  }

  /**
   * An invite for a member of the org who has not signed in yet. Refused for a user who
   * signs in through the identity provider, who belongs to another org, who holds a working
   * token, or who outranks the inviter: the link is shown to the inviter, so it must never
   * be a way to act as someone with more rights than they have. An earlier open invite for
   * the same member stops working.
   */
  async create(opts: { orgId: string; orgName: string; email: string; inviterRole: Role; actor: string; ttlMs: number }): Promise<NewInvite> {
    const { db } = this.#d;
    const email = opts.email.toLowerCase();
    return db.transaction().execute(async (tx) => {
      const member = await tx
        .selectFrom('memberships')
        .innerJoin('users', 'users.id', 'memberships.user_id')
        .select(['users.id', 'users.email', 'users.oidc_subject', 'users.instance_admin', 'users.disabled_at', 'memberships.role'])
        .where('memberships.org_id', '=', opts.orgId)
        .where('users.email', '=', email)
        .executeTakeFirst();
      if (!member) throw notFound(`${email} is not a member of '${opts.orgName}': add them with \`berth member add ${email} --role member --invite\``);
      if (member.disabled_at) throw conflict(`${email}'s account is disabled: an invite would not let them in`);
      if (member.oidc_subject) throw conflict(`${email} signs in with the identity provider: they need no invite, only \`berth login\` or the web UI's sign-in button`);
      if (member.instance_admin) throw conflict(`${email} is an instance administrator: an invite cannot be made for them`);
      if (!atLeast(opts.inviterRole, member.role)) throw new BerthError('forbidden', `${email} is ${member.role} and you are ${opts.inviterRole}: only someone with at least their role can invite them`);
      const elsewhere = await tx.selectFrom('memberships').select('org_id').where('user_id', '=', member.id).where('org_id', '<>', opts.orgId).executeTakeFirst();
      if (elsewhere) throw conflict(`${email} also belongs to another org: an invite from one org cannot sign them in to the others; they can make a token for themselves`);
      const now = new Date();
      const working = await tx
        .selectFrom('tokens')
        .select('id')
        .where('user_id', '=', member.id)
        .where('revoked_at', 'is', null)
        .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', now)]))
        .executeTakeFirst();
      if (working) throw conflict(`${email} has already signed in (they hold a working token): an invite is only for a member's first sign-in`);
      // One open invite per member: a new link replaces the old one.
      await tx.updateTable('invites').set({ expires_at: now }).where('org_id', '=', opts.orgId).where('user_id', '=', member.id).where('used_at', 'is', null).where('expires_at', '>', now).execute();
      const id = newId('inv');
      const code = `berthinv_${randomBytes(24).toString('base64url')}`;
      const expiresAt = new Date(now.getTime() + opts.ttlMs);
      await tx.insertInto('invites').values({ id, org_id: opts.orgId, user_id: member.id, hash: hashToken(code), created_by: opts.actor, expires_at: expiresAt }).execute();
      return { id, code, userId: member.id, email: member.email, role: member.role, expiresAt };
    });
  }

  /** The local administrator's one-time sign-in link that `berth up` prints: no checks, it is the instance's own. */
  async createForBootstrap(orgId: string, userId: string, ttlMs: number): Promise<string> {
    const code = `berthinv_${randomBytes(24).toString('base64url')}`;
    await this.#d.db
      .insertInto('invites')
      .values({ id: newId('inv'), org_id: orgId, user_id: userId, hash: hashToken(code), created_by: 'system:berth-up', expires_at: new Date(Date.now() + ttlMs) })
      .execute();
    return code;
  }

  /** Trades a code for a user token, once: a second use, an expired or unknown code is a clear 401. */
  async accept(code: string, now = new Date()): Promise<AcceptedInvite> {
    const { db, tokens, audit } = this.#d;
    const hash = hashToken(code.trim());
    // Taken in one statement, so two browsers racing with the same link get one token between
    // them; in a transaction with the checks after it, so a refusal leaves the link unspent.
    const { taken, user } = await db.transaction().execute(async (tx) => {
      const taken = await tx
        .updateTable('invites')
        .set({ used_at: now })
        .where('hash', '=', hash)
        .where('used_at', 'is', null)
        .where('expires_at', '>', now)
        .returning(['id', 'org_id', 'user_id', 'created_by'])
        .executeTakeFirst();
      if (!taken) {
        const row = await tx.selectFrom('invites').select(['used_at', 'expires_at']).where('hash', '=', hash).executeTakeFirst();
        if (row?.used_at) throw new BerthError('unauthorized', 'this invite link was already used: each link works once. Ask an admin for a new one (`berth member add EMAIL --role ROLE --invite`)');
        if (row) throw new BerthError('unauthorized', 'this invite link has expired (or was replaced by a newer one): ask an admin for a new one (`berth member add EMAIL --role ROLE --invite`)');
        throw new BerthError('unauthorized', 'this invite link is not valid: check that it was copied whole, or ask an admin for a new one');
      }
      const user = await tx.selectFrom('users').select(['id', 'email', 'name', 'disabled_at']).where('id', '=', taken.user_id).executeTakeFirstOrThrow();
      if (user.disabled_at) throw new BerthError('unauthorized', 'this account is disabled');
      const membership = await tx.selectFrom('memberships').select('role').where('org_id', '=', taken.org_id).where('user_id', '=', user.id).executeTakeFirst();
      if (!membership) throw new BerthError('unauthorized', 'this invite is for an org you no longer belong to: ask an admin to add you again');
      return { taken, user };
    });
    const created = await tokens.create({ kind: 'user', userId: user.id, name: `invite ${now.toISOString().slice(0, 10)}` });
    await audit.append({
      orgId: taken.org_id,
      actor: `user:${user.id}`,
      action: 'member.invite_accepted',
      target: user.id,
      details: { email: user.email, invite: taken.id, invitedBy: taken.created_by, token: created.id },
    });
    const orgs = await db
      .selectFrom('memberships')
      .innerJoin('orgs', 'orgs.id', 'memberships.org_id')
      .select(['orgs.name', 'memberships.role'])
      .where('memberships.user_id', '=', user.id)
      .orderBy('orgs.name')
      .execute();
    return { token: created.token, tokenId: created.id, user: { id: user.id, email: user.email, name: user.name }, orgs };
  }

  /** Members of the org with an open invite: they have not signed in yet. */
  async pending(orgId: string, now = new Date()): Promise<Set<string>> {
    const rows = await this.#d.db.selectFrom('invites').select('user_id').where('org_id', '=', orgId).where('used_at', 'is', null).where('expires_at', '>', now).execute();
    return new Set(rows.map((r) => r.user_id));
  }
}
