// Where the gateway sends model calls, and with which key. The keys are the provider
// accounts' own: they stay in the runner and never reach an environment.

export type Provider = 'openai' | 'anthropic';

export interface Upstream {
  /**
   * As the provider's SDKs spell it: OpenAI's includes the API version
   * (https://api.openai.com/v1), Anthropic's does not (https://api.anthropic.com).
   */
  baseUrl: string;
  apiKey: string;
  /**
   * The address the base URL's host was checked at (an org's or project's chosen URL, by the
   * host-side address rules): connections go there, not to whatever a later lookup answers.
   */
  address?: string | null | undefined;
}

export type Upstreams = Partial<Record<Provider, Upstream>>;

const DEFAULT_BASE_URL: Record<Provider, string> = {
  openai: 'https://api.openai.com/v1',
  anthropic: 'https://api.anthropic.com',
};

/** The upstreams the usual variables name: OPENAI_API_KEY (+ OPENAI_BASE_URL), ANTHROPIC_API_KEY (+ ANTHROPIC_BASE_URL). */
export function upstreamsFromEnv(env: NodeJS.ProcessEnv = process.env): Upstreams {
  const upstreams: Upstreams = {};
  if (env.OPENAI_API_KEY) upstreams.openai = { baseUrl: env.OPENAI_BASE_URL || DEFAULT_BASE_URL.openai, apiKey: env.OPENAI_API_KEY };
  if (env.ANTHROPIC_API_KEY) upstreams.anthropic = { baseUrl: env.ANTHROPIC_BASE_URL || DEFAULT_BASE_URL.anthropic, apiKey: env.ANTHROPIC_API_KEY };
  return upstreams;
}

/**
 * The upstream URL for a gateway path below the provider's prefix, which always starts
 * with the API version (`/v1/chat/completions`); `search` is passed on (`?beta=true`).
 */
export function upstreamUrl(provider: Provider, upstream: Upstream, path: string, search: string): URL {
  const base = upstream.baseUrl.replace(/\/+$/, '');
  // OpenAI's base already ends in the version the path starts with.
  const rest = provider === 'openai' ? path.replace(/^\/v1(?=\/|$)/, '') : path;
  return new URL(`${base}${rest}${search}`);
}

export const PROVIDER_NAME: Record<Provider, string> = { openai: 'OpenAI', anthropic: 'Anthropic' };
