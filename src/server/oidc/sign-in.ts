// Signing in through an OpenID Connect provider: the authorization-code flow with PKCE, state
// and nonce, ending in the identity Berth keys its users by (issuer + subject).
import { timingSafeEqual } from 'node:crypto';
import * as client from 'openid-client';
import { BerthError } from '../../shared/errors.ts';

export interface OidcSignInOptions {
  /** The provider's issuer identifier; its discovery document is read from ISSUER/.well-known/openid-configuration. */
  issuer: string;
  clientId: string;
  /** Absent for a public client, which then relies on PKCE alone. */
  clientSecret?: string | undefined;
  /** Berth's callback URL, registered at the provider. */
  redirectUri: string;
  /** Default: openid email profile groups. */
  scopes?: string[] | undefined;
  /** The claim holding the user's groups. Default 'groups'. */
  groupsClaim?: string | undefined;
  /** Allow a plain-HTTP issuer. Only for tests and a provider on localhost. */
  allowHttp?: boolean | undefined;
}

export const DEFAULT_SCOPES: readonly string[] = ['openid', 'email', 'profile', 'groups'];
export const DEFAULT_GROUPS_CLAIM = 'groups';

/** What the HTTP layer keeps server-side, keyed by state, between begin() and complete(). */
export interface PendingSignIn {
  state: string;
  codeVerifier: string;
  nonce: string;
  /** Set when `berth login` started the sign-in: its loopback port and its verifier's S256 challenge (cli-codes.ts). */
  cli?: { port: number; challenge: string } | undefined;
}

export interface OidcIdentity {
  /** With subject, the stable key of the user (users.oidc_issuer, users.oidc_subject). */
  issuer: string;
  subject: string;
  email: string;
  /**
   * Whether the provider vouches for the email address; undefined when it does not say.
   * Link a sign-in to an existing user by email only when this is true.
   */
  emailVerified: boolean | undefined;
  name: string;
  groups: string[];
}

/** Why a sign-in failed; the HTTP layer may log it, the user sees the message. */
export type OidcFailure =
  | 'discovery'
  | 'state_mismatch'
  | 'provider_error'
  | 'missing_code'
  | 'code_exchange'
  | 'id_token'
  | 'userinfo'
  | 'missing_claim';

/**
 * A failed sign-in. Messages never carry codes, tokens or the client secret, and no `cause` is
 * attached: the library's errors can hold the token response.
 */
export class OidcSignInError extends BerthError {
  readonly reason: OidcFailure;

  constructor(reason: OidcFailure, message: string) {
    super(reason === 'discovery' ? 'unavailable' : 'unauthorized', message);
    this.name = 'OidcSignInError';
    this.reason = reason;
  }
}

const AGAIN = 'start the sign-in again';

/** Signs users in through one OpenID provider. Discovery happens on first use and is cached. */
export class OidcSignIn {
  readonly issuer: string;
  readonly #clientId: string;
  readonly #clientSecret: string | undefined;
  readonly #redirectUri: URL;
  readonly #scope: string;
  readonly #groupsClaim: string;
  readonly #allowHttp: boolean;
  #configuration: Promise<client.Configuration> | undefined;

  constructor(options: OidcSignInOptions) {
    this.issuer = options.issuer;
    this.#clientId = options.clientId;
    this.#clientSecret = options.clientSecret || undefined;
    this.#redirectUri = new URL(options.redirectUri);
    this.#scope = (options.scopes ?? DEFAULT_SCOPES).join(' ');
    this.#groupsClaim = options.groupsClaim ?? DEFAULT_GROUPS_CLAIM;
    this.#allowHttp = options.allowHttp ?? false;
  }

  get redirectUri(): string {
    return this.#redirectUri.href;
  }

  /** Where to send the browser, and what to keep until it comes back. */
  async begin(): Promise<PendingSignIn & { url: string }> {
    const config = await this.#discover();
    const codeVerifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const nonce = client.randomNonce();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: this.#redirectUri.href,
      scope: this.#scope,
      code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: 'S256',
      state,
      nonce,
    });
    return { url: url.href, state, codeVerifier, nonce };
  }

  /**
   * Finishes a sign-in from the URL the provider redirected the browser to (absolute, or the
   * path and query as the HTTP layer received them) and the pending sign-in kept for its state.
   */
  async complete(callbackUrl: string | URL, pending: PendingSignIn): Promise<OidcIdentity> {
    const received = new URL(callbackUrl, this.#redirectUri).searchParams;
    // The state is checked before anything else: a mismatch may be a forged callback, and
    // checking first leaves the code unspent.
    const state = received.get('state');
    if (state === null || !sameString(state, pending.state)) {
      throw new OidcSignInError('state_mismatch', `this sign-in response does not match the sign-in that was started (state mismatch): ${AGAIN}`);
    }
    const providerError = received.get('error');
    if (providerError !== null) {
      const description = received.get('error_description');
      throw new OidcSignInError(
        'provider_error',
        `the OpenID provider refused the sign-in: ${providerError}${description ? ` (${description})` : ''}`,
      );
    }
    if (!received.get('code')) throw new OidcSignInError('missing_code', `the OpenID provider's response carries no authorization code: ${AGAIN}`);

    const config = await this.#discover();
    // The token request's redirect_uri is taken from the URL passed here, so rebuild it from the
    // configured one: behind a proxy the URL the HTTP layer sees may differ in host or scheme.
    const current = new URL(this.#redirectUri);
    current.search = received.toString();
    current.hash = '';
    let tokens: Awaited<ReturnType<typeof client.authorizationCodeGrant>>;
    try {
      tokens = await client.authorizationCodeGrant(config, current, {
        pkceCodeVerifier: pending.codeVerifier,
        expectedState: pending.state,
        expectedNonce: pending.nonce,
        idTokenExpected: true,
      });
    } catch (err) {
      throw exchangeError(err);
    }

    const claims = tokens.claims();
    if (!claims) throw new OidcSignInError('id_token', `the OpenID provider returned no ID token: ${AGAIN}`);
    let email = stringClaim(claims, 'email');
    let emailVerified = booleanClaim(claims, 'email_verified');
    let name = stringClaim(claims, 'name') ?? stringClaim(claims, 'preferred_username');
    let groups = groupsClaim(claims, this.#groupsClaim);

    // Many providers put only `sub` in the ID token of a code flow and the rest behind userinfo.
    if ((email === undefined || name === undefined || groups === undefined) && config.serverMetadata().userinfo_endpoint) {
      let info: client.UserInfoResponse;
      try {
        // Also checks that userinfo speaks about the same subject as the ID token.
        info = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
      } catch (err) {
        throw new OidcSignInError('userinfo', `could not read the account's details from the OpenID provider: ${describe(err)}`);
      }
      if (email === undefined) {
        email = stringClaim(info, 'email');
        emailVerified = booleanClaim(info, 'email_verified');
      }
      name ??= stringClaim(info, 'name') ?? stringClaim(info, 'preferred_username');
      groups ??= groupsClaim(info, this.#groupsClaim);
    }

    if (email === undefined) {
      throw new OidcSignInError(
        'missing_claim',
        "the OpenID provider did not send an email address for this account: allow the 'email' scope for Berth's client at the provider",
      );
    }
    return { issuer: claims.iss, subject: claims.sub, email, emailVerified, name: name ?? email, groups: groups ?? [] };
  }

  #discover(): Promise<client.Configuration> {
    this.#configuration ??= this.#discoverOnce().catch((err: unknown) => {
      // Not cached: a provider that is down while Berth starts should work once it is back.
      this.#configuration = undefined;
      throw err;
    });
    return this.#configuration;
  }

  async #discoverOnce(): Promise<client.Configuration> {
    let issuer: URL;
    try {
      issuer = new URL(this.issuer);
    } catch {
      throw new OidcSignInError('discovery', `the OpenID issuer '${this.issuer}' is not a URL`);
    }
    if (issuer.protocol !== 'https:' && !this.#allowHttp) {
      throw new OidcSignInError('discovery', `the OpenID issuer ${this.issuer} must be an https:// URL (plain HTTP only for a provider on this machine)`);
    }
    try {
      return await client.discovery(issuer, this.#clientId, this.#clientSecret, this.#clientAuth(), {
        execute: this.#allowHttp ? [client.allowInsecureRequests] : [],
        timeout: 10,
      });
    } catch (err) {
      throw new OidcSignInError('discovery', `could not read the OpenID configuration of ${this.issuer}: ${describe(err)}`);
    }
  }

  #clientAuth(): client.ClientAuth {
    const secret = this.#clientSecret;
    if (secret === undefined) return client.None();
    const basic = client.ClientSecretBasic(secret);
    const post = client.ClientSecretPost(secret);
    // client_secret_basic is the registration default in OpenID Connect; use post only for
    // providers that say they do not take basic.
    return (as, c, body, headers) => {
      const methods = as.token_endpoint_auth_methods_supported;
      const auth = methods && !methods.includes('client_secret_basic') && methods.includes('client_secret_post') ? post : basic;
      auth(as, c, body, headers);
    };
  }
}

function sameString(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function stringClaim(claims: Record<string, unknown>, name: string): string | undefined {
  const value = claims[name];
  return typeof value === 'string' && value.trim() !== '' ? value.trim() : undefined;
}

function booleanClaim(claims: Record<string, unknown>, name: string): boolean | undefined {
  const value = claims[name];
  // Some providers send booleans as strings.
  if (value === true || value === 'true') return true;
  if (value === false || value === 'false') return false;
  return undefined;
}

/** The groups in `claim`; undefined when the claim is absent, so userinfo can be asked. */
function groupsClaim(claims: Record<string, unknown>, claim: string): string[] | undefined {
  const value = claims[claim];
  if (value === undefined || value === null) return undefined;
  const list = Array.isArray(value) ? value : [value];
  return [...new Set(list.filter((g): g is string => typeof g === 'string' && g !== ''))];
}

function exchangeError(err: unknown): OidcSignInError {
  // invalid_grant: the code was already used, expired, or the PKCE verifier does not match;
  // invalid_client (often as a 401 challenge): the client id or secret is wrong.
  if (err instanceof client.ResponseBodyError || err instanceof client.WWWAuthenticateChallengeError) {
    return new OidcSignInError('code_exchange', `the OpenID provider did not accept the sign-in (${oauthError(err)}): ${AGAIN}`);
  }
  if (err instanceof client.AuthorizationResponseError) {
    return new OidcSignInError('provider_error', `the OpenID provider refused the sign-in: ${err.error}`);
  }
  if (err instanceof client.ClientError && err.code === 'OAUTH_JWT_CLAIM_COMPARISON_FAILED') {
    return new OidcSignInError('id_token', `the OpenID provider's ID token does not match this sign-in (${describe(err)}): ${AGAIN}`);
  }
  return new OidcSignInError('id_token', `the OpenID provider's token response could not be verified (${describe(err)}): ${AGAIN}`);
}

/**
 * A safe one-line description of a library error. The messages of openid-client and oauth4webapi
 * are fixed text (never values from the response); the detailed one is often the cause's.
 */
function describe(err: unknown): string {
  if (!(err instanceof Error)) return 'unknown error';
  const cause = err instanceof client.ClientError && err.cause instanceof Error ? err.cause : undefined;
  if (cause && cause.name === 'OperationProcessingError') return cause.message;
  if (err instanceof client.ResponseBodyError || err instanceof client.WWWAuthenticateChallengeError) {
    return `${oauthError(err)} (HTTP ${err.status})`;
  }
  if (err.name === 'TimeoutError' || err.name === 'AbortError') return 'the provider did not answer in time';
  // fetch() failures put the reason (ECONNREFUSED, ENOTFOUND) in the cause.
  if (err.message === 'fetch failed' && err.cause instanceof Error) return `fetch failed: ${err.cause.message}`;
  return err.message;
}

/** The OAuth error code of an error response, from its body or its WWW-Authenticate challenge. */
function oauthError(err: client.ResponseBodyError | client.WWWAuthenticateChallengeError): string {
  if (err instanceof client.ResponseBodyError) return err.error;
  return err.cause.find((challenge) => challenge.parameters.error)?.parameters.error ?? `HTTP ${err.status}`;
}
