// The Anthropic Messages protocol.
import { randomUUID } from 'node:crypto';
import Anthropic from '@anthropic-ai/sdk';
import { z } from 'zod';
import { costUsd, type Price } from '../pricing.ts';
import { modelError, rootCause, type CallSite, type SdkFailure } from './errors.ts';
import type { AssistantTurn, Completion, CompletionRequest, Message, ModelClient, ToolSpec } from './types.ts';

export interface AnthropicOptions {
  model: string;
  baseURL: string;
  apiKey: string;
  price: Price | null;
  maxRetries: number;
  timeoutMs: number;
  /** The protocol requires a cap on each reply. */
  maxOutputTokens: number;
}

/** The part of a message we read. */
const MessageReply = z.object({
  content: z.array(
    z.object({
      type: z.string(),
      text: z.string().optional(),
      id: z.string().optional(),
      name: z.string().optional(),
      input: z.unknown().optional(),
    }),
  ),
  usage: z
    .object({
      input_tokens: z.number(),
      output_tokens: z.number(),
      cache_creation_input_tokens: z.number().nullish(),
      cache_read_input_tokens: z.number().nullish(),
    })
    .nullish(),
});

export class AnthropicModel implements ModelClient {
  readonly provider = 'anthropic' as const;
  readonly model: string;
  readonly #client: Anthropic;
  readonly #price: Price | null;
  readonly #maxOutputTokens: number;
  readonly #site: CallSite;

  constructor(opts: AnthropicOptions) {
    this.model = opts.model;
    this.#price = opts.price;
    this.#maxOutputTokens = opts.maxOutputTokens;
    // Key and URL passed explicitly: the SDK would otherwise read this process's
    // environment and credential files.
    this.#client = new Anthropic({ apiKey: opts.apiKey, baseURL: opts.baseURL, maxRetries: opts.maxRetries, timeout: opts.timeoutMs });
    this.#site = { label: `the Anthropic API at ${opts.baseURL}`, attempts: opts.maxRetries + 1, timeoutMs: opts.timeoutMs };
  }

  async complete(req: CompletionRequest): Promise<Completion> {
    const started = performance.now();
    let reply: unknown;
    try {
      reply = await this.#client.messages.create(
        { model: this.model, max_tokens: this.#maxOutputTokens, system: req.system, messages: toWire(req.messages), tools: req.tools.map(toolToWire) },
        { signal: req.signal },
      );
    } catch (err) {
      throw modelError(sdkFailure(err), this.#site);
    }
    const parsed = MessageReply.safeParse(reply);
    if (!parsed.success) {
      const message = typeof reply === 'string' ? JSON.stringify(reply.slice(0, 200)) : (parsed.error.issues[0]?.message ?? 'unexpected shape');
      throw modelError({ kind: 'unreadable', message }, this.#site);
    }
    const { content, usage } = parsed.data;
    const text = content
      .filter((b) => b.type === 'text' && b.text)
      .map((b) => b.text)
      .join('\n');
    const turn: AssistantTurn = {
      text: text.trim() ? text : null,
      toolCalls: content
        .filter((b) => b.type === 'tool_use' && b.name)
        .map((b) => ({
          id: b.id || `toolu_${randomUUID()}`,
          name: b.name!,
          arguments: typeof b.input === 'string' ? b.input : JSON.stringify(b.input ?? {}),
        })),
    };
    // Cached prompt tokens are input tokens too, for the token budget.
    const inputTokens = (usage?.input_tokens ?? 0) + (usage?.cache_creation_input_tokens ?? 0) + (usage?.cache_read_input_tokens ?? 0);
    const tokens = { inputTokens, outputTokens: usage?.output_tokens ?? 0 };
    return { message: turn, usage: { ...tokens, costUsd: costUsd(this.#price, tokens) }, durationMs: performance.now() - started };
  }
}

/**
 * The protocol wants user and assistant turns to alternate, tool results inside a user
 * turn, and no empty text: so tool results and a following note merge into one turn.
 */
function toWire(messages: Message[]): Anthropic.MessageParam[] {
  const out: { role: 'user' | 'assistant'; content: Anthropic.ContentBlockParam[] }[] = [];
  const add = (role: 'user' | 'assistant', blocks: Anthropic.ContentBlockParam[]) => {
    const last = out.at(-1);
    if (last?.role === role) last.content.push(...blocks);
    else out.push({ role, content: blocks });
  };
  for (const m of messages) {
    switch (m.role) {
      case 'user':
        add('user', [{ type: 'text', text: m.text || '(empty)' }]);
        break;
      case 'assistant': {
        const blocks: Anthropic.ContentBlockParam[] = [];
        if (m.text) blocks.push({ type: 'text', text: m.text });
        for (const c of m.toolCalls) blocks.push({ type: 'tool_use', id: c.id, name: c.name, input: parseInput(c.arguments) });
        add('assistant', blocks.length ? blocks : [{ type: 'text', text: '(no reply)' }]);
        break;
      }
      case 'tool':
        add(
          'user',
          m.results.map((r) => ({ type: 'tool_result' as const, tool_use_id: r.callId, content: r.output || '(no output)', ...(r.isError ? { is_error: true } : {}) })),
        );
        break;
    }
  }
  return out;
}

function parseInput(args: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(args);
    if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // Not JSON (the loop already told the model so): replay them as empty.
  }
  return {};
}

function toolToWire(t: ToolSpec): Anthropic.Tool {
  return { name: t.name, description: t.description, input_schema: t.parameters as Anthropic.Tool.InputSchema };
}

function sdkFailure(err: unknown): SdkFailure {
  if (err instanceof Anthropic.APIUserAbortError) return { kind: 'abort' };
  if (err instanceof Anthropic.APIConnectionTimeoutError) return { kind: 'timeout' };
  if (err instanceof Anthropic.APIConnectionError) return { kind: 'connection', cause: rootCause(err) };
  if (err instanceof Anthropic.APIError && err.status !== undefined) return { kind: 'status', status: err.status, message: err.message };
  return { kind: 'unreadable', message: rootCause(err) };
}
