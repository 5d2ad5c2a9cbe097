// Running buildah against Berth's own build storage (never /var/lib/containers): one
// place that knows its flags, its configuration files and how its output is read.
import { spawn } from 'node:child_process';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { unavailable } from '../../shared/errors.ts';

export interface BuildahOptions {
  /** Build storage: DATA_DIR/build. Layers cached here are reused by later builds. */
  dir: string;
}

export interface BuildahRun {
  /** Each line buildah writes, stdout and stderr alike. */
  onLine?: ((line: string) => void) | undefined;
  /** Run the command through this prefix (the network sandbox: `unshare --net … --`). */
  prefix?: string[] | undefined;
  signal?: AbortSignal | undefined;
  /** Extra environment variables for buildah itself. */
  env?: Record<string, string> | undefined;
}

export interface BuildahResult {
  code: number;
  /** The last lines buildah wrote, for an error message. */
  tail: string[];
  stdout: string;
}

export class Buildah {
  readonly dir: string;
  #ready: Promise<void> | undefined;

  constructor(o: BuildahOptions) {
    this.dir = o.dir;
  }

  /** The global flags: our storage, our run root, overlay on the data dir's file system. */
  get globalArgs(): string[] {
    return ['--root', join(this.dir, 'storage'), '--runroot', join(this.dir, 'run'), '--storage-driver', 'overlay'];
  }

  /**
   * An environment where buildah reads only Berth's configuration: no registries to search
   * for short names (a FROM never means some registry by guess), no policy file of the host's.
   */
  get #env(): Record<string, string> {
    return {
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      HOME: join(this.dir, 'home'),
      CONTAINERS_REGISTRIES_CONF: join(this.dir, 'registries.conf'),
      CONTAINERS_CONF: join(this.dir, 'containers.conf'),
      TMPDIR: join(this.dir, 'tmp'),
      BUILDAH_ISOLATION: 'oci',
    };
  }

  #prepare(): Promise<void> {
    this.#ready ??= (async () => {
      // Searchable by others: RUN steps run as the environments' unprivileged ids, and buildah
      // mounts their root file systems under tmp/.
      await mkdir(this.dir, { recursive: true, mode: 0o711 });
      await chmod(this.dir, 0o711);
      for (const d of ['storage', 'run', 'home']) await mkdir(join(this.dir, d), { recursive: true, mode: 0o700 });
      await mkdir(join(this.dir, 'tmp'), { recursive: true, mode: 0o711 });
      await chmod(join(this.dir, 'tmp'), 0o711);
      await writeFile(join(this.dir, 'registries.conf'), 'unqualified-search-registries = []\nshort-name-mode = "disabled"\n');
      await writeFile(join(this.dir, 'containers.conf'), '[engine]\nruntime = "crun"\n');
      await writeFile(join(this.dir, 'policy.json'), JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
    })();
    return this.#ready;
  }

  get policyPath(): string {
    return join(this.dir, 'policy.json');
  }

  /** Runs `buildah ARGS…`; resolves with its exit code (a missing buildah is `unavailable`). */
  async run(args: string[], o: BuildahRun = {}): Promise<BuildahResult> {
    await this.#prepare();
    const command = [...(o.prefix ?? []), 'buildah', ...this.globalArgs, ...args];
    const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...this.#env, ...o.env }, signal: o.signal, killSignal: 'SIGKILL' });
    const tail: string[] = [];
    let stdout = '';
    const take = (line: string) => {
      tail.push(line);
      if (tail.length > 20) tail.shift();
      try {
        o.onLine?.(line);
      } catch {
        // A listener's failure never stops a build.
      }
    };
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    createInterface({ input: child.stdout }).on('line', take);
    createInterface({ input: child.stderr }).on('line', take);
    const code = await new Promise<number>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (c) => resolve(c ?? 1));
    }).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') throw unavailable('building images needs buildah (apt-get install buildah, or run scripts/setup.sh --deps)');
      throw error;
    });
    return { code, tail, stdout };
  }

  /** Whether the image `name` is in the build storage. */
  async hasImage(name: string): Promise<boolean> {
    return (await this.run(['inspect', '--type', 'image', '--format', '{{.FromImageID}}', name])).code === 0;
  }
}
