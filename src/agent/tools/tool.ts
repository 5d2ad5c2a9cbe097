// What a tool is: a name and description for the model, a schema for its arguments,
// and a function that acts on the workspace through exec alone.
import { posix } from 'node:path';
import type { z } from 'zod';
import type { Workspace } from '../workspace.ts';

export interface ToolContext {
  workspace: Workspace;
  /** Cancels the task: a running command is killed. */
  signal?: AbortSignal | undefined;
  /** Epoch ms at which the task's time runs out; commands get no longer than that. */
  deadline: number | null;
}

export interface ToolOutcome {
  /** Exactly what the model gets back. */
  output: string;
  /** The call did not do its job (bad arguments, file not found), as opposed to a command that exited non-zero. */
  error: boolean;
  /** For run_command. */
  exitCode: number | null;
  /** Set by finish: the run is over. */
  summary?: string;
}

export interface Tool<S extends z.ZodType = z.ZodType> {
  name: string;
  description: string;
  schema: S;
  run(args: z.output<S>, ctx: ToolContext): Promise<ToolOutcome>;
}

export const ok = (output: string): ToolOutcome => ({ output, error: false, exitCode: null });
export const fail = (message: string): ToolOutcome => ({ output: `Error: ${message}`, error: true, exitCode: null });

/**
 * A tool path as an absolute path in the environment: relative ones against the root.
 * Paths outside the root are allowed: the environment, not this, is the boundary.
 */
export function resolvePath(root: string, path: string): string {
  return posix.isAbsolute(path) ? posix.normalize(path) : posix.join(root, path);
}

/** A path as the model should see it: relative to the root when inside it. */
export function displayPath(root: string, abs: string): string {
  const rel = posix.relative(root, abs);
  return rel === '' ? '.' : rel.startsWith('..') ? abs : rel;
}

/** Runs a small shell script with arguments passed as $1…, so nothing needs quoting. */
export function script(body: string, ...args: string[]): string[] {
  return ['sh', '-c', body, 'sh', ...args];
}
