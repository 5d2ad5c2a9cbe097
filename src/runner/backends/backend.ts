export type ContainerStatus = 'running' | 'stopped' | 'absent';

export interface ExecSpec {
  cmd: string[];
  cwd: string;
  env: string[];
  tty: boolean;
  /** The runtime writes the host pid of the started process here, for signals and resizes. */
  pidFile: string;
}

/** An isolation backend runs OCI bundles; crun, runc and runsc differ only in flags. */
export interface IsolationBackend {
  readonly name: string;
  run(containerId: string, bundleDir: string): Promise<void>;
  status(containerId: string): Promise<ContainerStatus>;
  /** Host pid of the container's init, when it is running. */
  pid(containerId: string): Promise<number | undefined>;
  kill(containerId: string): Promise<void>;
  delete(containerId: string): Promise<void>;
  /** The command line that runs `spec` inside the container; its stdio are the command's. */
  execCommand(containerId: string, spec: ExecSpec): { file: string; args: string[] };
}
