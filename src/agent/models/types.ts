// The conversation in a form of our own, which each protocol adapter translates to
// its wire shape and back. One conversation always talks to one adapter.
import type { Usage } from '../../shared/tasks.ts';

export type Provider = 'openai' | 'anthropic';

export interface ToolCall {
  id: string;
  name: string;
  /** The arguments as JSON text, as the model wrote them: possibly not valid JSON. */
  arguments: string;
}

/** What the model said in one turn: text, tool calls, or (from a confused model) neither. */
export interface AssistantTurn {
  text: string | null;
  toolCalls: ToolCall[];
}

export interface ToolResult {
  callId: string;
  output: string;
  /** The call failed (bad arguments, unknown tool, the tool itself failed), not merely a command exiting non-zero. */
  isError: boolean;
}

export type Message =
  | { role: 'user'; text: string }
  | ({ role: 'assistant' } & AssistantTurn)
  /** The results of every tool call of the assistant turn before it, in order. */
  | { role: 'tool'; results: ToolResult[] };

export interface ToolSpec {
  name: string;
  description: string;
  /** JSON Schema of the arguments object. */
  parameters: Record<string, unknown>;
}

export interface CompletionRequest {
  system: string;
  messages: Message[];
  tools: ToolSpec[];
  signal?: AbortSignal;
}

export interface Completion {
  message: AssistantTurn;
  usage: Usage;
  durationMs: number;
}

export interface ModelClient {
  readonly provider: Provider;
  readonly model: string;
  /** Throws a ModelError when no answer could be had. */
  complete(req: CompletionRequest): Promise<Completion>;
}
