import { z } from 'zod';
import { AuthMethods, ErrorSchema } from '../../shared/api.ts';
import { BerthError, invalid, notFound } from '../../shared/errors.ts';
import { newId } from '../../shared/ids.ts';
import type { App, AppDeps } from '../app.ts';
import { ensureOrg } from '../auth.ts';
import { atLeast } from '../authz.ts';
import { mapGroups, type OidcIdentity } from '../oidc/index.ts';

const STATE_COOKIE = 'berth_oidc_state';
const SESSION_HOURS = 12;
const errors = { 400: ErrorSchema, 401: ErrorSchema, 404: ErrorSchema, 429: ErrorSchema, 503: ErrorSchema };

function cookie(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === name) return decodeURIComponent(v.join('='));
  }
  return undefined;
}

/**
 * Sign-in with the company's identity provider (OpenID Connect, authorization code + PKCE).
 * The provider's users and groups become Berth users and org memberships; the answer is a
 * user token that lasts a working day.
 */
export function authRoutes(app: App, deps: AppDeps): void {
  const { oidc, db, tokens, audit } = deps;
  const notConfigured = () =>
    notFound('sign-in with an identity provider is not configured: set BERTH_OIDC_ISSUER, BERTH_OIDC_CLIENT_ID and BERTH_OIDC_REDIRECT_URI');
  // Sign-in is where passwords are guessed: a few attempts a minute per address.
  const rateLimit = { max: 20, timeWindow: '1 minute' };

  app.get('/api/auth/methods', {
    schema: { tags: ['auth'], summary: 'How people can sign in here: API tokens, and whether an identity provider is configured', security: [], response: { 200: AuthMethods, 429: ErrorSchema } },
    handler: async () => ({ token: true as const, oidc: oidc ? { enabled: true, ...(oidc.name ? { name: oidc.name } : {}) } : { enabled: false } }),
  });

  app.get('/api/auth/oidc/start', {
    config: { rateLimit },
    schema: { tags: ['auth'], summary: 'Begin signing in: redirects to the identity provider', security: [], response: errors },
    handler: async (_req, reply) => {
      if (!oidc) throw notConfigured();
      const pending = await oidc.signIn.begin();
      oidc.pending.put(pending);
      // The state also rides in a cookie, so a callback carrying someone else's state
      // (login CSRF) does not sign this browser in.
      void reply.header('set-cookie', `${STATE_COOKIE}=${encodeURIComponent(pending.state)}; Path=/api/auth/oidc; HttpOnly; SameSite=Lax; Max-Age=600`);
      return reply.redirect(pending.url, 302);
    },
  });

  app.get('/api/auth/oidc/callback', {
    config: { rateLimit },
    schema: {
      tags: ['auth'],
      summary: "The identity provider's redirect back; answers with a user token",
      security: [],
      querystring: z.object({ state: z.string().max(500), code: z.string().max(4096).optional(), error: z.string().max(500).optional() }).loose(),
      response: {
        200: z.object({ token: z.string(), expiresAt: z.string(), user: z.object({ id: z.string(), email: z.string(), name: z.string() }), orgs: z.array(z.object({ name: z.string(), role: z.string() })) }),
        ...errors,
      },
    },
    handler: async (req) => {
      if (!oidc) throw notConfigured();
      const state = req.query.state;
      if (cookie(req.headers.cookie, STATE_COOKIE) !== state) throw invalid('this sign-in was not started by this browser: start again', 'state');
      const pending = oidc.pending.take(state);
      if (!pending) throw invalid('this sign-in has expired or was already used: start again', 'state');
      const identity = await oidc.signIn.complete(req.url, pending);
      const user = await upsertUser(deps, identity);
      const grants = mapGroups(identity.groups, oidc.groupRules);
      await applyGrants(deps, user.id, grants);
      deps.authz.forget();
      const expiresAt = new Date(Date.now() + SESSION_HOURS * 3_600_000);
      const { token } = await tokens.create({ kind: 'user', userId: user.id, name: `sign-in ${new Date().toISOString()}`, expiresAt });
      const memberships = await db
        .selectFrom('memberships')
        .innerJoin('orgs', 'orgs.id', 'memberships.org_id')
        .select(['orgs.id', 'orgs.name', 'memberships.role'])
        .where('user_id', '=', user.id)
        .execute();
      for (const m of memberships) {
        await audit.append({ orgId: m.id, actor: `user:${user.id}`, action: 'auth.sign_in', target: user.id, details: { issuer: identity.issuer, email: user.email, via: 'oidc' } });
      }
      return { token, expiresAt: expiresAt.toISOString(), user, orgs: memberships.map((m) => ({ name: m.name, role: m.role })) };
    },
  });
}

/** Finds the user by issuer and subject; links an existing account by email only when the provider verified it. */
async function upsertUser({ db }: AppDeps, id: OidcIdentity): Promise<{ id: string; email: string; name: string }> {
  const bySubject = await db.selectFrom('users').select(['id', 'email', 'name', 'disabled_at']).where('oidc_issuer', '=', id.issuer).where('oidc_subject', '=', id.subject).executeTakeFirst();
  if (bySubject) {
    if (bySubject.disabled_at) throw new BerthError('unauthorized', 'this account is disabled');
    return bySubject;
  }
  const email = id.email.toLowerCase();
  const byEmail = await db.selectFrom('users').select(['id', 'email', 'name', 'oidc_subject']).where('email', '=', email).executeTakeFirst();
  if (byEmail) {
    if (byEmail.oidc_subject || !id.emailVerified) {
      throw new BerthError('unauthorized', `a Berth user with the email ${email} exists and cannot be linked to this sign-in (the provider did not verify the email)`);
    }
    await db.updateTable('users').set({ oidc_issuer: id.issuer, oidc_subject: id.subject }).where('id', '=', byEmail.id).execute();
    return { id: byEmail.id, email: byEmail.email, name: byEmail.name };
  }
  const user = { id: newId('usr'), email, name: id.name };
  await db.insertInto('users').values({ ...user, oidc_issuer: id.issuer, oidc_subject: id.subject }).execute();
  return user;
}

/** Makes the memberships the provider's groups grant; never lowers a role given in Berth. */
async function applyGrants({ db }: AppDeps, userId: string, grants: { org: string; role: 'owner' | 'admin' | 'member' | 'viewer' }[]): Promise<void> {
  for (const g of grants) {
    const org = { id: await ensureOrg(db, g.org) };
    const current = await db.selectFrom('memberships').select('role').where('org_id', '=', org.id).where('user_id', '=', userId).executeTakeFirst();
    if (current && atLeast(current.role, g.role)) continue;
    await db
      .insertInto('memberships')
      .values({ org_id: org.id, user_id: userId, role: g.role })
      .onConflict((oc) => oc.columns(['org_id', 'user_id']).doUpdateSet({ role: g.role }))
      .execute();
  }
}
