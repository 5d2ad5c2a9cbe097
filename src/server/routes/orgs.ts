import { z } from 'zod';
import { ErrorSchema, OrgRef } from '../../shared/api.ts';
import { Invite, InviteBody, Me } from '../../shared/api-auth.ts';
import { conflict, invalid, notFound } from '../../shared/errors.ts';
import { newId } from '../../shared/ids.ts';
import { parseDuration } from '../../shared/units.ts';
import type { App, AppDeps } from '../app.ts';
import { atLeast, forbidden, ROLES, type Scope } from '../authz.ts';
import { isoOrNull as iso, isUniqueViolation, type Role } from '../db/index.ts';
import { DEFAULT_INVITE_MS, invitePath, InviteService, MAX_INVITE_MS } from '../invites.ts';

const RoleSchema = z.enum(ROLES as unknown as [Role, ...Role[]]);
const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema };
const ORG_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;
// Loose on purpose: identity providers hand out addresses like admin@localhost.
const Email = z.string().max(320).regex(/^[^@\s]+@[^@\s]+$/, 'an email address');

const Org = z.object({ id: z.string(), name: z.string(), role: RoleSchema });
const Member = z.object({
  userId: z.string(),
  email: z.string(),
  name: z.string(),
  role: RoleSchema,
  createdAt: z.string(),
  pending: z.boolean().optional().describe('invited and not signed in yet: their invite link is still open'),
});
const Token = z.object({
  id: z.string(),
  name: z.string(),
  kind: z.enum(['user', 'org']),
  role: RoleSchema.nullable(),
  userId: z.string().nullable(),
  createdAt: z.string(),
  expiresAt: z.string().nullable(),
  lastUsedAt: z.string().nullable(),
  revokedAt: z.string().nullable(),
});

/**
 * Whether the caller may see and revoke this org token: their own (a user's own tokens,
 * or an org token itself) and, for admins and owners, every token whose role does not
 * outrank theirs. An org token is never its maker: it does not see or revoke the tokens
 * its maker made.
 */
function manages(scope: Scope, token: { id: string; user_id: string | null; role: Role | null }): boolean {
  const own = scope.caller.kind === 'user' ? token.user_id === scope.caller.userId : token.id === scope.caller.tokenId;
  if (own) return true;
  return atLeast(scope.role, 'admin') && token.role !== null && atLeast(scope.role, token.role);
}

/** Orgs, who belongs to them, and the tokens that act in them. */
export function orgRoutes(app: App, { db, authz, tokens, audit, publicUrl }: AppDeps): void {
  const invites = new InviteService({ db, tokens, audit });
  // After a change to tokens or memberships: the streams it ends are closed before the reply.
  const forgetAll = async () => {
    tokens.forget();
    authz.forget();
    await app.openStreams.recheck();
  };

  app.get('/api/me', {
    schema: { tags: ['orgs'], summary: 'Who the token acts for, which token it is, and the orgs it acts in with its effective role', response: { 200: Me, ...errors } },
    handler: async (req) => {
      const user = req.caller.userId ? await db.selectFrom('users').select(['email', 'name']).where('id', '=', req.caller.userId).executeTakeFirst() : undefined;
      const token = await db.selectFrom('tokens').select(['id', 'name', 'kind', 'expires_at']).where('id', '=', req.caller.tokenId).executeTakeFirst();
      return {
        kind: req.caller.kind,
        userId: req.caller.userId,
        email: user?.email ?? null,
        name: user?.name ?? null,
        ...(token && { token: { id: token.id, name: token.name, kind: token.kind, expiresAt: iso(token.expires_at) } }),
        orgs: await authz.orgsOf(req.caller),
      };
    },
  });

  app.delete('/api/me/token', {
    config: { audit: 'token.revoke' },
    schema: { tags: ['tokens'], summary: 'Revoke the token this request carries (`berth logout`)', response: { 204: z.null(), ...errors } },
    handler: async (req, reply) => {
      const { caller } = req;
      await db.updateTable('tokens').set({ revoked_at: new Date() }).where('id', '=', caller.tokenId).where('revoked_at', 'is', null).execute();
      // Not under an org: on record in each org the token acted in.
      for (const org of await authz.orgsOf(caller)) {
        await audit.append({ orgId: org.id, actor: caller.kind === 'user' ? `user:${caller.userId}` : `token:${caller.tokenId}`, action: 'token.revoke', target: caller.tokenId, details: { via: 'logout' } });
      }
      await forgetAll();
      return reply.code(204).send(null);
    },
  });

  app.get('/api/orgs', {
    schema: { tags: ['orgs'], summary: 'The orgs the caller belongs to', response: { 200: z.object({ items: z.array(Org) }), ...errors } },
    handler: async (req) => ({ items: await authz.orgsOf(req.caller) }),
  });

  app.post('/api/orgs', {
    config: { audit: 'org.create' },
    schema: {
      tags: ['orgs'],
      summary: 'Create an org; the caller owns it',
      body: z.strictObject({ name: z.string().regex(ORG_NAME, 'use lower-case letters, digits and dashes') }),
      response: { 201: Org, ...errors },
    },
    handler: async (req, reply) => {
      if (req.caller.kind !== 'user' || !req.caller.userId) throw forbidden('an org token cannot create orgs: use a user token');
      const id = newId('org');
      try {
        await db.transaction().execute(async (tx) => {
          await tx.insertInto('orgs').values({ id, name: req.body.name }).execute();
          await tx.insertInto('memberships').values({ org_id: id, user_id: req.caller.userId!, role: 'owner' }).execute();
        });
      } catch (err) {
        if (isUniqueViolation(err)) throw conflict(`an org named '${req.body.name}' exists`);
        throw err;
      }
      authz.forget();
      await audit.append({ orgId: id, actor: `user:${req.caller.userId}`, action: 'org.create', target: id, details: { name: req.body.name } });
      return reply.code(201).send({ id, name: req.body.name, role: 'owner' as const });
    },
  });

  app.get('/api/orgs/:org/members', {
    config: { permission: 'member.read' },
    schema: { tags: ['orgs'], summary: 'Members of the org and their roles', params: OrgRef, response: { 200: z.object({ items: z.array(Member) }), ...errors } },
    handler: async (req) => {
      const rows = await db
        .selectFrom('memberships')
        .innerJoin('users', 'users.id', 'memberships.user_id')
        .select(['users.id', 'users.email', 'users.name', 'memberships.role', 'memberships.created_at'])
        .where('memberships.org_id', '=', req.scope.orgId)
        .orderBy('users.email')
        .execute();
      const pending = await invites.pending(req.scope.orgId);
      return { items: rows.map((r) => ({ userId: r.id, email: r.email, name: r.name, role: r.role, createdAt: iso(r.created_at)!, pending: pending.has(r.id) })) };
    },
  });

  app.put('/api/orgs/:org/members/:email', {
    config: { permission: 'member.manage', audit: 'member.set' },
    schema: {
      tags: ['orgs'],
      summary: 'Add a member or change their role (creates the user if new)',
      params: OrgRef.extend({ email: Email }),
      body: z.strictObject({ role: RoleSchema, name: z.string().min(1).max(200).optional() }),
      response: { 200: Member, ...errors },
    },
    handler: async (req) => {
      const { scope } = req;
      const { role } = req.body;
      // Admins manage everyone below owner; only owners make or unmake owners.
      if (role === 'owner' && scope.role !== 'owner') throw forbidden('only an owner can make owners');
      const email = req.params.email.toLowerCase();
      return db.transaction().execute(async (tx) => {
        let user = await tx.selectFrom('users').select(['id', 'email', 'name']).where('email', '=', email).executeTakeFirst();
        if (!user) {
          user = { id: newId('usr'), email, name: req.body.name ?? email };
          await tx.insertInto('users').values(user).execute();
        }
        const current = await tx.selectFrom('memberships').select('role').where('org_id', '=', scope.orgId).where('user_id', '=', user.id).executeTakeFirst();
        if (current?.role === 'owner' && scope.role !== 'owner') throw forbidden('only an owner can change an owner');
        if (current?.role === 'owner' && role !== 'owner') await assertAnotherOwner(tx, scope.orgId, user.id);
        await tx
          .insertInto('memberships')
          .values({ org_id: scope.orgId, user_id: user.id, role })
          .onConflict((oc) => oc.columns(['org_id', 'user_id']).doUpdateSet({ role }))
          .execute();
        return { userId: user.id, email: user.email, name: user.name, role, createdAt: new Date().toISOString() };
      }).finally(forgetAll);
    },
  });

  app.post('/api/orgs/:org/members/:email/invite', {
    config: { permission: 'member.manage', audit: 'member.invite' },
    schema: {
      tags: ['orgs'],
      summary: 'A one-time invite link for a member who has not signed in yet (no identity provider): shown once, works once, expires',
      params: OrgRef.extend({ email: Email }),
      body: InviteBody,
      response: { 201: Invite, ...errors },
    },
    handler: async (req, reply) => {
      const { scope } = req;
      let ttlMs = DEFAULT_INVITE_MS;
      if (req.body.expires) {
        const ms = parseDuration(req.body.expires);
        if (!ms || ms < 60_000 || ms > MAX_INVITE_MS) throw invalid('--expires must be a duration from 1m to 30d, such as 7d or 12h', 'body.expires');
        ttlMs = ms;
      }
      const made = await invites.create({ orgId: scope.orgId, orgName: scope.orgName, email: req.params.email, inviterRole: scope.role, actor: scope.actor, ttlMs });
      // The UI's own origin, as people reach it (BERTH_PUBLIC_URL); else the address this request came to.
      const origin = publicUrl?.() || `${req.protocol}://${req.host}`;
      return reply.code(201).send({ id: made.id, email: made.email, role: made.role, code: made.code, url: `${origin}${invitePath(made.code)}`, expiresAt: made.expiresAt.toISOString() });
    },
  });

  app.delete('/api/orgs/:org/members/:email', {
    config: { permission: 'member.manage', audit: 'member.remove' },
    schema: { tags: ['orgs'], summary: 'Remove a member', params: OrgRef.extend({ email: Email }), response: { 204: z.null(), ...errors } },
    handler: async (req, reply) => {
      const { scope } = req;
      await db.transaction().execute(async (tx) => {
        const row = await tx
          .selectFrom('memberships')
          .innerJoin('users', 'users.id', 'memberships.user_id')
          .select(['users.id', 'memberships.role'])
          .where('memberships.org_id', '=', scope.orgId)
          .where('users.email', '=', req.params.email.toLowerCase())
          .executeTakeFirst();
        if (!row) throw notFound(`${req.params.email} is not a member of '${scope.orgName}'`);
        if (row.role === 'owner') {
          if (scope.role !== 'owner') throw forbidden('only an owner can remove an owner');
          await assertAnotherOwner(tx, scope.orgId, row.id);
        }
        await tx.deleteFrom('memberships').where('org_id', '=', scope.orgId).where('user_id', '=', row.id).execute();
        // Org tokens the member made stop working with their membership.
        await tx.updateTable('tokens').set({ revoked_at: new Date() }).where('org_id', '=', scope.orgId).where('user_id', '=', row.id).where('revoked_at', 'is', null).execute();
      });
      await forgetAll();
      return reply.code(204).send(null);
    },
  });

  app.get('/api/orgs/:org/tokens', {
    config: { permission: 'token.read' },
    schema: {
      tags: ['tokens'],
      summary: "The org's tokens the caller may manage: admins and owners those up to their role, others their own (an org token itself)",
      params: OrgRef,
      response: { 200: z.object({ items: z.array(Token) }), ...errors },
    },
    handler: async (req) => {
      const rows = await db.selectFrom('tokens').selectAll().where('org_id', '=', req.scope.orgId).orderBy('created_at', 'desc').execute();
      return {
        items: rows.filter((r) => manages(req.scope, r)).map((r) => ({
          id: r.id,
          name: r.name,
          kind: r.kind,
          role: r.role,
          userId: r.user_id,
          createdAt: iso(r.created_at)!,
          expiresAt: iso(r.expires_at),
          lastUsedAt: iso(r.last_used_at),
          revokedAt: iso(r.revoked_at),
        })),
      };
    },
  });

  app.post('/api/orgs/:org/tokens', {
    config: { permission: 'token.create', audit: 'token.create' },
    schema: {
      tags: ['tokens'],
      summary: 'Create an org token; its value is shown once',
      params: OrgRef,
      body: z.strictObject({
        role: RoleSchema,
        name: z.string().min(1).max(200).optional(),
        expires: z.string().max(20).optional().describe('lifetime such as 30d or 12h; none means it does not expire'),
      }),
      response: { 201: Token.extend({ token: z.string() }), ...errors },
    },
    handler: async (req, reply) => {
      const { scope } = req;
      if (!atLeast(scope.role, req.body.role)) throw forbidden(`your role is ${scope.role}: a token you make cannot be ${req.body.role}`);
      let expiresAt: Date | null = null;
      if (req.body.expires) {
        const ms = parseDuration(req.body.expires);
        if (!ms || ms < 60_000 || ms > 3 * 365 * 86_400_000) throw invalid('expires must be a duration from 1m to 3 years, such as 30d', 'body.expires');
        expiresAt = new Date(Date.now() + ms);
      }
      const name = req.body.name ?? `${req.body.role} token`;
      const created = await tokens.create({ kind: 'org', orgId: scope.orgId, role: req.body.role, userId: req.caller.userId, name, expiresAt });
      return reply.code(201).send({
        id: created.id,
        token: created.token,
        name,
        kind: 'org' as const,
        role: req.body.role,
        userId: req.caller.userId,
        createdAt: new Date().toISOString(),
        expiresAt: iso(expiresAt),
        lastUsedAt: null,
        revokedAt: null,
      });
    },
  });

  app.delete('/api/orgs/:org/tokens/:id', {
    config: { permission: 'token.create', audit: 'token.revoke' },
    schema: { tags: ['tokens'], summary: 'Revoke a token', params: OrgRef.extend({ id: z.string().max(100) }), response: { 204: z.null(), ...errors } },
    handler: async (req, reply) => {
      const { scope } = req;
      const row = await db.selectFrom('tokens').select(['id', 'user_id', 'role']).where('org_id', '=', scope.orgId).where('id', '=', req.params.id).executeTakeFirst();
      // A token the caller may not manage is not there for them.
      if (!row || !manages(scope, row)) throw notFound(`no token '${req.params.id}' in '${scope.orgName}' that you can manage: \`berth token list\` shows yours`);
      await db.updateTable('tokens').set({ revoked_at: new Date() }).where('id', '=', row.id).where('revoked_at', 'is', null).execute();
      await forgetAll();
      return reply.code(204).send(null);
    },
  });
}

async function assertAnotherOwner(tx: AppDeps['db'], orgId: string, leavingUserId: string): Promise<void> {
  const others = await tx
    .selectFrom('memberships')
    .select('user_id')
    .where('org_id', '=', orgId)
    .where('role', '=', 'owner')
    .where('user_id', '<>', leavingUserId)
    .execute();
  if (others.length === 0) throw conflict('an org needs an owner: make someone else owner first');
}
