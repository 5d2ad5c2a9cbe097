import type { RunningCommand } from './exec.ts';

/** Exit code of a command ended by SIGKILL (128 + 9), as the OOM killer ends one. */
const SIGKILL_EXIT_CODE = 137;

/** "256m", "1.5g": a memory limit the way `--memory` takes it. */
export function formatLimit(bytes: number): string {
  for (const [unit, size] of [['t', 1024 ** 4], ['g', 1024 ** 3], ['m', 1024 ** 2], ['k', 1024]] as const) {
    if (bytes >= size) return `${+(bytes / size).toFixed(1)}${unit}`;
  }
  return `${bytes}`;
}

/** What Berth says of a command the OOM killer ended, or of one during which it killed something. */
export function oomMessage(commandKilled: boolean, limitBytes: number): string {
  return `${commandKilled ? 'killed' : 'a process in the environment was killed'}: out of memory (limit ${formatLimit(limitBytes)})`;
}

/**
 * Says whether the kernel's OOM killer ended the command: the environment's cgroup counts
 * its kills (`count`), and a command is out of memory when it ended by SIGKILL while that
 * count rose. A count that rose under a command that ended otherwise (a build whose
 * compiler was killed exits 1) is said too, as a process of the environment's, not
 * pinned on the command: another command running at the same time may have been the one.
 */
export function watchOom(command: RunningCommand, count: () => number | null, limitBytes: number): RunningCommand {
  const before = count();
  if (before === null) return command;
  const exited = command.exited.then((status) => {
    const after = count();
    if (after === null || after <= before) return { ...status, oomKilled: false };
    const killed = status.exitCode === SIGKILL_EXIT_CODE && !status.timedOut;
    return { ...status, oomKilled: killed, message: oomMessage(killed, limitBytes) };
  });
  return { ...command, exited };
}
