// The image store against real archives: OCI layouts built here byte by byte, docker-save
// tarballs made from them by skopeo, broken and hostile archives, and the real default
// image built with mmdebstrap (once per machine, in the cache the other tests share).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { Writable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { gzipSync, zstdCompressSync } from 'node:zlib';
import pino from 'pino';
import { create as createTar, Header } from 'tar';
import { ID_BASE } from '../src/runner/idmap.ts';
import { DEFAULT_IMAGE, ImageStore, type ImageRecord } from '../src/runner/images/index.ts';
import { BerthError } from '../src/shared/errors.ts';

const run = promisify(execFile);
const REPO = new URL('..', import.meta.url).pathname.replace(/\/$/, '');
const IMAGE_DIR = process.env.BERTH_IMAGE_DIR ?? join(REPO, '.cache', 'images');
const ARCH = process.arch === 'arm64' ? 'arm64' : 'amd64';

const scratch = await mkdtemp(join(tmpdir(), 'berth-images-'));
after(() => rm(scratch, { recursive: true, force: true }));
let counter = 0;
const fresh = async (name: string) => {
  const dir = join(scratch, `${++counter}-${name}`);
  await mkdir(dir, { recursive: true });
  return dir;
};

// ---------------------------------------------------------------------------------------
// Building images from scratch

interface TarEntry {
  path: string;
  type?: 'File' | 'Directory' | 'SymbolicLink' | 'Link' | 'CharacterDevice';
  body?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  linkpath?: string;
}

/** A tar written header by header, so tests can say exactly what is in it (even `../escape`). */
function tarball(entries: TarEntry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const entry of entries) {
    const type = entry.type ?? (entry.path.endsWith('/') ? 'Directory' : 'File');
    const body = Buffer.from(type === 'File' ? (entry.body ?? '') : '');
    const header = new Header({
      path: entry.path,
      type,
      mode: entry.mode ?? (type === 'Directory' ? 0o755 : 0o644),
      uid: entry.uid ?? 0,
      gid: entry.gid ?? 0,
      size: body.length,
      mtime: new Date('2024-05-01T12:00:00Z'),
      ...(entry.linkpath !== undefined && { linkpath: entry.linkpath }),
      ...(type === 'CharacterDevice' && { devmaj: 1, devmin: 3 }),
    });
    header.encode();
    blocks.push(header.block!, body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

type Compression = 'gzip' | 'zstd' | 'none';
interface Layer {
  tar: Buffer;
  compression: Compression;
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const LAYER_MEDIA_TYPE: Record<Compression, string> = {
  none: 'application/vnd.oci.image.layer.v1.tar',
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
};
const compress = ({ tar, compression }: Layer) =>
  compression === 'gzip' ? gzipSync(tar) : compression === 'zstd' ? zstdCompressSync(tar) : tar;

interface Layout {
  dir: string;
  configDigest: string;
  layerPaths: string[];
}

/** Writes a complete OCI image layout: blobs, config, manifest, index.json, oci-layout. */
async function writeLayout(dir: string, layers: Layer[], blobs: Buffer[] = layers.map(compress)): Promise<Layout> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  const put = async (data: Buffer) => {
    const hex = sha256(data);
    await writeFile(join(dir, 'blobs', 'sha256', hex), data);
    return { digest: `sha256:${hex}`, size: data.length };
  };
  const layerDescriptors = [];
  for (const [i, layer] of layers.entries()) {
    layerDescriptors.push({ mediaType: LAYER_MEDIA_TYPE[layer.compression], ...(await put(blobs[i]!)) });
  }
  const config = Buffer.from(
    JSON.stringify({
      architecture: ARCH,
      os: 'linux',
      config: { Env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'GREETING=hello'], WorkingDir: '/srv', Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: layers.map((layer) => `sha256:${sha256(layer.tar)}`) },
    }),
  );
  const configDescriptor = { mediaType: 'application/vnd.oci.image.config.v1+json', ...(await put(config)) };
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: configDescriptor,
      layers: layerDescriptors,
    }),
  );
  const manifestDescriptor = {
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    ...(await put(manifest)),
    annotations: { 'org.opencontainers.image.ref.name': 'latest' },
  };
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [manifestDescriptor] }));
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  return {
    dir,
    configDigest: configDescriptor.digest,
    layerPaths: layerDescriptors.map((d) => join(dir, 'blobs', 'sha256', d.digest.slice(7))),
  };
}

const tarDir = async (dir: string, file: string) => {
  await createTar({ file, cwd: dir, portable: true }, await readdir(dir));
  return file;
};

// A host directory a hostile layer tries to write into through an absolute symlink.
const outside = await fresh('outside');

/** Three layers that exercise what unpacking must get right. */
const tourLayers = (): Layer[] => [
  {
    compression: 'gzip',
    tar: tarball([
      { path: './' },
      { path: 'etc/' },
      { path: 'etc/passwd', body: 'root:x:0:0::/root:/bin/sh\n' },
      { path: 'etc/passwd-link', type: 'SymbolicLink', linkpath: 'passwd' },
      { path: 'usr/' },
      { path: 'usr/bin/' },
      { path: 'usr/bin/tool', body: '#!/bin/sh\n', mode: 0o4755 },
      { path: 'usr/bin/group-tool', body: '#!/bin/sh\n', mode: 0o2755, gid: 5 },
      { path: 'usr/bin/tool-again', type: 'Link', linkpath: 'usr/bin/tool' },
      { path: 'bin', type: 'SymbolicLink', linkpath: 'usr/bin' },
      { path: 'home/dev/', uid: 1000, gid: 1000, mode: 0o700 },
      { path: 'home/dev/notes', body: 'mine', uid: 1000, gid: 1000, mode: 0o600 },
      { path: 'opt/foreign', body: 'built elsewhere', uid: 70_000, gid: 70_000 },
      { path: 'data/keep', body: 'keep' },
      { path: 'data/gone', body: 'gone' },
      { path: 'cache/old', body: 'old' },
      { path: 'cache/sub/older', body: 'older' },
      { path: 'dev/null', type: 'CharacterDevice', mode: 0o666 },
    ]),
  },
  {
    compression: 'zstd',
    tar: tarball([
      { path: 'data/.wh.gone' },
      // Written before the opaque marker in the same layer: it must survive it.
      { path: 'cache/fresh', body: 'fresh' },
      { path: 'cache/.wh..wh..opq' },
      { path: 'etc/passwd', body: 'root:x:0:0::/root:/bin/bash\n' },
      // Through the `bin -> usr/bin` symlink, as the environment would resolve it.
      { path: 'bin/added', body: 'added', mode: 0o755 },
    ]),
  },
  {
    compression: 'none',
    tar: tarball([
      // A symlink to a host directory, then a file through it: must land inside the image.
      { path: 'evil', type: 'SymbolicLink', linkpath: outside },
      { path: 'evil/pwned', body: 'pwned' },
      { path: 'up', type: 'SymbolicLink', linkpath: '../../../..' },
      { path: 'up/climbed', body: 'climbed' },
    ]),
  },
];

async function assertTourTree(image: ImageRecord): Promise<void> {
  const root = image.rootfs;
  const at = (path: string) => join(root, path);
  const exists = (path: string) => lstat(at(path)).then(() => true, () => false);

  // Owners shifted into the environment's range; modes, setuid and setgid kept.
  const tool = await lstat(at('usr/bin/tool'));
  assert.equal(tool.uid, ID_BASE);
  assert.equal(tool.gid, ID_BASE);
  assert.equal(tool.mode & 0o7777, 0o4755, 'setuid survives the chown');
  const groupTool = await lstat(at('usr/bin/group-tool'));
  assert.equal(groupTool.gid, ID_BASE + 5);
  assert.equal(groupTool.mode & 0o7777, 0o2755, 'setgid survives the chown');
  const home = await lstat(at('home/dev'));
  assert.deepEqual([home.uid, home.gid, home.mode & 0o7777], [ID_BASE + 1000, ID_BASE + 1000, 0o700]);
  assert.equal((await lstat(at('home/dev/notes'))).uid, ID_BASE + 1000);
  const root_ = await lstat(root);
  assert.equal(root_.uid, ID_BASE);
  // Owners beyond the mapped range become nobody.
  const foreign = await lstat(at('opt/foreign'));
  assert.deepEqual([foreign.uid, foreign.gid], [ID_BASE + 65_534, ID_BASE + 65_534]);
  // Parents without entries of their own are created for container root.
  assert.equal((await lstat(at('opt'))).uid, ID_BASE);

  // Symlinks stay symlinks, hard links stay hard links.
  const link = await lstat(at('etc/passwd-link'));
  assert.ok(link.isSymbolicLink());
  assert.equal(await readlink(at('etc/passwd-link')), 'passwd');
  assert.equal(link.uid, ID_BASE);
  assert.equal((await lstat(at('usr/bin/tool-again'))).ino, tool.ino);

  // Later layers win; whiteouts delete; an opaque directory keeps only its own layer.
  assert.equal(await readFile(at('etc/passwd'), 'utf8'), 'root:x:0:0::/root:/bin/bash\n');
  assert.ok(await exists('data/keep'));
  assert.ok(!(await exists('data/gone')));
  assert.ok(!(await exists('data/.wh.gone')));
  assert.deepEqual((await readdir(at('cache'))).sort(), ['fresh']);

  // Writes through symlinks are resolved inside the image, never on the host.
  assert.equal(await readFile(at('usr/bin/added'), 'utf8'), 'added');
  assert.deepEqual(await readdir(outside), []);
  assert.equal(await readFile(at(join(outside, 'pwned')), 'utf8'), 'pwned');
  assert.equal(await readFile(at('climbed'), 'utf8'), 'climbed');

  // No device nodes (crun provides /dev); /workspace for the environment's work.
  assert.deepEqual(await readdir(at('dev')), []);
  const workspace = await lstat(at('workspace'));
  assert.ok(workspace.isDirectory());
  assert.equal(workspace.uid, ID_BASE);

  assert.deepEqual(image.config, { env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'GREETING=hello'], workingDir: '/srv', cmd: ['/bin/sh'] });
  assert.ok(image.sizeBytes > 0);
}

/** Every path with its mode, owner, link count, and link target or content hash and time. */
async function describeTree(root: string): Promise<string[]> {
  const lines: string[] = [];
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath, entry.name);
    const s = await lstat(path);
    // Directories made implicitly (no entry of their own) carry the time of the unpack.
    const what = s.isSymbolicLink() ? `-> ${await readlink(path)}` : s.isFile() ? `${sha256(await readFile(path))} ${s.mtimeMs}` : 'dir';
    lines.push(`${relative(root, path)} ${s.mode.toString(8)} ${s.uid}:${s.gid} ${s.nlink} ${what}`);
  }
  return lines.sort();
}

async function expectError(promise: Promise<unknown>, kind: string, message: RegExp): Promise<BerthError> {
  const error = await promise.then(
    () => assert.fail('expected an error'),
    (e: unknown) => e,
  );
  assert.ok(error instanceof BerthError, `expected a BerthError, got ${String(error)}`);
  assert.equal(error.kind, kind, error.message);
  assert.match(error.message, message);
  return error;
}

/** A pino logger whose lines the test can count. */
function capturingLogger() {
  const lines: { msg: string }[] = [];
  const logger = pino(
    { level: 'info' },
    new Writable({
      write(chunk, _encoding, callback) {
        lines.push(JSON.parse(String(chunk)));
        callback();
      },
    }),
  );
  return { logger, unpacked: () => lines.filter((line) => line.msg === 'image unpacked').length };
}

// ---------------------------------------------------------------------------------------

describe('importing archives', () => {
  test('an OCI image layout directory: layers, whiteouts, owners, links', async () => {
    const layout = await writeLayout(await fresh('tour-layout'), tourLayers());
    const store = new ImageStore({ dir: await fresh('store') });
    const image = await store.importArchive(layout.dir);

    assert.equal(image.digest, layout.configDigest);
    assert.equal(image.source, 'oci-layout');
    assert.match(image.name, /-tour-layout:latest$/);
    assert.equal(image.rootfs, join(store.dir, 'images', layout.configDigest.slice(7), 'rootfs'));
    await assertTourTree(image);

    assert.deepEqual(await store.get(image.name), image);
    assert.deepEqual(await store.list(), [image]);
    assert.deepEqual(await store.resolve(image.name), image);
  });

  test('an OCI layout tarball and a docker-save tarball made from it by skopeo give the same tree', async () => {
    const layers = tourLayers();
    // docker-archive has no zstd: skopeo would have to recompress, so use gzip here.
    layers[1]!.compression = 'gzip';
    const layout = await writeLayout(await fresh('layout'), layers);
    const ociTar = await tarDir(layout.dir, join(await fresh('oci-tar'), 'image.oci.tar'));
    const dockerTar = join(await fresh('docker-tar'), 'saved.tar');
    await run('skopeo', ['copy', '--quiet', `oci:${layout.dir}:latest`, `docker-archive:${dockerTar}:test:latest`]);

    const fromOci = await new ImageStore({ dir: await fresh('store-oci') }).importArchive(ociTar, { name: 'tour:oci' });
    const fromDocker = await new ImageStore({ dir: await fresh('store-docker') }).importArchive(dockerTar);

    assert.equal(fromOci.name, 'tour:oci');
    assert.equal(fromOci.source, 'oci-layout');
    assert.equal(fromDocker.name, 'docker.io/library/test:latest', 'named after the RepoTag skopeo wrote');
    assert.equal(fromDocker.source, 'docker-archive');
    assert.equal(fromDocker.digest, fromOci.digest, 'the same config, so the same content address');
    await assertTourTree(fromDocker);
    assert.deepEqual(await describeTree(fromDocker.rootfs), await describeTree(fromOci.rootfs));
  });

  test('concurrent requests for the same archive unpack it once', async () => {
    const layout = await writeLayout(await fresh('layout'), tourLayers());
    const file = await tarDir(layout.dir, join(await fresh('tar'), 'shared.tar'));
    const dir = await fresh('store');
    const { logger, unpacked } = capturingLogger();
    const store = new ImageStore({ dir, logger });
    // A second store on the same directory stands in for a second process.
    const other = new ImageStore({ dir, logger });

    const events: string[] = [];
    const [a, b, c] = await Promise.all([
      // Paths are an instance administrator's input (hostPaths), as through the API.
      store.resolve(file, { hostPaths: true, onProgress: (e) => events.push(e.phase) }),
      store.resolve(file, { hostPaths: true }),
      other.importArchive(file),
    ]);
    assert.equal(unpacked(), 1);
    assert.deepEqual(b, a);
    assert.deepEqual(c, a);
    // Whichever store won the lock unpacked; the other waited for it. Either way the caller heard.
    assert.ok(events.includes('inspect'), 'progress reached the caller');

    // Later requests for the same file are answered from the store.
    assert.deepEqual(await store.resolve(file, { hostPaths: true }), a);
    assert.deepEqual(await store.importArchive(layout.dir, { name: 'again' }), { ...a, name: 'again' });
    assert.equal(unpacked(), 1);
    assert.deepEqual(await readdir(join(dir, 'tmp')), []);
  });

  test('what a crashed process left behind is cleaned up', async () => {
    const layout = await writeLayout(await fresh('layout'), tourLayers().slice(0, 1));
    const dir = await fresh('store');
    // No process can have this pid: it is above the kernel's largest pid_max.
    const dead = 4_194_305;
    await mkdir(join(dir, 'tmp', `${dead}-abandoned`, 'rootfs'), { recursive: true });
    await mkdir(join(dir, 'locks'));
    await writeFile(join(dir, 'locks', `${layout.configDigest.slice(7)}.lock`), String(dead));

    const image = await new ImageStore({ dir }).importArchive(layout.dir, { name: 'after-crash' });
    assert.equal(image.name, 'after-crash');
    assert.deepEqual(await readdir(join(dir, 'tmp')), []);
    assert.deepEqual(await readdir(join(dir, 'locks')), []);
  });

  test('remove drops the name, and the files once no name is left', async () => {
    const layout = await writeLayout(await fresh('layout'), tourLayers().slice(0, 1));
    const store = new ImageStore({ dir: await fresh('store') });
    const first = await store.importArchive(layout.dir, { name: 'one' });
    await store.importArchive(layout.dir, { name: 'two' });

    await store.remove('one');
    assert.equal(await store.get('one'), undefined);
    assert.ok((await stat(first.rootfs)).isDirectory(), 'still named two');
    await store.remove('two');
    assert.deepEqual(await store.list(), []);
    await assert.rejects(stat(first.rootfs), { code: 'ENOENT' });
    await expectError(store.remove('two'), 'not_found', /image 'two' not found/);
  });
});

describe('bad input changes nothing', () => {
  const store = new ImageStore({ dir: join(scratch, 'bad-store') });
  let good: ImageRecord;

  test('a good image first', async () => {
    good = await store.importArchive((await writeLayout(await fresh('good'), tourLayers().slice(0, 1))).dir, { name: 'good' });
  });

  const unchanged = async () => {
    assert.deepEqual(await store.list(), [good]);
    assert.deepEqual(await readdir(join(store.dir, 'images')), [good.digest.slice(7)]);
    assert.deepEqual(await readdir(join(store.dir, 'tmp')), []);
  };

  test('a tarball with a layer that does not match its digest', async () => {
    const layout = await writeLayout(await fresh('tampered'), tourLayers());
    const blob = await readFile(layout.layerPaths[2]!);
    blob[600] = blob[600]! ^ 0xff; // same size, different bytes
    await writeFile(layout.layerPaths[2]!, blob);
    const file = await tarDir(layout.dir, join(await fresh('tampered-tar'), 'tampered.tar'));
    await expectError(store.importArchive(file), 'invalid', /cannot import '.*tampered\.tar': layer 3 has digest sha256:\w+ but its manifest says/);
    await unchanged();
  });

  test('a layer entry that climbs out of the root', async () => {
    const layers: Layer[] = [{ compression: 'gzip', tar: tarball([{ path: 'ok', body: 'ok' }, { path: '../escape', body: 'x' }]) }];
    const layout = await writeLayout(await fresh('escape'), layers);
    await expectError(store.importArchive(layout.dir), 'invalid', /layer 1: layer entry '\.\.\/escape' points outside the image root/);
    await unchanged();
  });

  test('a layer whose compressed data is corrupt (with a digest that matches the corruption)', async () => {
    const layers: Layer[] = [{ compression: 'gzip', tar: tarball([{ path: 'a', body: 'a'.repeat(5000) }]) }];
    const broken = gzipSync(layers[0]!.tar);
    broken[broken.length - 20] = broken[broken.length - 20]! ^ 0xff;
    const layout = await writeLayout(await fresh('corrupt'), layers, [broken]);
    await expectError(store.importArchive(layout.dir), 'invalid', /layer 1: cannot decompress a gzip layer/);
    await unchanged();
  });

  test('a diff_id that does not match the unpacked layer', async () => {
    const layers: Layer[] = [{ compression: 'none', tar: tarball([{ path: 'a', body: 'a' }]) }];
    const other = tarball([{ path: 'b', body: 'b' }]);
    const layout = await writeLayout(await fresh('diffid'), layers, [other]);
    await expectError(store.importArchive(layout.dir), 'invalid', /layer 1 unpacks to sha256:\w+ but the image config says/);
    await unchanged();
  });

  test('a file that is not an archive', async () => {
    const file = join(await fresh('text'), 'notes.tar');
    await writeFile(file, 'these are not the bytes you are looking for\n'.repeat(50));
    await expectError(store.importArchive(file), 'invalid', /cannot import '.*notes\.tar': it is not a readable tar archive/);
    await unchanged();
  });

  test('a tarball that holds no image', async () => {
    const dir = await fresh('no-image');
    await writeFile(join(dir, 'README'), 'hello');
    const file = await tarDir(dir, join(await fresh('no-image-tar'), 'plain.tar'));
    await expectError(store.importArchive(file), 'invalid', /neither an OCI image layout .* nor a docker-save archive/);
    await unchanged();
  });

  test('paths and names that do not exist', async () => {
    await expectError(store.importArchive(join(scratch, 'missing.tar')), 'not_found', /no such file or directory/);
    await expectError(store.resolve('./missing.tar', { hostPaths: true }), 'not_found', /no image archive at '\.\/missing\.tar'/);
    await expectError(store.resolve('no-such-image', { hostPaths: true }), 'not_found', /image 'no-such-image' not found: import one with `berth image import FILE`/);
    await expectError(store.importArchive(scratch, { name: 'Bad Name!' }), 'invalid', /not a valid image name/);
    await unchanged();
  });
});

describe('the default image', () => {
  test('is Debian with git, Python, a C compiler, Node.js 24 and npm, built once', { timeout: 20 * 60_000 }, async () => {
    const store = new ImageStore({ dir: IMAGE_DIR });
    const image = await store.buildDefault();
    assert.equal(image.name, DEFAULT_IMAGE);
    assert.equal(image.source, 'debian');
    for (const path of ['usr/local/bin/node', 'usr/local/bin/npm', 'usr/bin/git', 'usr/bin/python3', 'usr/bin/cc', 'workspace']) {
      const s = await lstat(join(image.rootfs, path));
      assert.equal(s.uid, ID_BASE, path);
      assert.equal(s.gid, ID_BASE, path);
    }
    assert.equal((await lstat(join(image.rootfs, 'usr/bin/passwd'))).mode & 0o4000, 0o4000, 'setuid binaries keep the bit');
    assert.equal(image.config.workingDir, '/workspace');

    // The tools run in the tree (chroot: a quick check that their libraries are all there;
    // git is left out because it insists on /dev/null, which only crun provides).
    const inImage = async (...command: string[]) => (await run('chroot', [image.rootfs, ...command])).stdout.trim();
    assert.equal(await inImage('/usr/local/bin/node', '--version'), process.version);
    assert.match(await inImage('/usr/local/bin/node', '/usr/local/bin/npm', '--version'), /^11\./);
    assert.match(await inImage('/usr/bin/python3', '--version'), /^Python 3/);
    assert.match(await inImage('/usr/bin/cc', '--version'), /^cc \(Debian/);

    const started = Date.now();
    const again = await store.buildDefault();
    assert.deepEqual(again, image);
    assert.ok(Date.now() - started < 1000, 'the second build is the cached one');
    assert.deepEqual(await store.resolve(DEFAULT_IMAGE), image);
  });
});
