// Running buildah against Berth's own build storage (never /var/lib/containers): one
// place that knows its flags, its configuration files and how its output is read.
import { spawn } from 'node:child_process';
import { chown, lchown, mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { unavailable } from '../../shared/errors.ts';
import { cgroupLayout, HYBRID_UNIFIED_MOUNT } from '../cgroups.ts';
import { ID_BASE, ID_COUNT } from '../idmap.ts';

const SANDBOX = new URL('./pull-sandbox.ts', import.meta.url).pathname;

export interface BuildahOptions {
  /** Build storage (DATA_DIR/images/build). Layers cached here are reused by later builds. */
  dir: string;
}

export interface BuildahRun {
  /** Each line buildah writes, stdout and stderr alike. */
  onLine?: ((line: string) => void) | undefined;
  /**
   * The egress proxy's unix socket (owned by BUILD_UID): buildah and its RUN steps reach it as
   * HTTP(S)_PROXY on the namespace's loopback (pull-sandbox.ts). Without it there is no way out.
   */
  proxySocket?: string | undefined;
  signal?: AbortSignal | undefined;
}

/** Build root's uid (and gid) on the host: container root of the environments' id range. */
export const BUILD_UID = ID_BASE;

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
      // buildah runs as BUILD_UID: the build storage is its, private to it (and to root).
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      for (const d of ['storage', 'run', 'home', 'tmp']) await mkdir(join(this.dir, d), { recursive: true, mode: 0o700 });
      for (const d of ['', 'storage', 'run', 'home', 'tmp']) await chown(join(this.dir, d), BUILD_UID, BUILD_UID);
      await writeFile(join(this.dir, 'registries.conf'), 'unqualified-search-registries = []\nshort-name-mode = "disabled"\n');
      // No cgroups: a user namespace may not make them (the build is limited by the namespaces, not by cgroups).
      await writeFile(join(this.dir, 'containers.conf'), '[containers]\ncgroups = "disabled"\n[engine]\nruntime = "crun"\ncgroup_manager = "cgroupfs"\n');
      await writeFile(join(this.dir, 'policy.json'), JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
    })();
    return this.#ready;
  }

  get policyPath(): string {
    return join(this.dir, 'policy.json');
  }

  /**
   * Runs `buildah ARGS…` as root of a user namespace mapped onto the environments' id range
   * (root in a build is nobody on the host), in network and mount namespaces of its own;
   * resolves with its exit code (a missing buildah is `unavailable`).
   *
   * The namespaces are made in two steps: a mount namespace as real root, where the hybrid
   * cgroup mount crun refuses can still be unmounted, then, as BUILD_UID, a user namespace
   * with its own network and mount namespaces. This process writes its id maps (as root it
   * may map any range, without newuidmap and /etc/subuid), then lets it go on.
   */
  run(args: string[], o: BuildahRun = {}): Promise<BuildahResult> {
    return this.exec(['buildah', ...this.globalArgs, ...args], o);
  }

  /** Stores the OCI layout `layout` as image `name` (buildah would name it after the layout's path, which need not be a valid name). */
  storeLayout(layout: string, name: string): Promise<BuildahResult> {
    const storage = `containers-storage:[overlay@${join(this.dir, 'storage')}+${join(this.dir, 'run')}]${name}`;
    return this.exec(['skopeo', '--policy', this.policyPath, 'copy', '--quiet', `oci:${layout}:latest`, storage]);
  }

  /** Runs `argv` (buildah or skopeo) in the build's namespaces, as run() describes. */
  async exec(argv: string[], o: BuildahRun = {}): Promise<BuildahResult> {
    await this.#prepare();
    const unmount = cgroupLayout() === 'hybrid' ? `umount ${HYBRID_UNIFIED_MOUNT} 2>/dev/null; ` : '';
    const inner = 'echo "$$"; read -r _; exec "$@"';
    const proxy = o.proxySocket ? [process.execPath, '--disable-warning=ExperimentalWarning', SANDBOX, o.proxySocket, '--'] : [];
    const command = [
      'unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c',
      `${unmount}exec setpriv --reuid ${BUILD_UID} --regid ${BUILD_UID} --clear-groups unshare --user --net --mount -- sh -c '${inner}' sh "$@"`, 'sh',
      ...proxy, ...argv,
    ];
    const child = spawn(command[0]!, command.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env: this.#env, signal: o.signal, killSignal: 'SIGKILL' });
    const tail: string[] = [];
    let stdout = '';
    let pid: number | undefined;
    const take = (line: string) => {
      tail.push(line);
      if (tail.length > 20) tail.shift();
      try {
        o.onLine?.(line);
      } catch {
        // A listener's failure never stops a build.
      }
    };
    const exited = new Promise<number>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (c) => resolve(c ?? 1));
    });
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (pid === undefined) {
        // The first line is the namespaced shell's pid: map its ids, then let it exec buildah.
        pid = Number(line);
        const map = `0 ${BUILD_UID} ${ID_COUNT}\n`;
        Promise.all([writeFile(`/proc/${pid}/uid_map`, map), writeFile(`/proc/${pid}/gid_map`, map)])
          .then(() => child.stdin.end('go\n'))
          .catch((error: Error) => {
            take(`could not map the build's user namespace: ${error.message}`);
            child.kill('SIGKILL');
          });
        return;
      }
      stdout += `${line}\n`;
      take(line);
    });
    createInterface({ input: child.stderr }).on('line', take);
    const code = await exited.catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') throw unavailable('building images needs unshare and setpriv (util-linux)');
      throw error;
    });
    if (code === 127 && tail.some((l) => /(buildah|skopeo): (not found|No such file)/.test(l))) {
      throw unavailable('building images needs buildah and skopeo (apt-get install buildah skopeo, or run scripts/setup.sh --deps)');
    }
    return { code, tail, stdout };
  }

  /** Whether the image `name` is in the build storage. */
  async hasImage(name: string): Promise<boolean> {
    return (await this.run(['inspect', '--type', 'image', '--format', '{{.FromImageID}}', name])).code === 0;
  }
}

/** Gives `dir` and everything in it to `uid` (a tree this process made: nothing of anyone else's). */
export async function chownTree(dir: string, uid: number): Promise<void> {
  await lchown(dir, uid, uid);
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) await lchown(join(entry.parentPath, entry.name), uid, uid);
}
