// Which model the built-in agent talks to, and over which protocol, from configuration.
import { invalid, unavailable } from '../../shared/errors.ts';
import { priceOf } from '../pricing.ts';
import { AnthropicModel } from './anthropic.ts';
import { OpenAIModel } from './openai.ts';
import type { ModelClient, Provider } from './types.ts';

export type { AssistantTurn, Completion, CompletionRequest, Message, ModelClient, Provider, ToolCall, ToolResult, ToolSpec } from './types.ts';
export { ModelError, type ModelFailure } from './errors.ts';
export { AnthropicModel, type AnthropicOptions } from './anthropic.ts';
export { OpenAIModel, type OpenAIOptions } from './openai.ts';

export interface ModelOptions {
  /** Overrides BERTH_MODEL. */
  model?: string | undefined;
  /** Overrides BERTH_MODEL_PROVIDER and the guess from the model name and the keys set. */
  provider?: Provider | undefined;
  /** Retries of one call (5xx, 429, connection errors) inside the SDK. Default 2. */
  maxRetries?: number | undefined;
  /** Per attempt. Default 5 minutes: a long reply from a slow server takes a while. */
  timeoutMs?: number | undefined;
  /** Anthropic's cap on one reply. Default 8192. */
  maxOutputTokens?: number | undefined;
}

const DEFAULT_BASE_URL: Record<Provider, string> = { openai: 'https://api.openai.com/v1', anthropic: 'https://api.anthropic.com' };
/**
 * Sent when a base URL is set but no key: local servers (vLLM, Ollama) ignore the key,
 * but the SDKs refuse to send a request without one.
 */
const NO_KEY = 'no-key';

/** The model a built-in agent task that names none runs with: BERTH_MODEL. */
export function defaultModel(env: NodeJS.ProcessEnv): string | undefined {
  return env.BERTH_MODEL?.trim() || undefined;
}

/**
 * A model client from OPENAI_BASE_URL / OPENAI_API_KEY or ANTHROPIC_BASE_URL /
 * ANTHROPIC_API_KEY, BERTH_MODEL (and BERTH_MODEL_PROVIDER, BERTH_MODEL_PRICE).
 * Reads only `env`, never this process's environment.
 */
export function modelClientFromEnv(env: NodeJS.ProcessEnv, opts: ModelOptions = {}): ModelClient {
  const model = opts.model?.trim() ?? defaultModel(env);
  if (!model) {
    throw unavailable(
      'No model is configured for the built-in agent: set BERTH_MODEL (e.g. claude-sonnet-4-5 or gpt-4.1), and ANTHROPIC_API_KEY for Anthropic, or OPENAI_API_KEY (and OPENAI_BASE_URL for vLLM, Ollama, LiteLLM) for an OpenAI-compatible server.',
    );
  }
  const provider = pickProvider(model, env, opts.provider);
  const prefix = provider === 'openai' ? 'OPENAI' : 'ANTHROPIC';
  const baseURL = env[`${prefix}_BASE_URL`]?.trim() || DEFAULT_BASE_URL[provider];
  let apiKey = env[`${prefix}_API_KEY`]?.trim();
  if (!apiKey) {
    if (baseURL === DEFAULT_BASE_URL[provider]) throw unavailable(`The built-in agent's model ${model} is served over the ${provider} protocol but ${prefix}_API_KEY is not set: set it (or ${prefix}_BASE_URL for a server that needs no key).`);
    apiKey = NO_KEY;
  }
  const common = {
    model,
    baseURL,
    apiKey,
    price: priceOf(model, env.BERTH_MODEL_PRICE),
    maxRetries: opts.maxRetries ?? 2,
    timeoutMs: opts.timeoutMs ?? 5 * 60_000,
  };
  return provider === 'openai' ? new OpenAIModel(common) : new AnthropicModel({ ...common, maxOutputTokens: opts.maxOutputTokens ?? 8192 });
}

/** A model API an org or a project chose (Berth's model settings), with the key read from its secret. */
export interface ModelEndpoint {
  provider: Provider;
  /** As the provider's SDK takes it: OpenAI's with /v1, Anthropic's without. */
  baseUrl: string;
  apiKey: string;
  model: string;
}

/**
 * A model client for chosen settings rather than the instance's variables. The price comes
 * from the table: BERTH_MODEL_PRICE prices the instance's own model, not this one.
 */
export function modelClientFor(endpoint: ModelEndpoint, opts: Omit<ModelOptions, 'model' | 'provider'> = {}): ModelClient {
  const common = {
    model: endpoint.model,
    baseURL: endpoint.baseUrl,
    apiKey: endpoint.apiKey || NO_KEY,
    price: priceOf(endpoint.model),
    maxRetries: opts.maxRetries ?? 2,
    timeoutMs: opts.timeoutMs ?? 5 * 60_000,
  };
  return endpoint.provider === 'openai' ? new OpenAIModel(common) : new AnthropicModel({ ...common, maxOutputTokens: opts.maxOutputTokens ?? 8192 });
}

/** The provider the instance's variables give `model` (BERTH_MODEL_PROVIDER, the name, the keys set). */
export function instanceProvider(model: string, env: NodeJS.ProcessEnv): Provider {
  return pickProvider(model, env, undefined);
}

/** Explicit, else Anthropic for a claude-* model or when only Anthropic is configured, else OpenAI. */
function pickProvider(model: string, env: NodeJS.ProcessEnv, explicit: Provider | undefined): Provider {
  const named = explicit ?? env.BERTH_MODEL_PROVIDER?.trim();
  if (named) {
    if (named !== 'openai' && named !== 'anthropic') throw invalid(`BERTH_MODEL_PROVIDER must be openai or anthropic, not ${JSON.stringify(named)}`);
    return named;
  }
  if (model.toLowerCase().startsWith('claude')) return 'anthropic';
  const anthropicSet = Boolean(env.ANTHROPIC_API_KEY || env.ANTHROPIC_BASE_URL);
  const openaiSet = Boolean(env.OPENAI_API_KEY || env.OPENAI_BASE_URL);
  return anthropicSet && !openaiSet ? 'anthropic' : 'openai';
}
