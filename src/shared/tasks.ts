// Tasks: one agent run toward one goal in one environment, and the events it produces.

/** queued → provisioning → running → succeeded | failed | cancelled | timed_out */
export type TaskState = 'queued' | 'provisioning' | 'running' | 'succeeded' | 'failed' | 'cancelled' | 'timed_out';

export const TASK_STATES: readonly TaskState[] = ['queued', 'provisioning', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out'];
export const FINAL_TASK_STATES: ReadonlySet<TaskState> = new Set(['succeeded', 'failed', 'cancelled', 'timed_out']);

const NEXT: Record<TaskState, readonly TaskState[]> = {
  queued: ['provisioning', 'cancelled', 'failed'],
  // A task whose runner went away before the agent did anything is queued again.
  provisioning: ['running', 'queued', 'failed', 'cancelled', 'timed_out'],
  running: ['succeeded', 'failed', 'cancelled', 'timed_out'],
  succeeded: [],
  failed: [],
  cancelled: [],
  timed_out: [],
};

export function canTransitionTask(from: TaskState, to: TaskState): boolean {
  return NEXT[from].includes(to);
}

/** The steps a task walks through, in order; shown by the CLI and the web UI. */
export type TaskStep = 'provisioning' | 'cloning' | 'setup' | 'agent' | 'checks' | 'commit' | 'push' | 'pull_request' | 'done';

/** What ran the task: Berth's own tool-calling loop, or any command inside the environment. */
export type AgentKind = 'builtin' | 'command';

export interface TaskBudget {
  /** Model round trips the built-in agent may make. */
  maxSteps: number;
  /** Input + output tokens over all model calls (built-in agent and gateway). */
  maxTokens: number | null;
  maxCostUsd: number | null;
  /** Wall time for the whole task, from provisioning to the pull request. */
  timeoutMs: number;
  /** How many times failing checks send the agent back to work. */
  maxCheckRetries: number;
}

/** Tokens and money one model call (or a whole task) used. */
export interface Usage {
  inputTokens: number;
  outputTokens: number;
  costUsd: number;
}

/**
 * One thing that happened in a task: stored in order (seq) and streamed live. Output
 * carried here has already been redacted of the project's secrets.
 */
export type TaskEventData =
  | { type: 'state'; state: TaskState; reason?: string | null }
  | { type: 'step'; step: TaskStep; message: string }
  | { type: 'log'; level: 'info' | 'warn' | 'error'; message: string }
  /** One model round trip of the built-in agent, or one call through the LLM gateway. */
  | {
      type: 'model';
      provider: 'openai' | 'anthropic';
      model: string;
      usage: Usage;
      durationMs: number;
      /** The assistant's text, if it said anything besides calling tools. */
      text: string | null;
      toolCalls: { id: string; name: string }[];
      via: 'agent' | 'gateway';
    }
  /** One tool call of the built-in agent and what came back to the model. */
  | { type: 'tool'; id: string; tool: string; args: unknown; output: string; error: boolean; exitCode: number | null; durationMs: number }
  /** A command Berth ran for the task: setup, checks, the command agent. */
  | { type: 'command'; phase: 'setup' | 'agent' | 'check'; cmd: string; exitCode: number; output: string; durationMs: number; timedOut: boolean; message?: string }
  | { type: 'check'; attempt: number; passed: boolean; exitCode: number; summary: string }
  | { type: 'result'; summary: string }
  /**
   * A connection the environment's egress proxy or firewall refused (allowed ones are in
   * `berth env network`). `repeated`: the same refusal again this many times within a
   * minute of the first, written once when the minute is up.
   */
  | { type: 'network'; allowed: boolean; host: string; port: number; method: string | null; path: string | null; rule: string; repeated?: number }
  /**
   * A denial storm: the environment kept asking for one refused destination (`count`
   * refusals in a row, from `since`), said once per destination, with what would allow it.
   * `command` is the task's command that was running then (the proxy sees connections,
   * not processes), null when none of the task's own commands was.
   */
  | { type: 'denials'; host: string; port: number; rule: string; count: number; since: string; phase: 'setup' | 'agent' | 'check' | null; command: string | null; message: string; fix: DenialFix };

/** What would let a refused destination through, as a command and (for the web's button) a policy change. */
export type DenialFix =
  /** Add `add` to the `field` of the project's policy (the org's without a project); `label` names it for a button. */
  | { kind: 'policy'; project: string | null; field: 'presets' | 'allowDomains' | 'allowPorts' | 'allowMethods'; add: string | number; label: string; command: string }
  /** The name resolves to a private address: only the instance's administrator can trust that network. */
  | { kind: 'trusted-network'; cidr: string; command: string }
  | { kind: 'none'; advice: string };

export interface TaskEvent {
  seq: number;
  at: string;
  data: TaskEventData;
}

/** Where a task's change went: a pull request (GitHub), merge request (GitLab), or a change request kept in Berth (plain git). */
export interface ChangeRequest {
  kind: 'pull_request' | 'merge_request' | 'berth';
  url: string | null;
  number: number | null;
  draft: boolean;
  /** Plain git: set when `berth task approve` merged the branch. */
  mergedSha?: string | undefined;
}
