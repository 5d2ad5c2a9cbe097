// The API shapes of signing in: who a token is (GET /api/me), the answer of every route that
// hands out a user token (identity provider, CLI sign-in, invite), and invites.
import { z } from 'zod';

const RoleSchema = z.enum(['owner', 'admin', 'member', 'viewer']);

/** Who the token acts for, and in which orgs; `berth whoami` prints it and `berth login` stores the org from it. */
export const Me = z.object({
  kind: z.enum(['user', 'org']),
  userId: z.string().nullable(),
  email: z.string().nullable(),
  name: z.string().nullable().optional(),
  /** The token this request carried. */
  token: z
    .object({ id: z.string(), name: z.string(), kind: z.enum(['user', 'org']), expiresAt: z.string().nullable() })
    .optional(),
  /** With the caller's effective role in each: an org token's own role, capped by its maker's. */
  orgs: z.array(z.object({ id: z.string(), name: z.string(), role: RoleSchema })),
});
export type Me = z.infer<typeof Me>;

/** A new user token, shown once: the answer of a sign-in, a CLI sign-in and an accepted invite. */
export const SignedIn = z.object({
  token: z.string(),
  tokenId: z.string().optional(),
  expiresAt: z.string().nullable(),
  user: z.object({ id: z.string(), email: z.string(), name: z.string() }),
  orgs: z.array(z.object({ name: z.string(), role: z.string() })),
});
export type SignedIn = z.infer<typeof SignedIn>;

/**
 * What `berth login` adds to GET /api/auth/oidc/start: the loopback port it listens on (the
 * control plane sends the browser only to http://127.0.0.1:PORT/callback) and the S256
 * challenge of a verifier only the CLI holds, which it shows to exchange the one-time code.
 */
export const CliSignInStart = z.strictObject({
  cli_port: z.coerce.number().int().min(1024, 'a loopback port from 1024 to 65535').max(65535, 'a loopback port from 1024 to 65535'),
  cli_challenge: z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'the base64url SHA-256 of the CLI\'s verifier (43 characters)'),
});

/** When the sign-in was started by `berth login`: where the browser goes next, with a one-time code. */
export const CliRedirect = z.object({ redirect: z.string() });

export const CliTokenBody = z.strictObject({
  code: z.string().min(1).max(200),
  verifier: z.string().min(43).max(128),
});

/** A one-time invite link for a member added by email: shown once, only its hash is kept. */
export const Invite = z.object({
  id: z.string(),
  email: z.string(),
  role: RoleSchema,
  /** Open it in a browser, or give its code to `berth login URL --invite CODE`. */
  url: z.string(),
  code: z.string(),
  expiresAt: z.string(),
});
export type Invite = z.infer<typeof Invite>;

export const InviteBody = z.strictObject({
  expires: z.string().max(20).optional().describe('how long the link works, such as 7d or 12h (default 7d, at most 30d)'),
});

export const AcceptInviteBody = z.strictObject({ code: z.string().min(1).max(200) });
