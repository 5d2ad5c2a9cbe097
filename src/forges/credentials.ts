// Credentials for git over HTTP, carried only in git's environment: never in argv (ps shows
// it), never in a URL, never in a .git/config. git reads GIT_CONFIG_COUNT/KEY_n/VALUE_n as
// one-off configuration that is not written anywhere.
import type { GitCredentials } from './index.ts';

/** No credentials: public repositories and local paths. */
export const noCredentials = (): GitCredentials => ({ env: {}, expiresAt: null, secrets: [] });

/**
 * An Authorization header for every git request to `origin`. The header is scoped to that
 * origin (`http.<origin>/.extraHeader`) so that a redirect, a submodule or an alternate on
 * another host never receives it.
 */
function headerCredentials(origin: string, header: string, secrets: string[], expiresAt: Date | null): GitCredentials {
  return {
    env: {
      GIT_CONFIG_COUNT: '1',
      GIT_CONFIG_KEY_0: `http.${origin}/.extraHeader`,
      GIT_CONFIG_VALUE_0: `Authorization: ${header}`,
    },
    expiresAt,
    secrets,
  };
}

/** HTTP Basic `username:token`: GitHub wants `x-access-token`, GitLab `oauth2`. */
export function basicCredentials(origin: string, username: string, token: string, expiresAt: Date | null = null): GitCredentials {
  const encoded = Buffer.from(`${username}:${token}`, 'utf8').toString('base64');
  // The base64 of `user:token` is listed too: redaction cannot find the token inside it.
  return headerCredentials(origin, `Basic ${encoded}`, [token, encoded], expiresAt);
}

/** `Authorization: Bearer <token>`, for git servers that take access tokens that way. */
export function bearerCredentials(origin: string, token: string, expiresAt: Date | null = null): GitCredentials {
  return headerCredentials(origin, `Bearer ${token}`, [token], expiresAt);
}
