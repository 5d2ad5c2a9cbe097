import { mkdirSync, readFileSync, rmSync } from 'node:fs';
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
    // The container's init inherits the runtime's stdout and stderr and keeps them for its
    // whole life, and what runs inside can write to them (/proc/1/fd/1): they are
    // /dev/null, never a host file (which would grow outside the disk quota) nor a pipe
    // we would wait on. The runtime's own errors go to a log only it writes, and only
    // while it runs: crun and runc close it before they exit. (runsc's log would stay
    // open in its sandbox, so runsc keeps none.)
    const logFile = join(bundleDir, 'runtime.log');
    rmSync(logFile, { force: true });
    const log = this.name === 'runsc' ? [] : [`--log=${logFile}`];
    const runtime = { file: this.#binary, args: [...log, ...this.#args('run', '--detach', '--bundle', bundleDir, containerId)] };
    // A wrap (the start's mounts) gives the runtime /dev/null itself and reports its own
    // errors on stderr, which is read here; without one the spawner gives /dev/null.
    const { file, args } = opts.wrap ? opts.wrap(runtime) : runtime;
    const { code, stderr } = await this.#spawner.run(file, args, { discardOutput: !opts.wrap });
    if (code !== 0) throw new Error(`${this.name} run failed: ${lastLines(logFile) || stderr.trim() || `exit ${code}`}`);
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
    // The runtime's exec sets the uid and gid and clears the supplementary groups.
    if (spec.user) args.push('--user', `${spec.user.uid}:${spec.user.gid}`);
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

/** The runtime's last words from its log (plain lines from crun, JSON from runc), at most a few KiB. */
function lastLines(logFile: string): string {
  let text: string;
  try {
    text = readFileSync(logFile, 'utf8').slice(-4096);
  } catch {
    return '';
  }
  return text
    .trim()
    .split('\n')
    .slice(-5)
    .map((line) => {
      try {
        const entry = JSON.parse(line) as { msg?: unknown };
        return typeof entry.msg === 'string' ? entry.msg : line;
      } catch {
        return line;
      }
    })
    .join('\n');
}
