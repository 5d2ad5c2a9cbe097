// Sign-in through an OpenID provider, configured from BERTH_OIDC_* environment variables.
import { z } from 'zod';
import { invalid } from '../../shared/errors.ts';
import { ROLE_ORDER, type GroupRule } from './groups.ts';
import type { OidcSignInOptions } from './sign-in.ts';

export interface OidcConfig extends OidcSignInOptions {
  /** From BERTH_OIDC_GROUPS; empty when unset. */
  groupRules: GroupRule[];
  /** What the sign-in page calls the provider ("Sign in with Okta"), from BERTH_OIDC_NAME. */
  name?: string;
}

export const OIDC_ENV = {
  issuer: 'BERTH_OIDC_ISSUER',
  clientId: 'BERTH_OIDC_CLIENT_ID',
  clientSecret: 'BERTH_OIDC_CLIENT_SECRET',
  redirectUri: 'BERTH_OIDC_REDIRECT_URI',
  groups: 'BERTH_OIDC_GROUPS',
  scopes: 'BERTH_OIDC_SCOPES',
  groupsClaim: 'BERTH_OIDC_GROUPS_CLAIM',
  name: 'BERTH_OIDC_NAME',
} as const;

const roleSchema = z.enum(ROLE_ORDER as [GroupRule['role'], ...GroupRule['role'][]], {
  error: `role must be one of ${ROLE_ORDER.join(', ')}`,
});

export const groupRuleSchema = z.strictObject({
  group: z.string({ error: 'group must be a string' }).trim().min(1, 'group must not be empty'),
  org: z.string({ error: 'org must be a string' }).trim().min(1, 'org must not be empty'),
  role: roleSchema,
});

const httpUrl = (example: string) =>
  z.url({ protocol: /^https?$/, error: `must be an http:// or https:// URL, such as ${example}` });

// Messages never include the values: the secret must not end up in a log, and the other
// variables sit next to it in the same environment.
const envSchema = z.object({
  [OIDC_ENV.issuer]: httpUrl('https://login.example.com/realms/main'),
  [OIDC_ENV.clientId]: z.string(),
  [OIDC_ENV.clientSecret]: z.string().optional(),
  [OIDC_ENV.redirectUri]: httpUrl('https://berth.example.com/auth/oidc/callback'),
  [OIDC_ENV.groups]: z.string().optional(),
  [OIDC_ENV.scopes]: z.string().optional(),
  [OIDC_ENV.groupsClaim]: z.string().optional(),
  [OIDC_ENV.name]: z.string().max(60, 'must be at most 60 characters (it labels the sign-in button)').optional(),
});

/**
 * OIDC sign-in settings from the environment; undefined when no BERTH_OIDC_* variable is set.
 * Throws an `invalid` BerthError naming the variable when they are incomplete or malformed.
 */
export function oidcConfigFromEnv(env: Record<string, string | undefined>): OidcConfig | undefined {
  // An empty variable (VAR= in a compose file) counts as unset.
  const vars: Record<string, string> = {};
  for (const name of Object.values(OIDC_ENV)) {
    const value = env[name]?.trim();
    if (value) vars[name] = value;
  }
  if (Object.keys(vars).length === 0) return undefined;
  if (!vars[OIDC_ENV.issuer]) {
    throw invalid(`${OIDC_ENV.issuer} is required when other BERTH_OIDC_* variables are set: set it to the provider's issuer URL`);
  }
  for (const required of [OIDC_ENV.clientId, OIDC_ENV.redirectUri]) {
    if (!vars[required]) throw invalid(`${required} is required when ${OIDC_ENV.issuer} is set`);
  }

  const parsed = envSchema.safeParse(vars);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const name = String(issue?.path[0] ?? 'BERTH_OIDC_*');
    throw invalid(`${name} ${issue?.message ?? 'is invalid'}`);
  }
  const e = parsed.data;

  const issuer = new URL(e[OIDC_ENV.issuer]);
  const loopback = isLoopback(issuer.hostname);
  if (issuer.protocol === 'http:' && !loopback) {
    throw invalid(`${OIDC_ENV.issuer} must be an https:// URL (plain http:// is accepted only for a provider on this machine)`);
  }

  const scopes = e[OIDC_ENV.scopes]?.split(/[\s,]+/).filter(Boolean);
  if (scopes && !scopes.includes('openid')) {
    throw invalid(`${OIDC_ENV.scopes} must include 'openid'`);
  }

  return {
    issuer: e[OIDC_ENV.issuer],
    clientId: e[OIDC_ENV.clientId],
    clientSecret: e[OIDC_ENV.clientSecret],
    redirectUri: e[OIDC_ENV.redirectUri],
    scopes,
    groupsClaim: e[OIDC_ENV.groupsClaim],
    allowHttp: issuer.protocol === 'http:' && loopback,
    groupRules: parseGroupRules(e[OIDC_ENV.groups]),
    ...(e[OIDC_ENV.name] ? { name: e[OIDC_ENV.name] } : {}),
  };
}

/**
 * BERTH_OIDC_GROUPS: a JSON array of {group, org, role}, or the compact form
 * `group=org:role,group2=org2:role`. Group names holding ',' need the JSON form.
 */
export function parseGroupRules(value: string | undefined): GroupRule[] {
  const name = OIDC_ENV.groups;
  if (value === undefined || value.trim() === '') return [];
  const text = value.trim();

  let items: unknown[];
  if (text.startsWith('[')) {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw invalid(`${name} is not valid JSON: use a JSON array of {"group", "org", "role"} or the form group=org:role,group2=org2:role`);
    }
    if (!Array.isArray(json)) throw invalid(`${name} must be a JSON array of {"group", "org", "role"}`);
    items = json;
  } else {
    items = text
      .split(',')
      .map((entry) => entry.trim())
      .filter(Boolean)
      .map((entry, i) => {
        // The last '=' and ':' split, so group names like cn=admins,... (in JSON form) or a:b keep theirs.
        const eq = entry.lastIndexOf('=');
        const colon = entry.lastIndexOf(':');
        if (eq <= 0 || colon < eq) {
          throw invalid(`${name} entry ${i + 1} is not of the form group=org:role (or use a JSON array)`);
        }
        return { group: entry.slice(0, eq), org: entry.slice(eq + 1, colon), role: entry.slice(colon + 1).trim() };
      });
  }

  return items.map((item, i) => {
    const rule = groupRuleSchema.safeParse(item);
    if (!rule.success) throw invalid(`${name} entry ${i + 1}: ${rule.error.issues[0]?.message ?? 'is invalid'}`);
    return rule.data;
  });
}

function isLoopback(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || /^127(\.\d{1,3}){3}$/.test(hostname);
}
