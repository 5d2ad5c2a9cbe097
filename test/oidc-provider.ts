// A real OpenID provider for tests (oidc-provider on loopback) and a browser-like walk
// through its login and consent pages: redirects followed by hand, cookies kept.
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
// @ts-expect-error -- oidc-provider ships no type declarations (they live in @types/oidc-provider).
import ProviderModule from 'oidc-provider';

interface Provider {
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
}
const Provider = ProviderModule as new (issuer: string, configuration: Record<string, unknown>) => Provider;

export const CLIENT_SECRET = 'a-test-secret-that-must-stay-out-of-messages';

interface Account {
  sub: string;
  email?: string;
  email_verified?: boolean;
  name?: string;
  groups?: string[];
}

export const ACCOUNTS: Record<string, Account> = {
  alice: { sub: 'alice', email: 'alice@example.com', email_verified: true, name: 'Alice Liddell', groups: ['berth-admins', 'everyone'] },
  bob: { sub: 'bob', email: 'bob@example.com', name: 'Bob', groups: [] },
  nomail: { sub: 'nomail', name: 'No Mail', groups: ['everyone'] },
};

export interface TestProvider {
  issuer: string;
  redirectUri: string;
  /** For which use ('id_token' or 'userinfo') the provider was asked for an account's claims. */
  claimUses: string[];
  close(): Promise<void>;
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

/** A free loopback port for the redirect URI; nothing listens there, the test reads the redirect itself. */
export async function freePort(): Promise<number> {
  const server = createServer();
  const port = await listen(server);
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export async function startProvider(options: { idTokenCarriesClaims?: boolean; redirectUri?: string } = {}): Promise<TestProvider> {
  const server = createServer();
  const port = await listen(server);
  const issuer = `http://127.0.0.1:${port}`;
  const redirectUri = options.redirectUri ?? `http://127.0.0.1:${await freePort()}/callback`;
  const claimUses: string[] = [];
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'berth',
        client_secret: CLIENT_SECRET,
        redirect_uris: [redirectUri],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
      { client_id: 'berth-public', redirect_uris: [redirectUri], token_endpoint_auth_method: 'none' },
    ],
    pkce: { required: () => true },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    // By default a code flow's ID token holds only sub and the rest is read from userinfo;
    // with this off the ID token carries every claim its scopes grant.
    conformIdTokenClaims: !options.idTokenCarriesClaims,
    features: { devInteractions: { enabled: true } },
    cookies: { keys: ['test-cookie-key'] },
    // Set so the provider does not print a notice for each default lifetime it falls back to.
    ttl: { Interaction: 600, Session: 3600, Grant: 3600, AccessToken: 600, IdToken: 600, AuthorizationCode: 60 },
    // RS256, the algorithm every provider and client supports, with a key of this run's own.
    jwks: { keys: [{ ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }), kid: 'test', alg: 'RS256', use: 'sig' }] },
    async findAccount(_ctx: unknown, sub: string) {
      const account = ACCOUNTS[sub];
      if (!account) return undefined;
      return {
        accountId: sub,
        async claims(use: string) {
          claimUses.push(use);
          return account;
        },
      };
    },
  });
  server.on('request', provider.callback());
  return {
    issuer,
    redirectUri,
    claimUses,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}

/** Cookies by name and path, sent when the path matches: enough for one provider on one host. */
class CookieJar {
  readonly #cookies = new Map<string, { name: string; value: string; path: string }>();

  store(res: Response): void {
    for (const header of res.headers.getSetCookie()) {
      const [pair = '', ...attributes] = header.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let path = '/';
      let expired = value === '';
      for (const attribute of attributes) {
        const [key = '', val = ''] = attribute.split('=');
        if (key.toLowerCase() === 'path') path = val;
        if (key.toLowerCase() === 'expires' && Date.parse(val) <= Date.now()) expired = true;
        if (key.toLowerCase() === 'max-age' && Number(val) <= 0) expired = true;
      }
      const key = `${name}\u0000${path}`;
      if (expired) this.#cookies.delete(key);
      else this.#cookies.set(key, { name, value, path });
    }
  }

  header(url: URL): string {
    return [...this.#cookies.values()]
      .filter((c) => url.pathname === c.path || url.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }
}

const decodeHtml = (s: string) => s.replaceAll('&amp;', '&').replaceAll('&#x2F;', '/').replaceAll('&#39;', "'").replaceAll('&quot;', '"');

/**
 * A browser at the provider: follows redirects, fills the devInteractions login form (any
 * password) and consent form, and returns the URL the provider sends the browser back to.
 * With `abort`, the user cancels at the login page instead.
 */
export async function browse(startUrl: string, redirectUri: string, login: string, opts: { abort?: boolean } = {}): Promise<URL> {
  const jar = new CookieJar();
  let request: { url: URL; method: 'GET' | 'POST'; body?: URLSearchParams } = { url: new URL(startUrl), method: 'GET' };
  for (let step = 0; step < 20; step++) {
    const res = await fetch(request.url, {
      method: request.method,
      redirect: 'manual',
      headers: { cookie: jar.header(request.url), ...(request.body && { 'content-type': 'application/x-www-form-urlencoded' }) },
      body: request.body,
    });
    jar.store(res);
    const location = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && location) {
      const next = new URL(location, request.url);
      if (next.href.startsWith(redirectUri)) return next;
      request = { url: next, method: 'GET' };
      continue;
    }
    const html = await res.text();
    assert.equal(res.status, 200, `unexpected ${res.status} from ${request.url.pathname}: ${html.replace(/<style[^]*<\/style>/, "").slice(0, 1500)}`);
    const action = /<form[^>]*action="([^"]+)"/.exec(html)?.[1];
    const prompt = /name="prompt" value="([^"]+)"/.exec(html)?.[1];
    assert.ok(action && prompt, `no interaction form at ${request.url.pathname}`);
    const submit = new URL(decodeHtml(action), request.url);
    if (opts.abort) {
      const cancel = /href="([^"]+\/abort)"/.exec(html)?.[1];
      assert.ok(cancel, 'no cancel link on the login page');
      request = { url: new URL(decodeHtml(cancel), request.url), method: 'GET' };
      continue;
    }
    const body = new URLSearchParams({ prompt });
    if (prompt === 'login') {
      body.set('login', login);
      body.set('password', 'anything works in devInteractions');
    }
    request = { url: submit, method: 'POST', body };
  }
  throw new Error('the provider never redirected back to the client');
}

