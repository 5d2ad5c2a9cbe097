// What the gateway knows of the two wire protocols it speaks: which paths it serves,
// how each reports an error, and where each puts the tokens a call used.
import type { Provider } from './upstreams.ts';

/** The model-calling APIs; a route without one is passed through and not counted. */
export type ModelApi = 'chat' | 'responses' | 'messages';

export interface Route {
  method: 'GET' | 'POST';
  provider: Provider;
  /** Below the provider's prefix (/openai, /anthropic), starting with the API version. */
  path: string;
  api: ModelApi | null;
}

export const ROUTES: readonly Route[] = [
  { method: 'POST', provider: 'openai', path: '/v1/chat/completions', api: 'chat' },
  { method: 'POST', provider: 'openai', path: '/v1/responses', api: 'responses' },
  { method: 'GET', provider: 'openai', path: '/v1/models', api: null },
  { method: 'POST', provider: 'anthropic', path: '/v1/messages', api: 'messages' },
  { method: 'POST', provider: 'anthropic', path: '/v1/messages/count_tokens', api: null },
  { method: 'GET', provider: 'anthropic', path: '/v1/models', api: null },
];

/** Which protocol a path speaks (for its errors, even when no route matches), and the path below the prefix. */
export function splitPath(pathname: string): { provider: Provider; rest: string | null } {
  for (const provider of ['openai', 'anthropic'] as const) {
    const prefix = `/${provider}`;
    if (pathname === prefix || pathname.startsWith(`${prefix}/`)) return { provider, rest: pathname.slice(prefix.length) };
  }
  return { provider: 'openai', rest: null };
}

/** Why the gateway itself answers instead of the provider. */
export type GatewayError = 'bad_request' | 'unauthorized' | 'not_found' | 'method_not_allowed' | 'too_large' | 'budget_spent' | 'no_upstream' | 'upstream_failed' | 'internal';

export const ERROR_STATUS: Record<GatewayError, number> = {
  bad_request: 400,
  unauthorized: 401,
  not_found: 404,
  method_not_allowed: 405,
  too_large: 413,
  budget_spent: 429,
  no_upstream: 503,
  upstream_failed: 502,
  internal: 500,
};

// The error `type` (and OpenAI's `code`) each protocol's clients know. OpenAI's clients
// (Codex among them) treat insufficient_quota as final rather than something to retry.
const OPENAI_ERROR: Record<GatewayError, { type: string; code: string | null }> = {
  bad_request: { type: 'invalid_request_error', code: null },
  unauthorized: { type: 'invalid_request_error', code: 'invalid_api_key' },
  not_found: { type: 'invalid_request_error', code: 'unknown_url' },
  method_not_allowed: { type: 'invalid_request_error', code: 'method_not_supported' },
  too_large: { type: 'invalid_request_error', code: 'request_too_large' },
  budget_spent: { type: 'insufficient_quota', code: 'insufficient_quota' },
  no_upstream: { type: 'server_error', code: null },
  upstream_failed: { type: 'server_error', code: null },
  internal: { type: 'server_error', code: null },
};

const ANTHROPIC_ERROR: Record<GatewayError, string> = {
  bad_request: 'invalid_request_error',
  unauthorized: 'authentication_error',
  not_found: 'not_found_error',
  method_not_allowed: 'invalid_request_error',
  too_large: 'request_too_large',
  budget_spent: 'rate_limit_error',
  no_upstream: 'api_error',
  upstream_failed: 'api_error',
  internal: 'api_error',
};

export function errorBody(provider: Provider, error: GatewayError, message: string): unknown {
  if (provider === 'anthropic') return { type: 'error', error: { type: ANTHROPIC_ERROR[error], message } };
  return { error: { message, ...OPENAI_ERROR[error], param: null } };
}

/** Tokens one call used. */
export interface TokenCounts {
  /** Every input token, including those read from or written to a prompt cache. */
  inputTokens: number;
  outputTokens: number;
  /** Of inputTokens: read from the provider's prompt cache. */
  cacheReadTokens: number;
  /** Of inputTokens: written to the provider's prompt cache (Anthropic bills these apart). */
  cacheWriteTokens: number;
}

export const NO_TOKENS: TokenCounts = { inputTokens: 0, outputTokens: 0, cacheReadTokens: 0, cacheWriteTokens: 0 };

/** What a response says about the call: the model that answered and the tokens it used. */
export interface CallReport {
  model: string | undefined;
  tokens: TokenCounts | undefined;
}

/**
 * The request body as forwarded. A streamed chat completion reports its usage only when
 * asked (stream_options.include_usage), and the budget needs it: the gateway asks.
 */
export function prepareRequest(api: ModelApi, body: Record<string, unknown>): { body: Record<string, unknown>; stream: boolean } {
  const stream = body.stream === true;
  if (api === 'chat' && stream) {
    const options = isObject(body.stream_options) ? body.stream_options : {};
    return { body: { ...body, stream_options: { ...options, include_usage: true } }, stream };
  }
  return { body, stream };
}

/** The report in a whole (non-streamed) response body. */
export function reportFromBody(api: ModelApi, body: unknown): CallReport {
  if (!isObject(body)) return { model: undefined, tokens: undefined };
  return { model: str(body.model), tokens: api === 'messages' ? anthropicTokens(body.usage) : openaiTokens(body.usage) };
}

/**
 * Follows a streamed response event by event. OpenAI chat: the last chunk carries
 * `usage`. Responses: `response.completed` (or .incomplete, .failed) carries the final
 * response. Anthropic: `message_start` has the input, `message_delta` the running output
 * (and, lately, input) counts.
 */
export class StreamReport {
  readonly #api: ModelApi;
  #model: string | undefined;
  #usage: Record<string, unknown> | undefined;

  constructor(api: ModelApi) {
    this.#api = api;
  }

  event(data: string): void {
    if (data === '[DONE]' || !data.startsWith('{')) return;
    let e: unknown;
    try {
      e = JSON.parse(data);
    } catch {
      return;
    }
    if (!isObject(e)) return;
    if (this.#api === 'chat') {
      this.#model ??= str(e.model);
      if (isObject(e.usage)) this.#usage = e.usage;
    } else if (this.#api === 'responses') {
      if (isObject(e.response)) {
        this.#model = str(e.response.model) ?? this.#model;
        if (isObject(e.response.usage)) this.#usage = e.response.usage;
      }
    } else if (e.type === 'message_start' && isObject(e.message)) {
      this.#model = str(e.message.model);
      if (isObject(e.message.usage)) this.#usage = { ...e.message.usage };
    } else if (e.type === 'message_delta' && isObject(e.usage)) {
      // Counts in message_delta are running totals: they replace, not add.
      const present = Object.entries(e.usage).filter(([, v]) => typeof v === 'number');
      this.#usage = { ...this.#usage, ...Object.fromEntries(present) };
    }
  }

  report(): CallReport {
    const tokens = this.#api === 'messages' ? anthropicTokens(this.#usage) : openaiTokens(this.#usage);
    return { model: this.#model, tokens };
  }
}

function openaiTokens(usage: unknown): TokenCounts | undefined {
  if (!isObject(usage)) return undefined;
  // Chat completions say prompt/completion; the Responses API says input/output.
  const details = isObject(usage.prompt_tokens_details) ? usage.prompt_tokens_details : isObject(usage.input_tokens_details) ? usage.input_tokens_details : {};
  return {
    inputTokens: num(usage.prompt_tokens ?? usage.input_tokens),
    outputTokens: num(usage.completion_tokens ?? usage.output_tokens),
    cacheReadTokens: num(details.cached_tokens),
    cacheWriteTokens: 0,
  };
}

function anthropicTokens(usage: unknown): TokenCounts | undefined {
  if (!isObject(usage)) return undefined;
  // Anthropic's input_tokens leaves out what the cache served or stored.
  const read = num(usage.cache_read_input_tokens);
  const write = num(usage.cache_creation_input_tokens);
  return { inputTokens: num(usage.input_tokens) + read + write, outputTokens: num(usage.output_tokens), cacheReadTokens: read, cacheWriteTokens: write };
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : 0);
const str = (v: unknown): string | undefined => (typeof v === 'string' && v ? v : undefined);
