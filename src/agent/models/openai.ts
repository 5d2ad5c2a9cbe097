// The OpenAI Chat Completions protocol, which OpenAI, vLLM, Ollama, LiteLLM and most
// gateways speak.
import { randomUUID } from 'node:crypto';
import OpenAI from 'openai';
import { z } from 'zod';
import { costUsd, type Price } from '../pricing.ts';
import { modelError, rootCause, type CallSite, type SdkFailure } from './errors.ts';
import type { AssistantTurn, Completion, CompletionRequest, Message, ModelClient, ToolSpec } from './types.ts';

export interface OpenAIOptions {
  model: string;
  baseURL: string;
  apiKey: string;
  price: Price | null;
  maxRetries: number;
  timeoutMs: number;
}

/** The part of a chat completion we read. Servers differ in what else they send. */
const ChatCompletionReply = z.object({
  choices: z
    .array(
      z.object({
        message: z.object({
          content: z.string().nullish(),
          tool_calls: z
            .array(
              z.object({
                id: z.string().nullish(),
                function: z.object({
                  name: z.string(),
                  // Some servers send an object where the protocol says JSON text.
                  arguments: z.union([z.string(), z.record(z.string(), z.unknown())]).nullish(),
                }),
              }),
            )
            .nullish(),
        }),
      }),
    )
    .min(1),
  usage: z.object({ prompt_tokens: z.number(), completion_tokens: z.number() }).nullish(),
});

export class OpenAIModel implements ModelClient {
  readonly provider = 'openai' as const;
  readonly model: string;
  readonly #client: OpenAI;
  readonly #price: Price | null;
  readonly #site: CallSite;

  constructor(opts: OpenAIOptions) {
    this.model = opts.model;
    this.#price = opts.price;
    // Everything passed explicitly: the SDK would otherwise read this process's environment.
    this.#client = new OpenAI({ apiKey: opts.apiKey, baseURL: opts.baseURL, organization: null, project: null, maxRetries: opts.maxRetries, timeout: opts.timeoutMs });
    this.#site = { label: `the OpenAI-compatible API at ${opts.baseURL}`, attempts: opts.maxRetries + 1, timeoutMs: opts.timeoutMs };
  }

  async complete(req: CompletionRequest): Promise<Completion> {
    const started = performance.now();
    let reply: unknown;
    try {
      reply = await this.#client.chat.completions.create(
        { model: this.model, messages: [{ role: 'system', content: req.system }, ...toWire(req.messages)], tools: req.tools.map(toolToWire) },
        { signal: req.signal },
      );
    } catch (err) {
      throw modelError(sdkFailure(err), this.#site);
    }
    const parsed = ChatCompletionReply.safeParse(reply);
    if (!parsed.success) throw modelError({ kind: 'unreadable', message: describeUnreadable(reply, parsed.error) }, this.#site);
    const { choices, usage } = parsed.data;
    const message = choices[0]!.message;
    const turn: AssistantTurn = {
      text: message.content?.trim() ? message.content : null,
      toolCalls: (message.tool_calls ?? []).map((c) => ({
        id: c.id || `call_${randomUUID()}`,
        name: c.function.name,
        arguments: typeof c.function.arguments === 'string' ? c.function.arguments : JSON.stringify(c.function.arguments ?? {}),
      })),
    };
    const tokens = { inputTokens: usage?.prompt_tokens ?? 0, outputTokens: usage?.completion_tokens ?? 0 };
    return { message: turn, usage: { ...tokens, costUsd: costUsd(this.#price, tokens) }, durationMs: performance.now() - started };
  }
}

function toWire(messages: Message[]): OpenAI.ChatCompletionMessageParam[] {
  return messages.flatMap((m): OpenAI.ChatCompletionMessageParam[] => {
    switch (m.role) {
      case 'user':
        return [{ role: 'user', content: m.text }];
      case 'assistant':
        return [
          {
            role: 'assistant',
            content: m.text,
            ...(m.toolCalls.length ? { tool_calls: m.toolCalls.map((c) => ({ id: c.id, type: 'function' as const, function: { name: c.name, arguments: c.arguments } })) } : {}),
          },
        ];
      case 'tool':
        return m.results.map((r) => ({ role: 'tool', tool_call_id: r.callId, content: r.output }));
    }
  });
}

function toolToWire(t: ToolSpec): OpenAI.ChatCompletionTool {
  return { type: 'function', function: { name: t.name, description: t.description, parameters: t.parameters } };
}

function sdkFailure(err: unknown): SdkFailure {
  if (err instanceof OpenAI.APIUserAbortError) return { kind: 'abort' };
  if (err instanceof OpenAI.APIConnectionTimeoutError) return { kind: 'timeout' };
  if (err instanceof OpenAI.APIConnectionError) return { kind: 'connection', cause: rootCause(err) };
  if (err instanceof OpenAI.APIError && err.status !== undefined) return { kind: 'status', status: err.status, message: err.message };
  return { kind: 'unreadable', message: rootCause(err) };
}

function describeUnreadable(reply: unknown, error: z.ZodError): string {
  if (typeof reply === 'string') return JSON.stringify(reply.slice(0, 200));
  const issue = error.issues[0];
  return issue ? `${issue.path.join('.') || 'the reply'}: ${issue.message}` : 'unexpected shape';
}
