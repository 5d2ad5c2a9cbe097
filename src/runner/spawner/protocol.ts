// Messages between the runner and its spawner process, over Node's IPC channel with
// structured-clone serialization (Buffers travel as bytes, not base64).

export interface SpawnRequest {
  t: 'spawn';
  id: number;
  file: string;
  args: string[];
  /**
   * The command's stdout and stderr are /dev/null, not pipes back over IPC: for a runtime
   * whose detached init inherits them and keeps them for its whole life.
   */
  discardOutput?: boolean;
  /** Whether the caller will write to stdin; otherwise stdin is closed at once. */
  stdin: boolean;
  cwd?: string;
  /** The command's whole environment (default: the spawner's). */
  env?: Record<string, string>;
  /** Work done ahead (warm pools): run at the lowest CPU priority, so it yields to starts and commands. */
  background?: boolean;
}

export type ToSpawner =
  | SpawnRequest
  | { t: 'stdin'; id: number; data: Buffer }
  | { t: 'stdin-end'; id: number }
  | { t: 'kill'; id: number; signal: NodeJS.Signals }
  | { t: 'pause'; id: number }
  | { t: 'resume'; id: number };

export type FromSpawner =
  | { t: 'started'; id: number; pid: number }
  | { t: 'out'; id: number; fd: 1 | 2; data: Buffer }
  | { t: 'exit'; id: number; code: number | null; signal: NodeJS.Signals | null }
  | { t: 'error'; id: number; message: string; code?: string };
