import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Spawner } from '../spawner/index.ts';
import type { Command, ContainerStatus, ExecSpec, IsolationBackend } from './backend.ts';

export type RuntimeName = 'crun' | 'runc' | 'runsc';

/**
 * Runs bundles with an OCI runtime's command line. State lives under `stateDir`
 * (one per data dir), so several Berth instances on a host never see each other's
 * containers.
 */
export class OciRuntime implements IsolationBackend {
  readonly name: RuntimeName;
  readonly #binary: string;
  readonly #stateDir: string;
  readonly #spawner: Spawner;

  constructor(opts: { name: RuntimeName; binary?: string; stateDir: string; spawner: Spawner }) {
    this.name = opts.name;
    this.#spawner = opts.spawner;
    this.#binary = opts.binary ?? opts.name;
    this.#stateDir = opts.stateDir;
    mkdirSync(this.#stateDir, { recursive: true, mode: 0o700 });
  }

  #args(...rest: string[]): string[] {
    return ['--root', this.#stateDir, ...rest];
  }

  async run(containerId: string, bundleDir: string, opts: { wrap?: ((runtime: Command) => Command) | undefined } = {}): Promise<void> {
    const runtime = { file: this.#binary, args: this.#args('run', '--detach', '--bundle', bundleDir, containerId) };
    const { file, args } = opts.wrap ? opts.wrap(runtime) : runtime;
    // The container's init inherits the runtime's stdout and stderr and keeps them open
    // for its whole life, so they go to a file, never to a pipe we would wait on.
    const logFile = join(bundleDir, 'runtime.log');
    const { code } = await this.#spawner.run(file, args, { logFile });
    if (code !== 0) throw new Error(`${this.name} run failed: ${readFileSync(logFile, 'utf8').trim() || `exit ${code}`}`);
  }

  async status(containerId: string): Promise<ContainerStatus> {
    const state = await this.#state(containerId);
    if (!state) return 'absent';
    return state.status === 'running' || state.status === 'created' ? 'running' : 'stopped';
  }

  async pid(containerId: string): Promise<number | undefined> {
    const state = await this.#state(containerId);
    return state?.status === 'running' ? state.pid : undefined;
  }

  async kill(containerId: string): Promise<void> {
    try {
      await this.#exec('kill', this.#binary, this.#args('kill', containerId, 'KILL'));
    } catch (err) {
      // Already dead or never started: the goal is reached either way.
      if ((await this.status(containerId)) === 'running') throw err;
    }
  }

  async delete(containerId: string): Promise<void> {
    try {
      await this.#exec('delete', this.#binary, this.#args('delete', '--force', containerId));
    } catch (err) {
      if ((await this.status(containerId)) !== 'absent') throw err;
    }
  }

  execCommand(containerId: string, spec: ExecSpec): Command {
    const args = this.#args('exec', '--cwd', spec.cwd, '--pid-file', spec.pidFile);
    for (const kv of spec.env) args.push('--env', kv);
    if (spec.tty) args.push('--tty');
    args.push(containerId, ...spec.cmd);
    return { file: this.#binary, args };
  }

  async #state(containerId: string): Promise<{ status: string; pid: number } | undefined> {
    const { code, stdout } = await this.#spawner.run(this.#binary, this.#args('state', containerId));
    return code === 0 ? (JSON.parse(stdout) as { status: string; pid: number }) : undefined;
  }

  async #exec(verb: string, file: string, args: string[]): Promise<void> {
    const r = await this.#spawner.run(file, args);
    if (r.code !== 0) throw new Error(`${this.name} ${verb} failed: ${(r.stderr || r.stdout).trim() || `exit ${r.code}`}`);
  }
}
