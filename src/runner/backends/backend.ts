export type ContainerStatus = 'running' | 'stopped' | 'absent';

/** A program and its arguments. */
export interface Command {
  file: string;
  args: string[];
}

export interface ExecSpec {
  cmd: string[];
  cwd: string;
  env: string[];
  tty: boolean;
  /** The runtime writes the host pid of the started process here, for signals and resizes. */
  pidFile: string;
  /** Who the command runs as (ids inside the environment); its root when absent. */
  user?: { uid: number; gid: number; groups: number[] } | undefined;
}

/** An isolation backend runs OCI bundles; crun, runc and runsc differ only in flags. */
export interface IsolationBackend {
  readonly name: string;
  /**
   * Starts the bundle's init, detached, with /dev/null as its stdio. `wrap` may put the
   * runtime's command line inside another (say, one that mounts the root file system
   * first), which must then run the runtime with /dev/null as its stdin, stdout and stderr.
   */
  run(containerId: string, bundleDir: string, opts?: { wrap?: ((runtime: Command) => Command) | undefined }): Promise<void>;
  status(containerId: string): Promise<ContainerStatus>;
  /** Host pid of the container's init, when it is running. */
  pid(containerId: string): Promise<number | undefined>;
  kill(containerId: string): Promise<void>;
  delete(containerId: string): Promise<void>;
  /** The command line that runs `spec` inside the container; its stdio are the command's. */
  execCommand(containerId: string, spec: ExecSpec): Command;
}
