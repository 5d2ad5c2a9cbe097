// How a task reaches into its environment: commands through the environment service
// (so they are audited and their output redacted of the project's secrets), and a
// Workspace for the built-in agent's tools on top of that.
import type { Readable, Writable } from 'node:stream';
import { posix } from 'node:path';
import type { ExecOptions, ExecResult, Workspace } from '../../agent/index.ts';
import type { Scope } from '../authz.ts';
import type { EnvironmentService } from '../environments/service.ts';
import type { CommandIntent } from '../../shared/audit-words.ts';

/**
 * The scope a task's own commands run under: the org's, recorded as the task in the audit log.
 * It may use the environment it made and no other; what it makes is its owner's (ownership.ts).
 */
export function taskScope(orgId: string, taskId: string, ownerId: string | null = null): Scope {
  return {
    orgId,
    orgName: orgId,
    role: 'member',
    actor: `task:${taskId}`,
    task: { id: taskId, ownerId },
    caller: { tokenId: taskId, kind: 'org', userId: null, orgId, role: 'member', instanceAdmin: false },
  };
}

export interface RunOptions {
  cwd?: string | undefined;
  env?: Record<string, string> | undefined;
  /** Bytes, or a stream piped in (a Node stream or tar's minipass Pack). */
  stdin?: string | Buffer | { pipe(destination: Writable): unknown } | undefined;
  timeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
  /** Kills the command like `signal`, but what it printed is still returned (Berth stopped it: the result says why). */
  stop?: AbortSignal | undefined;
  /** Output kept per stream; the rest is dropped from the middle's end (the tail matters most). */
  maxOutput?: number | undefined;
  /** false for bytes Berth itself consumes (tar streams, patches). */
  redact?: boolean | undefined;
  /** What the command is for, recorded in the audit log instead of its wrapper script. */
  intent?: CommandIntent | undefined;
  /** Run as the environment's root, not its user (Berth's own steps, such as copying the repository in). */
  asRoot?: boolean | undefined;
}

/** Runs one command in a task's environment and collects what it printed. */
export async function runIn(environments: EnvironmentService, scope: Scope, environmentId: string, cmd: string[], o: RunOptions = {}): Promise<ExecResult> {
  o.signal?.throwIfAborted();
  const command = await environments.exec(scope, environmentId, { cmd, cwd: o.cwd, env: o.env, timeoutMs: o.timeoutMs }, { redact: o.redact ?? true, intent: o.intent, asRoot: o.asRoot });
  const kill = () => void command.signal('SIGKILL').catch(() => {});
  o.signal?.addEventListener('abort', kill, { once: true });
  o.stop?.addEventListener('abort', kill, { once: true });
  const max = o.maxOutput ?? 8 * 1024 * 1024;
  const collect = (stream: Readable) => {
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (b: Buffer) => {
      chunks.push(b);
      size += b.length;
      // Keep the tail: the end of a failing build says why it failed.
      while (size > max && chunks.length > 1) size -= chunks.shift()!.length;
    });
    return () => Buffer.concat(chunks);
  };
  const stdout = collect(command.stdout);
  const stderr = collect(command.stderr);
  if (o.stdin === undefined) command.stdin.end();
  else if (typeof o.stdin === 'string' || Buffer.isBuffer(o.stdin)) command.stdin.end(o.stdin);
  else o.stdin.pipe(command.stdin);
  try {
    const status = await command.exited;
    o.signal?.throwIfAborted();
    return { exitCode: status.exitCode, timedOut: status.timedOut, durationMs: status.durationMs, stdout: stdout(), stderr: stderr(), message: status.message };
  } finally {
    o.signal?.removeEventListener('abort', kill);
    o.stop?.removeEventListener('abort', kill);
  }
}

/** The built-in agent's view of the environment: its tools run here, never on the host. */
export class SandboxWorkspace implements Workspace {
  readonly root: string;
  readonly #run: (cmd: string[], o: RunOptions) => Promise<ExecResult>;
  readonly #env: Record<string, string>;

  constructor(opts: { root: string; env: Record<string, string>; run: (cmd: string[], o: RunOptions) => Promise<ExecResult> }) {
    this.root = opts.root;
    this.#env = opts.env;
    this.#run = opts.run;
  }

  exec(cmd: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const cwd = opts.cwd === undefined ? this.root : posix.resolve(this.root, opts.cwd);
    return this.#run(cmd, { cwd, env: { ...this.#env, ...opts.env }, stdin: opts.stdin, timeoutMs: opts.timeoutMs, signal: opts.signal, intent: opts.intent });
  }
}
