// run_command: a shell command in the repository, the agent's way to build, test and look around.
import { z } from 'zod';
import { keepHeadAndTail } from './text.ts';
import type { Tool } from './tool.ts';

export const DEFAULT_TIMEOUT_S = 120;
export const MAX_TIMEOUT_S = 600;
/** A compiler's first error is at the top, a test run's summary at the bottom. */
const HEAD_BYTES = 6 * 1024;
const TAIL_BYTES = 10 * 1024;

const schema = z.object({
  command: z.string().min(1).describe('Shell command, run with sh -c in the repository root.'),
  timeout_seconds: z.coerce.number().positive().optional().describe(`Kill the command after this long. Default ${DEFAULT_TIMEOUT_S}, at most ${MAX_TIMEOUT_S}.`),
});

export const runCommand: Tool<typeof schema> = {
  name: 'run_command',
  description:
    'Run a shell command in the repository root (non-interactive: no terminal, empty stdin) and get its combined stdout and stderr and exit code. Use it to run tests, builds, linters and git. Long output keeps its start and end.',
  schema,
  async run({ command, timeout_seconds }, { workspace, signal, deadline }) {
    let timeoutMs = Math.min(timeout_seconds ?? DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S) * 1000;
    if (deadline !== null) timeoutMs = Math.max(1000, Math.min(timeoutMs, deadline - Date.now()));
    // stderr joins stdout in the shell, so the two arrive interleaved as they were written.
    const res = await workspace.exec(['sh', '-c', `exec 2>&1\n${command}`], { timeoutMs, ...(signal ? { signal } : {}) });
    const output = keepHeadAndTail(Buffer.concat([res.stdout, res.stderr]), HEAD_BYTES, TAIL_BYTES);
    const seconds = (res.durationMs / 1000).toFixed(1);
    const status = signal?.aborted
      ? '[cancelled]'
      : res.timedOut
        ? `[timed out after ${Math.round(timeoutMs / 1000)} s and was killed: give it a longer timeout_seconds, or run less at once]`
        : res.message
          ? `[${res.message}: exit code ${res.exitCode}, ${seconds} s]`
          : `[exit code ${res.exitCode}, ${seconds} s]`;
    return { output: `${output}${output && !output.endsWith('\n') ? '\n' : ''}${status}`, error: false, exitCode: res.exitCode };
  },
};
