// Pulling from a real registry: Debian's docker-registry (the CNCF distribution registry)
// runs on loopback for the length of this file, an image built here is pushed to it with
// skopeo, and the store pulls it back the way `--image localhost:5000/…` would.
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chown, lstat, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { create as createTar } from 'tar';
import { ID_BASE } from '../src/runner/idmap.ts';
import { ImageStore } from '../src/runner/images/index.ts';
import type { ImageProgressEvent } from '../src/runner/images/types.ts';
import { copyArgs } from '../src/runner/images/registry.ts';
import { BerthError } from '../src/shared/errors.ts';
import { freePort } from './oidc-provider.ts';

const run = promisify(execFile);
const ARCH = process.arch === 'arm64' ? 'arm64' : 'amd64';
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

const scratch = await mkdtemp(join(tmpdir(), 'berth-registry-'));
let counter = 0;
const fresh = async (name: string) => {
  const dir = join(scratch, `${++counter}-${name}`);
  await mkdir(dir, { recursive: true });
  return dir;
};

// ---------------------------------------------------------------------------------------
// The registry

interface Registry {
  host: string;
  child: ChildProcess;
  /** Everything it has logged (its access log included), for counting requests and for failures. */
  output: () => string;
}


async function startRegistry(): Promise<Registry> {
  const dir = await fresh('registry');
  const port = await freePort();
  const config = join(dir, 'config.yml');
  await writeFile(
    config,
    [
      'version: 0.1',
      'log:',
      '  level: warn',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${join(dir, 'data')}`,
      'http:',
      `  addr: 127.0.0.1:${port}`,
      '',
    ].join('\n'),
  );
  const child = spawn('docker-registry', ['serve', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        error.code === 'ENOENT'
          ? new Error("docker-registry is not installed (Debian's docker-registry package): run `sudo bash scripts/setup.sh --deps`")
          : error,
      ),
    );
  });
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited with ${child.exitCode}:\n${output}`);
    const ok = await fetch(`http://127.0.0.1:${port}/v2/`).then((r) => r.ok, () => false);
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`docker-registry did not answer on 127.0.0.1:${port} within 10 s:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { host: `127.0.0.1:${port}`, child, output: () => output };
}

async function stopRegistry(registry: Registry | undefined): Promise<void> {
  if (!registry || registry.child.exitCode !== null) return;
  const exited = new Promise((resolve) => registry.child.once('exit', resolve));
  registry.child.kill('SIGTERM');
  await exited;
}

/** How many times the registry has served manifest `repo:tag`: one per pull. */
const manifestGets = (registry: Registry, repo: string, tag: string) =>
  registry.output().split('\n').filter((line) => line.includes(`"GET /v2/${repo}/manifests/${tag} `)).length;

// ---------------------------------------------------------------------------------------
// An image to push

/** A one-layer OCI image layout: /hello.txt (owned by 1000:1000) and an empty /bin/. Returns its config digest. */
async function buildLayout(dir: string, hello: string): Promise<string> {
  const tree = await fresh('tree');
  await writeFile(join(tree, 'hello.txt'), hello);
  await chown(join(tree, 'hello.txt'), 1000, 1000);
  await mkdir(join(tree, 'bin'));
  const tarFile = join(await fresh('tar'), 'layer.tar');
  await createTar({ file: tarFile, cwd: tree }, ['hello.txt', 'bin']);
  const tar = await readFile(tarFile);

  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  const put = async (mediaType: string, data: Buffer) => {
    const hex = sha256(data);
    await writeFile(join(dir, 'blobs', 'sha256', hex), data);
    return { mediaType, digest: `sha256:${hex}`, size: data.length };
  };
  const layer = await put('application/vnd.oci.image.layer.v1.tar+gzip', gzipSync(tar));
  const config = await put(
    'application/vnd.oci.image.config.v1+json',
    Buffer.from(
      JSON.stringify({
        architecture: ARCH,
        os: 'linux',
        config: { Env: ['PATH=/usr/bin:/bin'], Cmd: ['/bin/sh'] },
        rootfs: { type: 'layers', diff_ids: [`sha256:${sha256(tar)}`] },
      }),
    ),
  );
  const manifest = await put(
    'application/vnd.oci.image.manifest.v1+json',
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers: [layer] })),
  );
  const tagged = { ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'latest' } };
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [tagged] }));
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  return config.digest;
}

async function expectError(promise: Promise<unknown>, kinds: string[], message: RegExp): Promise<BerthError> {
  const error = await promise.then(
    () => assert.fail('expected an error'),
    (error: unknown) => error,
  );
  assert.ok(error instanceof BerthError, `expected a BerthError, got ${String(error)}`);
  assert.ok(kinds.includes(error.kind), `kind ${error.kind} (${error.message})`);
  assert.match(error.message, message);
  return error;
}

/** Every path under `dir`, relative to it. */
const tree = async (dir: string) => (await readdir(dir, { recursive: true }).catch(() => [])).sort();

// ---------------------------------------------------------------------------------------

describe('pulling from a registry', () => {
  let registry: Registry | undefined;
  let configDigest: string;

  before(async () => {
    registry = await startRegistry();
    const layout = await fresh('layout');
    configDigest = await buildLayout(layout, 'hello from the registry\n');
    await run('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${layout}:latest`, `docker://${registry.host}/berth/test:1`]);
  });

  after(async () => {
    await stopRegistry(registry);
    await rm(scratch, { recursive: true, force: true });
  });

  test('resolve pulls a registry reference once, shifts its owners, and keeps it', async () => {
    const dir = await fresh('store');
    const ref = `${registry!.host}/berth/test:1`;
    const events: ImageProgressEvent[] = [];
    const pullsBefore = manifestGets(registry!, 'berth/test', '1');

    // A registry on loopback is pulled from only because an instance administrator listed it.
    const allowedRegistries = [registry!.host];
    const store = new ImageStore({ dir, allowedRegistries });
    const image = await store.resolve(ref, { onProgress: (event) => events.push(event) });
    assert.equal(image.source, 'registry');
    assert.equal(image.name, ref);
    assert.equal(image.digest, configDigest, 'the pulled image is the one pushed');
    assert.equal(manifestGets(registry!, 'berth/test', '1'), pullsBefore + 1, 'pulled from the registry');
    assert.ok(events.some((e) => e.phase === 'pull'), 'reported the pull');
    assert.deepEqual(image.config, { env: ['PATH=/usr/bin:/bin'], cmd: ['/bin/sh'] });

    const hello = join(image.rootfs, 'hello.txt');
    assert.equal(await readFile(hello, 'utf8'), 'hello from the registry\n');
    const helloStat = await lstat(hello);
    assert.deepEqual([helloStat.uid, helloStat.gid], [ID_BASE + 1000, ID_BASE + 1000], 'owner shifted into the environment range');
    const bin = await lstat(join(image.rootfs, 'bin'));
    assert.ok(bin.isDirectory());
    assert.deepEqual([bin.uid, bin.gid], [ID_BASE, ID_BASE]);
    assert.deepEqual(await readdir(join(image.rootfs, 'bin')), []);

    // Again, from the same store and from a new one on the same directory: no pull.
    const later: ImageProgressEvent[] = [];
    const again = await store.resolve(ref, { onProgress: (event) => later.push(event) });
    const afterRestart = await new ImageStore({ dir, allowedRegistries }).resolve(ref, { onProgress: (event) => later.push(event) });
    assert.equal(again.digest, image.digest);
    assert.equal(afterRestart.digest, image.digest);
    assert.deepEqual(later, [], 'no pull, no unpack');
    assert.equal(manifestGets(registry!, 'berth/test', '1'), pullsBefore + 1, 'not pulled again');
    assert.deepEqual((await new ImageStore({ dir }).list()).map((i) => i.name), [ref]);
  });

  test('a tag or repository the registry does not have is not_found and leaves the store empty', async () => {
    const dir = await fresh('store');
    const store = new ImageStore({ dir, allowedRegistries: [registry!.host] });
    for (const ref of [`${registry!.host}/berth/test:missing`, `${registry!.host}/berth/nothing-here:1`]) {
      const error = await expectError(store.resolve(ref), ['not_found', 'invalid'], /is not in its registry/);
      assert.ok(error.message.includes(ref), `the message names the reference: ${error.message}`);
      assert.match(error.message, /manifest unknown|name unknown/, 'and says what the registry answered');
    }
    assert.deepEqual(await store.list(), []);
    const left = (await tree(dir)).filter((path) => !['images', 'refs', 'tmp', 'locks', 'sources'].includes(path));
    assert.deepEqual(left, [], 'no image, name or scratch directory left behind');
  });
});

test('only loopback registries are pulled from without TLS verification', () => {
  const insecure = (ref: string) => copyArgs(ref, '/x').includes('--src-tls-verify=false');
  for (const ref of ['localhost:5000/a/b:1', '127.0.0.1:5000/a:1', '127.1.2.3:5000/a:1', '[::1]:5000/a:1', 'LOCALHOST:5000/a:1']) {
    assert.ok(insecure(ref), ref);
  }
  for (const ref of [
    'docker.io/library/alpine:3.20',
    'registry.example.com:5000/a:1',
    'localhost.example.com:5000/a:1',
    '127.0.0.1.nip.io:5000/a:1',
    '10.0.0.1:5000/a:1',
    '128.0.0.1:5000/a:1',
  ]) {
    assert.ok(!insecure(ref), ref);
  }
  assert.deepEqual(copyArgs('docker.io/library/alpine:3.20', '/tmp/oci'), ['copy', 'docker://docker.io/library/alpine:3.20', 'oci:/tmp/oci:latest']);
});
