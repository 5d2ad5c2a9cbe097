// The built-in agent: ask the model, run the tools it calls, hand back the results,
// until it calls finish or a budget, a cancel or a failure stops it. It runs on the
// host; its tools reach the environment only through the Workspace, so the model's
// key never enters the environment.
import type { TaskEventData, Usage } from '../shared/tasks.ts';
import { ModelError } from './models/errors.ts';
import type { AssistantTurn, Completion, Message, ModelClient, ToolCall, ToolResult } from './models/types.ts';
import { systemPrompt } from './prompt.ts';
import { callTool, TOOLS, toolSpecs, type Tool } from './tools/index.ts';
import { clip } from './tools/text.ts';
import type { Workspace } from './workspace.ts';

/** Checked before every model call; over a whole agent, across run() calls. */
export interface AgentBudget {
  /** Model calls. */
  maxSteps: number;
  /** Input + output tokens. */
  maxTokens: number | null;
  maxCostUsd: number | null;
  /** Epoch ms. A model call in flight at the deadline is abandoned, and commands are cut short. */
  deadline: number | null;
}

export type AgentOutcome =
  | { kind: 'finished'; summary: string }
  | { kind: 'budget'; which: 'steps' | 'tokens' | 'cost' | 'time'; message: string }
  | { kind: 'cancelled' }
  /** The model could not be asked (unreachable, key refused, …) or the workspace failed. */
  | { kind: 'failed'; reason: string };

export interface BuiltinAgentOptions {
  model: ModelClient;
  workspace: Workspace;
  budget: AgentBudget;
  /** Output in events is not redacted here: the receiver does that. */
  onEvent: (e: TaskEventData) => void;
  signal?: AbortSignal | undefined;
  goal: string;
  /** What the model should know about the repository: its name, how to run its checks. */
  context?: string | undefined;
  /** Defaults to all of them. */
  tools?: readonly Tool[] | undefined;
}

/** Replies in a row without a tool call that get a reminder; after that a text reply is taken as the summary. */
const MAX_NUDGES = 2;
/** Unreadable replies (HTTP 200 with garbage) asked again; the SDK already retries HTTP errors. */
const MAX_BAD_RESPONSES = 1;
/** Tool output as stored in an event; the model gets up to 16 KB. */
const EVENT_OUTPUT_BYTES = 8 * 1024;
/** A string argument as stored in an event (write_file's content can be a whole file). */
const EVENT_ARG_BYTES = 4 * 1024;

const NUDGE_TEXT = 'You replied without calling a tool. If the work is done, call finish with a summary of what you changed and why; otherwise keep working with the tools.';
const NUDGE_EMPTY = 'Your reply was empty. Keep working with the tools, or call finish with a summary if you are done.';

export class BuiltinAgent {
  readonly #opts: BuiltinAgentOptions;
  readonly #tools: readonly Tool[];
  readonly #system: string;
  readonly #messages: Message[] = [];
  readonly #usage: { steps: number } & Usage = { steps: 0, inputTokens: 0, outputTokens: 0, costUsd: 0 };
  #running = false;

  constructor(opts: BuiltinAgentOptions) {
    this.#opts = opts;
    this.#tools = opts.tools ?? TOOLS;
    this.#system = systemPrompt({ root: opts.workspace.root, context: opts.context });
  }

  /** Summed over every model call so far. */
  get usage(): { steps: number } & Usage {
    return { ...this.#usage };
  }

  /**
   * Runs until finish, a budget, cancel or failure. The first call works on the goal
   * (an instruction other than the goal is added to it); a later call continues the
   * same conversation with the instruction, e.g. "the checks failed: <output>".
   */
  async run(instruction?: string): Promise<AgentOutcome> {
    if (this.#running) throw new Error('BuiltinAgent.run: already running');
    this.#running = true;
    try {
      const first = this.#messages.length === 0;
      const extra = instruction?.trim() && instruction.trim() !== this.#opts.goal.trim() ? instruction.trim() : null;
      const text = first ? [this.#opts.goal.trim(), extra].filter(Boolean).join('\n\n') : instruction?.trim() || 'Continue.';
      this.#messages.push({ role: 'user', text });
      return await this.#loop();
    } finally {
      this.#running = false;
    }
  }

  async #loop(): Promise<AgentOutcome> {
    const { model, signal } = this.#opts;
    const specs = toolSpecs(this.#tools);
    let nudges = 0;
    let badResponses = 0;
    for (;;) {
      if (signal?.aborted) return { kind: 'cancelled' };
      const over = this.#overBudget();
      if (over) return over;

      let completion: Completion;
      try {
        completion = await model.complete({ system: this.#system, messages: this.#messages, tools: specs, signal: this.#callSignal() });
      } catch (err) {
        if (signal?.aborted) return { kind: 'cancelled' };
        if (this.#pastDeadline()) return this.#overBudget() ?? { kind: 'cancelled' };
        if (err instanceof ModelError && err.failure === 'bad_response' && badResponses < MAX_BAD_RESPONSES) {
          badResponses++;
          this.#log('warn', `asking the model again: ${err.message}`);
          continue;
        }
        return { kind: 'failed', reason: err instanceof Error ? err.message : String(err) };
      }
      badResponses = 0;
      const turn = this.#record(completion);

      if (turn.toolCalls.length === 0) {
        if (nudges >= MAX_NUDGES) {
          if (turn.text) return { kind: 'finished', summary: turn.text };
          return { kind: 'failed', reason: `the model replied ${nudges + 1} times in a row with neither text nor a tool call` };
        }
        nudges++;
        this.#log('warn', turn.text ? 'the model answered without calling a tool; reminding it to call finish or keep working' : 'the model sent an empty reply; reminding it to keep working');
        this.#messages.push({ role: 'user', text: turn.text ? NUDGE_TEXT : NUDGE_EMPTY });
        continue;
      }
      nudges = 0;

      const { results, summary, failure } = await this.#runTools(turn.toolCalls);
      this.#messages.push({ role: 'tool', results });
      if (failure) return { kind: 'failed', reason: failure };
      if (signal?.aborted) return { kind: 'cancelled' };
      if (summary !== undefined) return { kind: 'finished', summary };
    }
  }

  /** Adds a model reply to the usage, the events and the conversation. */
  #record({ message, usage, durationMs }: Completion): AssistantTurn {
    const u = this.#usage;
    u.steps++;
    u.inputTokens += usage.inputTokens;
    u.outputTokens += usage.outputTokens;
    u.costUsd += usage.costUsd;
    const turn = { text: message.text, toolCalls: sanitize(message.toolCalls) };
    this.#opts.onEvent({
      type: 'model',
      provider: this.#opts.model.provider,
      model: this.#opts.model.model,
      usage,
      durationMs: Math.round(durationMs),
      text: turn.text,
      toolCalls: turn.toolCalls.map((c) => ({ id: c.id, name: c.name })),
      via: 'agent',
    });
    this.#messages.push({ role: 'assistant', ...turn });
    // The calls to run: ids as kept, arguments as sent, so that bad ones are reported as such.
    return { text: message.text, toolCalls: message.toolCalls.map((c, i) => ({ ...c, id: turn.toolCalls[i]!.id })) };
  }

  /**
   * Runs the calls of one turn in order. Every call gets a result, even when the run
   * stops halfway, so that the conversation stays valid for a later run().
   */
  async #runTools(calls: ToolCall[]): Promise<{ results: ToolResult[]; summary?: string; failure?: string }> {
    const { workspace, signal, budget } = this.#opts;
    const results: ToolResult[] = [];
    let summary: string | undefined;
    let failure: string | undefined;
    for (const call of calls) {
      if (signal?.aborted || failure) {
        results.push({ callId: call.id, output: `Error: not run: ${failure ? 'the workspace failed' : 'the task was cancelled'}`, isError: true });
        continue;
      }
      const started = performance.now();
      try {
        const out = await callTool(this.#tools, call, { workspace, signal, deadline: budget.deadline });
        results.push({ callId: call.id, output: out.output, isError: out.error });
        this.#opts.onEvent({
          type: 'tool',
          id: call.id,
          tool: call.name,
          args: clipArgs(out.args),
          output: clip(out.output, EVENT_OUTPUT_BYTES),
          error: out.error,
          exitCode: out.exitCode,
          durationMs: Math.round(performance.now() - started),
        });
        if (out.summary !== undefined) summary = out.summary;
      } catch (err) {
        // A tool throws only when exec does: the environment itself is in trouble.
        failure = `the workspace failed during ${call.name}: ${err instanceof Error ? err.message : String(err)}`;
        results.push({ callId: call.id, output: `Error: ${failure}`, isError: true });
      }
    }
    return { results, ...(summary !== undefined ? { summary } : {}), ...(failure ? { failure } : {}) };
  }

  #overBudget(): AgentOutcome | null {
    const { maxSteps, maxTokens, maxCostUsd } = this.#opts.budget;
    const u = this.#usage;
    if (u.steps >= maxSteps) return { kind: 'budget', which: 'steps', message: `used all ${maxSteps} model steps` };
    const tokens = u.inputTokens + u.outputTokens;
    if (maxTokens !== null && tokens >= maxTokens) return { kind: 'budget', which: 'tokens', message: `used ${tokens} tokens of the ${maxTokens} allowed` };
    if (maxCostUsd !== null && u.costUsd >= maxCostUsd) return { kind: 'budget', which: 'cost', message: `spent $${u.costUsd.toFixed(4)} of the $${maxCostUsd} allowed` };
    if (this.#pastDeadline()) return { kind: 'budget', which: 'time', message: "the task's time ran out" };
    return null;
  }

  #pastDeadline(): boolean {
    const { deadline } = this.#opts.budget;
    return deadline !== null && Date.now() >= deadline;
  }

  /** The caller's signal, and the deadline, for one model call. */
  #callSignal(): AbortSignal | undefined {
    const { signal, budget } = this.#opts;
    const signals = [signal, budget.deadline !== null ? AbortSignal.timeout(Math.max(0, budget.deadline - Date.now())) : undefined].filter((s) => s !== undefined);
    return signals.length > 1 ? AbortSignal.any(signals) : signals[0];
  }

  #log(level: 'info' | 'warn' | 'error', message: string): void {
    this.#opts.onEvent({ type: 'log', level, message: `agent: ${message}` });
  }
}

/**
 * The tool calls as kept in the conversation. Ids are made unique (the protocols
 * require it; small servers repeat them), and arguments that are not JSON are replayed
 * as {}: some servers reject them in the history, and the tool result quotes them.
 */
function sanitize(calls: ToolCall[]): ToolCall[] {
  const seen = new Set<string>();
  return calls.map((c, i) => {
    let id = c.id;
    if (seen.has(id)) id = `${id}_${i}`;
    seen.add(id);
    let args = c.arguments;
    try {
      JSON.parse(args);
    } catch {
      args = '{}';
    }
    return { id, name: c.name, arguments: args };
  });
}

function clipArgs(args: unknown): unknown {
  if (typeof args === 'string') return clip(args, EVENT_ARG_BYTES);
  if (!args || typeof args !== 'object' || Array.isArray(args)) return args;
  return Object.fromEntries(Object.entries(args).map(([k, v]) => [k, typeof v === 'string' ? clip(v, EVENT_ARG_BYTES) : v]));
}
