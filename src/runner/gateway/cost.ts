// What a gateway call cost, from the agent's price table. That table prices plain
// input and output; agent CLIs lean on prompt caching, whose tokens providers bill apart.
import { costUsd, priceOf } from '../../agent/index.ts';
import type { TokenCounts } from './protocols.ts';
import type { Provider } from './upstreams.ts';

/** What a call cost in US dollars, from its provider, model and tokens. */
export type CostFn = (provider: Provider, model: string, tokens: TokenCounts) => number;

// Cached input as a share of the input price. Anthropic: reads 0.1, writes (5-minute) 1.25.
// OpenAI discounts cached input by 50 to 90 % by model: 0.5 never under-reports.
const CACHE_FACTOR: Record<Provider, { read: number; write: number }> = {
  anthropic: { read: 0.1, write: 1.25 },
  openai: { read: 0.5, write: 1 },
};

export function tableCost(env: NodeJS.ProcessEnv = process.env): CostFn {
  return (provider, model, tokens) => {
    const f = CACHE_FACTOR[provider];
    const plain = tokens.inputTokens - tokens.cacheReadTokens - tokens.cacheWriteTokens;
    const inputTokens = Math.max(0, plain) + tokens.cacheReadTokens * f.read + tokens.cacheWriteTokens * f.write;
    return costUsd(priceOf(model, env.BERTH_MODEL_PRICE), { inputTokens, outputTokens: tokens.outputTokens });
  };
}
