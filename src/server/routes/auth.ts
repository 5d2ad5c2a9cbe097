import { z } from 'zod';
import { AuthMethods, ErrorSchema } from '../../shared/api.ts';
import { AcceptInviteBody, CliRedirect, CliSignInStart, CliTokenBody, SignedIn } from '../../shared/api-auth.ts';
import { BerthError, invalid, notFound } from '../../shared/errors.ts';
import { newId } from '../../shared/ids.ts';
import type { App, AppDeps } from '../app.ts';
import { ensureOrg } from '../auth.ts';
import { atLeast } from '../authz.ts';
import { InviteService } from '../invites.ts';
import { CliCodes, mapGroups, type OidcIdentity } from '../oidc/index.ts';

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
  const cliCodes = new CliCodes();
  const invites = new InviteService({ db, tokens, audit });
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
    schema: {
      tags: ['auth'],
      summary: 'Begin signing in: redirects to the identity provider. `berth login` adds its loopback port and a PKCE challenge',
      security: [],
      querystring: CliSignInStart.partial(),
      response: errors,
    },
    handler: async (req, reply) => {
      if (!oidc) throw notConfigured();
      const { cli_port: port, cli_challenge: challenge } = req.query;
      if ((port === undefined) !== (challenge === undefined)) throw invalid('cli_port and cli_challenge come together (`berth login` sends both)', 'cli_port');
      const pending = await oidc.signIn.begin();
      // Only a port is taken, never a URL: the browser can be sent back to this machine's loopback address and nowhere else.
      oidc.pending.put(port !== undefined && challenge !== undefined ? { ...pending, cli: { port, challenge } } : pending);
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
      response: { 200: z.union([SignedIn, CliRedirect]), ...errors },
    },
    handler: async (req, reply) => {
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
      const memberships = await membershipsOf(deps, user.id);
      for (const m of memberships) {
        await audit.append({ orgId: m.id, actor: `user:${user.id}`, action: 'auth.sign_in', target: user.id, details: { issuer: identity.issuer, email: user.email, via: pending.cli ? 'oidc-cli' : 'oidc' } });
      }
      if (pending.cli) {
        // Started by `berth login`: the browser goes on to the CLI's listener with a code that
        // only the CLI, holding the verifier, can trade for the token.
        const redirect = `http://127.0.0.1:${pending.cli.port}/callback?code=${cliCodes.issue({ userId: user.id, challenge: pending.cli.challenge })}`;
        // The UI's callback page asks with fetch and follows the answer; a browser sent here directly is redirected.
        if (/text\/html/.test(req.headers.accept ?? '')) return reply.redirect(redirect, 302);
        return { redirect };
      }
      const expiresAt = new Date(Date.now() + SESSION_HOURS * 3_600_000);
      const { token, id: tokenId } = await tokens.create({ kind: 'user', userId: user.id, name: `sign-in ${new Date().toISOString()}`, expiresAt });
      // Exactly the declared fields: the reply is one of two shapes, and an extra field (upsertUser's disabled_at) would match neither.
      return { token, tokenId, expiresAt: expiresAt.toISOString(), user: { id: user.id, email: user.email, name: user.name }, orgs: memberships.map((m) => ({ name: m.name, role: m.role })) };
    },
  });

  app.post('/api/auth/cli/token', {
    config: { rateLimit, audit: 'auth.sign_in' },
    schema: {
      tags: ['auth'],
      summary: 'Finish a sign-in `berth login` started: trades the one-time code its listener received, with its PKCE verifier, for a user token',
      security: [],
      body: CliTokenBody,
      response: { 200: SignedIn, ...errors },
    },
    handler: async (req) => {
      if (!oidc) throw notConfigured();
      const userId = cliCodes.take(req.body.code, req.body.verifier);
      if (!userId) throw new BerthError('unauthorized', 'this sign-in code is unknown, expired, already used or not yours: run `berth login` again');
      const user = await db.selectFrom('users').select(['id', 'email', 'name', 'disabled_at']).where('id', '=', userId).executeTakeFirst();
      if (!user || user.disabled_at) throw new BerthError('unauthorized', 'this account is disabled');
      const expiresAt = new Date(Date.now() + SESSION_HOURS * 3_600_000);
      const { token, id: tokenId } = await tokens.create({ kind: 'user', userId, name: `berth login ${new Date().toISOString()}`, expiresAt });
      const memberships = await membershipsOf(deps, userId);
      return { token, tokenId, expiresAt: expiresAt.toISOString(), user: { id: user.id, email: user.email, name: user.name }, orgs: memberships.map((m) => ({ name: m.name, role: m.role })) };
    },
  });

  app.post('/api/auth/invite', {
    config: { rateLimit, audit: 'member.invite_accepted' },
    schema: {
      tags: ['auth'],
      summary: 'Accept a one-time invite: its code becomes a user token, shown once. A second use or an expired code is refused',
      security: [],
      body: AcceptInviteBody,
      response: { 200: SignedIn, ...errors },
    },
    handler: async (req) => {
      const accepted = await invites.accept(req.body.code);
      return { ...accepted, expiresAt: null };
    },
  });
}

async function membershipsOf({ db }: AppDeps, userId: string) {
  return db
    .selectFrom('memberships')
    .innerJoin('orgs', 'orgs.id', 'memberships.org_id')
    .select(['orgs.id', 'orgs.name', 'memberships.role'])
    .where('user_id', '=', userId)
    .orderBy('orgs.name')
    .execute();
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
