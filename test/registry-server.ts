// A real image registry for tests: Debian's docker-registry (the CNCF distribution registry)
// on loopback, optionally behind a password (htpasswd, bcrypt), and a one-layer image to push.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { create as createTar } from 'tar';
import { freePort } from './oidc-provider.ts';

const run = promisify(execFile);
const ARCH = process.arch === 'arm64' ? 'arm64' : 'amd64';
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

export interface TestRegistry {
  /** `127.0.0.1:PORT`. */
  host: string;
  child: ChildProcess;
  /** Everything it has logged (its access log included). */
  output: () => string;
  stop: () => Promise<void>;
}


/** Starts a registry in `dir`; with `login` (`user:password`) it asks every request for it. */
export async function startRegistry(dir: string, opts: { login?: string } = {}): Promise<TestRegistry> {
  const port = await freePort();
  const config = join(dir, 'config.yml');
  const auth: string[] = [];
  if (opts.login) {
    const [user, password] = [opts.login.slice(0, opts.login.indexOf(':')), opts.login.slice(opts.login.indexOf(':') + 1)];
    // distribution takes bcrypt entries only: htpasswd -B.
    const { stdout } = await run('htpasswd', ['-Bbn', user, password]).catch((error: NodeJS.ErrnoException) => {
      throw error.code === 'ENOENT' ? new Error('htpasswd is not installed (apache2-utils): run `sudo bash scripts/setup.sh --deps`') : error;
    });
    await writeFile(join(dir, 'htpasswd'), stdout);
    auth.push('auth:', '  htpasswd:', '    realm: berth-test', `    path: ${join(dir, 'htpasswd')}`);
  }
  await writeFile(
    config,
    ['version: 0.1', 'log:', '  level: info', 'storage:', '  filesystem:', `    rootdirectory: ${join(dir, 'data')}`, 'http:', `  addr: 127.0.0.1:${port}`, ...auth, ''].join('\n'),
  );
  const child = spawn('docker-registry', ['serve', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', (error: NodeJS.ErrnoException) =>
      reject(error.code === 'ENOENT' ? new Error("docker-registry is not installed (Debian's docker-registry package): run `sudo bash scripts/setup.sh --deps`") : error),
    );
  });
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited with ${child.exitCode}:\n${output}`);
    // 401 is an answer too: the registry is up and wants its login.
    const up = await fetch(`http://127.0.0.1:${port}/v2/`).then((r) => r.ok || r.status === 401, () => false);
    if (up) break;
    if (Date.now() > deadline) throw new Error(`docker-registry did not answer on 127.0.0.1:${port} within 20 s:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const stop = async () => {
    if (child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  };
  return { host: `127.0.0.1:${port}`, child, output: () => output, stop };
}

/** How many times the registry has served manifest `repo:tag` (with a 200): one per pull. */
export const manifestGets = (registry: TestRegistry, repo: string, tag: string) =>
  registry.output().split('\n').filter((line) => line.includes(`"GET /v2/${repo}/manifests/${tag} `) && / 200 /.test(line)).length;

/** A one-layer OCI image layout holding /hello.txt, pushed to `ref` (with `login` when the registry wants one). Returns its config digest. */
export async function pushImage(ref: string, hello: string, login?: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-image-'));
  const tree = join(dir, 'tree');
  await mkdir(join(tree, 'bin'), { recursive: true });
  await writeFile(join(tree, 'hello.txt'), hello);
  await createTar({ file: join(dir, 'layer.tar'), cwd: tree }, ['hello.txt', 'bin']);
  const tar = await readFile(join(dir, 'layer.tar'));
  const layout = join(dir, 'layout');
  await mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
  const put = async (mediaType: string, data: Buffer) => {
    await writeFile(join(layout, 'blobs', 'sha256', sha256(data)), data);
    return { mediaType, digest: `sha256:${sha256(data)}`, size: data.length };
  };
  const layer = await put('application/vnd.oci.image.layer.v1.tar+gzip', gzipSync(tar));
  const config = await put(
    'application/vnd.oci.image.config.v1+json',
    Buffer.from(JSON.stringify({ architecture: ARCH, os: 'linux', config: { Env: ['PATH=/usr/bin:/bin'] }, rootfs: { type: 'layers', diff_ids: [`sha256:${sha256(tar)}`] } })),
  );
  const manifest = await put('application/vnd.oci.image.manifest.v1+json', Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers: [layer] })));
  await writeFile(join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }] }));
  await writeFile(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await run('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', ...(login ? ['--dest-creds', login] : []), `oci:${layout}:latest`, `docker://${ref}`]);
  return config.digest;
}
