// What a model call cost, in USD, so a task's cost budget can be enforced. Prices are
// list prices per million tokens at the time of writing and change; BERTH_MODEL_PRICE
// overrides them. A model we do not know (a local vLLM or Ollama model, a new release)
// costs 0: we would rather under-report than refuse to run, and the token budget
// still applies.
import { invalid } from '../shared/errors.ts';

export interface Price {
  /** USD per million input tokens. */
  input: number;
  /** USD per million output tokens. */
  output: number;
}

/** Longest matching prefix wins, so dated and suffixed names (claude-sonnet-4-5-20250929) match too. */
const KNOWN: Record<string, Price> = {
  'claude-opus-4': { input: 15, output: 75 },
  'claude-opus-4-5': { input: 5, output: 25 },
  'claude-sonnet-4': { input: 3, output: 15 },
  'claude-3-7-sonnet': { input: 3, output: 15 },
  'claude-3-5-sonnet': { input: 3, output: 15 },
  'claude-haiku-4': { input: 1, output: 5 },
  'claude-3-5-haiku': { input: 0.8, output: 4 },
  'gpt-5': { input: 1.25, output: 10 },
  'gpt-5-mini': { input: 0.25, output: 2 },
  'gpt-5-nano': { input: 0.05, output: 0.4 },
  'gpt-4.1': { input: 2, output: 8 },
  'gpt-4.1-mini': { input: 0.4, output: 1.6 },
  'gpt-4.1-nano': { input: 0.1, output: 0.4 },
  'gpt-4o': { input: 2.5, output: 10 },
  'gpt-4o-mini': { input: 0.15, output: 0.6 },
  o3: { input: 2, output: 8 },
  'o3-mini': { input: 1.1, output: 4.4 },
  'o4-mini': { input: 1.1, output: 4.4 },
};

/** "3/15": USD per million input / output tokens. */
export function parsePrice(text: string): Price {
  const m = /^\s*(\d+(?:\.\d+)?)\s*\/\s*(\d+(?:\.\d+)?)\s*$/.exec(text);
  if (!m) throw invalid(`BERTH_MODEL_PRICE must be "INPUT/OUTPUT" in USD per million tokens, like 3/15; got ${JSON.stringify(text)}`);
  return { input: Number(m[1]), output: Number(m[2]) };
}

/** The price of a model, from the override or the table; null when unknown (it then costs 0). */
export function priceOf(model: string, override?: string | undefined): Price | null {
  if (override) return parsePrice(override);
  // Gateways such as LiteLLM and OpenRouter prefix the vendor: "anthropic/claude-…".
  const name = model.slice(model.lastIndexOf('/') + 1).toLowerCase();
  let best: string | undefined;
  for (const prefix of Object.keys(KNOWN)) {
    if (name.startsWith(prefix) && (best === undefined || prefix.length > best.length)) best = prefix;
  }
  return best === undefined ? null : KNOWN[best]!;
}

export function costUsd(price: Price | null, tokens: { inputTokens: number; outputTokens: number }): number {
  if (!price) return 0;
  return (tokens.inputTokens * price.input + tokens.outputTokens * price.output) / 1_000_000;
}
