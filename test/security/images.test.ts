// Attacks on images from issue #11: host paths named as images by people who are not
// instance administrators, images one org names reaching another org, registry pulls
// aimed at the host's own services, and archives that expand without bound or climb out.
// Each attack must fail, change nothing, and answer without telling anything about the host.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { BlockList } from 'node:net';
import { networkInterfaces } from 'node:os';
import { promisify } from 'node:util';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { create as createTar, Header } from 'tar';
import { ImageStore } from '../../src/runner/images/index.ts';
import { BerthError } from '../../src/shared/errors.ts';
import { apiAs, runCli, startTestBerth, type TestBerth } from '../helpers.ts';
import { taskScope } from '../../src/server/tasks/sandbox.ts';

const ARCH = process.arch === 'arm64' ? 'arm64' : 'amd64';
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const scratch = await mkdtemp(join(tmpdir(), 'berth-security-images-'));
let counter = 0;
const fresh = async (name: string) => {
  const dir = join(scratch, `${++counter}-${name}`);
  await mkdir(dir, { recursive: true });
  return dir;
};

/** A tar written header by header, so a test can put `../escape` or `/abs` in it. */
function tarball(entries: { path: string; body?: Buffer | string }[]): Buffer {
  const blocks: Buffer[] = [];
  for (const entry of entries) {
    const body = Buffer.from(entry.body ?? '');
    const header = new Header({ path: entry.path, type: 'File', mode: 0o644, uid: 0, gid: 0, size: body.length, mtime: new Date('2024-05-01T12:00:00Z') });
    header.encode();
    blocks.push(header.block!, body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

/** A one-layer OCI image layout whose layer is `layerTar`, gzip-compressed. */
async function writeLayout(dir: string, layerTar: Buffer, label = 'x'): Promise<string> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  const put = async (mediaType: string, data: Buffer) => {
    const hex = sha256(data);
    await writeFile(join(dir, 'blobs', 'sha256', hex), data);
    return { mediaType, digest: `sha256:${hex}`, size: data.length };
  };
  const layer = await put('application/vnd.oci.image.layer.v1.tar+gzip', gzipSync(layerTar));
  const config = await put(
    'application/vnd.oci.image.config.v1+json',
    Buffer.from(JSON.stringify({ architecture: ARCH, os: 'linux', config: { Env: [`LABEL=${label}`] }, rootfs: { type: 'layers', diff_ids: [`sha256:${sha256(layerTar)}`] } })),
  );
  const manifest = await put('application/vnd.oci.image.manifest.v1+json', Buffer.from(JSON.stringify({ schemaVersion: 2, config, layers: [layer] })));
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [manifest] }));
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  return dir;
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

let t: TestBerth;
const tokens: Record<string, string> = {};
let orgA: string;
let orgB: string;

const as = (token: string) => apiAs(t, token);

before(async () => {
  t = await startTestBerth();
  const admin = as(t.client.token);
  assert.equal((await admin('POST', '/api/orgs', { name: 'team-b' })).status, 201);
  const orgs = (await admin('GET', '/api/orgs')).body.items as { id: string; name: string }[];
  orgA = orgs.find((o) => o.name === 'default')!.id;
  orgB = orgs.find((o) => o.name === 'team-b')!.id;
  for (const [org, role] of [['default', 'member'], ['default', 'viewer'], ['default', 'owner'], ['team-b', 'owner']] as const) {
    const made = await admin('POST', `/api/orgs/${org}/tokens`, { role, name: `${org}-${role}` });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    tokens[`${org}-${role}`] = made.body.token;
  }
});
after(async () => {
  await t?.destroy();
  await rm(scratch, { recursive: true, force: true });
});

describe('host paths are an instance administrator input only', () => {
  test('a member naming a host path as the image gets one answer whatever is at the path', async () => {
    const member = as(tokens['default-member']!);
    const existingTar = join(await fresh('tar'), 'made-inside.tar');
    await writeFile(existingTar, 'not really an image');
    const paths = ['/etc', '/etc/passwd', '/no/such/path', existingTar, `/proc/${process.pid}/root/etc`, './missing.tar', '../../etc/shadow'];
    const answers = new Set<string>();
    for (const path of paths) {
      const res = await member('POST', '/api/orgs/default/environments', { image: path, name: `p${++counter}` });
      assert.equal(res.status, 403, `${path}: ${res.status} ${JSON.stringify(res.body)}`);
      answers.add(JSON.stringify(res.body).replaceAll(JSON.stringify(path).slice(1, -1), 'PATH'));
    }
    assert.equal(answers.size, 1, `the same answer for every path: ${[...answers].join('\n')}`);
    assert.match([...answers][0]!, /instance administrator/);
    assert.doesNotMatch([...answers][0]!, /exist|director|regular file|not a readable/i);
    const rows = await t.berth.database.db.selectFrom('environments').select('name').where('org_id', '=', orgA).execute();
    assert.deepEqual(rows, [], 'no environment was created');
  });

  test("the CLI's --image PATH as a member is refused without saying whether the path exists", async () => {
    const env = { BERTH_URL: t.client.url, BERTH_TOKEN: tokens['default-member']!, BERTH_ORG: 'default' };
    const present = await runCli(['env', 'create', '--image', '/etc/passwd'], env);
    const absent = await runCli(['env', 'create', '--image', '/etc/no-such-file'], env);
    assert.notEqual(present.code, 0);
    assert.notEqual(absent.code, 0);
    assert.equal(present.stderr.replaceAll('/etc/passwd', 'PATH'), absent.stderr.replaceAll('/etc/no-such-file', 'PATH'));
    assert.match(present.stderr, /instance administrator/);
  });

  test("a repository's image (berth.yaml, devcontainer), as the task pipeline passes it, is never a host path", async () => {
    // The pipeline creates a task's environment as the task (taskScope) with the image the
    // repository names, and no caller rights of its own.
    const asTask = taskScope(orgA, 'task_images');
    await expectError(t.berth.environments.create(asTask, { image: '/etc/passwd', name: 'from-berth-yaml' }), 'forbidden', /instance administrator/);
    await expectError(t.berth.environments.create(asTask, { image: `/proc/${process.pid}/root/tmp/x.tar`, name: 'from-devcontainer' }), 'forbidden', /instance administrator/);
  });
});

describe('an image an org names stays in that org', () => {
  let store: ImageStore;
  let instanceImage: string;
  before(async () => {
    store = t.berth.runner.images;
    const layout = await writeLayout(await fresh('team-a'), tarball([{ path: 'hello', body: 'team a' }]), 'team-a');
    // What an org gets by pulling (or uploading): a name inside the org.
    await store.importArchive(layout, { name: 'docker.io/library/python:3.12', org: orgA });
    await store.importArchive(layout, { name: 'team-a-tools:1', org: orgA });
    const shared = await writeLayout(await fresh('shared'), tarball([{ path: 'hello', body: 'shared' }]), 'shared');
    instanceImage = `instance-shared-${process.pid}:1`;
    const imported = await as(t.client.token)('POST', '/api/images/import', { path: shared, name: instanceImage });
    assert.equal(imported.status, 201, JSON.stringify(imported.body));
  });
  // The image cache is shared by every test file: take the names (and so the files) away again.
  after(async () => {
    await store.remove('docker.io/library/python:3.12', { org: orgA }).catch(() => {});
    await store.remove('team-a-tools:1', { org: orgA }).catch(() => {});
    await store.remove(instanceImage).catch(() => {});
  });

  test("another org neither resolves nor lists it, and cannot start an environment from it", async () => {
    assert.equal((await store.get('docker.io/library/python:3.12', { org: orgA }))?.name, 'docker.io/library/python:3.12');
    assert.equal(await store.get('docker.io/library/python:3.12', { org: orgB }), undefined, 'not under the same name in org B');
    assert.equal(await store.get('team-a-tools:1', { org: orgB }), undefined);
    const b = as(tokens['team-b-owner']!);
    const res = await b('POST', '/api/orgs/team-b/environments', { image: 'team-a-tools:1' });
    assert.equal(res.status, 404, JSON.stringify(res.body));
    // The instance's images are everyone's.
    assert.ok(await store.get(instanceImage, { org: orgB }));
  });

  test("an instance import is on record in every org's audit log, without the host path", async () => {
    for (const org of ['default', 'team-b']) {
      const log = await as(t.client.token)('GET', `/api/orgs/${org}/audit?action=image.import`);
      const entry = (log.body.items as { target: string; details: Record<string, unknown> }[]).find((e) => e.target === instanceImage);
      assert.ok(entry, `org ${org}: ${JSON.stringify(log.body)}`);
      assert.ok(!JSON.stringify(entry.details).includes('/'), `no host path in ${JSON.stringify(entry.details)}`);
    }
  });

  test("GET /api/images shows the instance's images and the caller's own orgs' only", async () => {
    const names = async (token: string) => ((await as(token)('GET', '/api/images')).body.items as { name: string; org: string | null }[]).map((i) => `${i.org ?? '*'} ${i.name}`);
    const b = await names(tokens['team-b-owner']!);
    assert.ok(b.includes(`* ${instanceImage}`), b.join(', '));
    assert.ok(b.includes('* default'), b.join(', '));
    assert.ok(!b.some((n) => n.includes('team-a-tools') || n.includes('python')), `org B sees none of org A's: ${b.join(', ')}`);
    const viewerA = await names(tokens['default-viewer']!);
    assert.ok(viewerA.includes('default team-a-tools:1'), viewerA.join(', '));
    const admin = await names(t.client.token);
    assert.ok(admin.includes('default team-a-tools:1') && admin.includes(`* ${instanceImage}`), admin.join(', '));
  });
});

describe('registry pulls obey the egress address rules', () => {
  let server: Server;
  let port: number;
  let connections = 0;
  before(async () => {
    server = createServer((socket) => {
      connections++;
      socket.destroy();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  test("a member's reference to a loopback, private or link-local registry is refused before anything is contacted", async () => {
    const member = as(tokens['default-member']!);
    for (const ref of [`127.0.0.1:${port}/x:y`, `localhost:${port}/x:y`, '169.254.169.254:80/latest/meta-data:1', '10.1.2.3:5000/x:y', '0.0.0.0:5000/x:y']) {
      const res = await member('POST', '/api/orgs/default/environments', { image: ref });
      assert.equal(res.status, 403, `${ref}: ${res.status} ${JSON.stringify(res.body)}`);
      assert.match(res.body.error.message, /BERTH_ALLOWED_REGISTRIES/);
    }
    // Not a reference the grammar takes: never pulled.
    assert.equal((await member('POST', '/api/orgs/default/environments', { image: `[::1]:${port}/x:y` })).status, 404);
    assert.equal(connections, 0, 'the host contacted none of them');
  });

  test('the store refuses them too, unless an instance administrator listed the registry', async () => {
    const store = new ImageStore({ dir: await fresh('store') });
    await expectError(store.resolve(`127.0.0.1:${port}/x:y`), 'forbidden', /loopback, private or link-local/);
    const listed = new ImageStore({ dir: await fresh('store'), allowedRegistries: [`127.0.0.1:${port}`] });
    // Listed: contacted (and the fake registry hangs up, so the pull fails as unavailable).
    await expectError(listed.resolve(`127.0.0.1:${port}/x:y`), 'unavailable', /cannot pull/);
    assert.ok(connections > 0, 'the listed registry was contacted');
  });
});

describe("a registry's token realm is held to the same rules", () => {
  // The registry stands on one of this host's own non-loopback addresses, which the test
  // escape hatch (allowPrivateAddresses) opens for it alone; its 401 names a token realm on
  // the host's loopback, where a service records whether anything came.
  const address = Object.values(networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal)?.address;
  let registry: import('node:https').Server;
  let tokenServer: import('node:http').Server;
  let registryPort: number;
  let tokenPort: number;
  let certDir: string;
  let realm = '';
  const tokenRequests: string[] = [];
  let registryRequests = 0;

  before(async () => {
    assert.ok(address, 'this host has a non-loopback IPv4 address');
    certDir = await fresh('certs');
    await promisify(execFile)('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=registry',
      '-keyout', join(certDir, 'registry.key.pem'), '-out', join(certDir, 'ca.crt'), '-addext', `subjectAltName=IP:${address}`,
    ]);
    registry = createHttpsServer({ cert: await readFile(join(certDir, 'ca.crt')), key: await readFile(join(certDir, 'registry.key.pem')) }, (req, res) => {
      registryRequests++;
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${realm}",service="registry"`, 'content-type': 'application/json' });
      res.end('{"errors":[{"code":"UNAUTHORIZED"}]}');
    });
    await rm(join(certDir, 'registry.key.pem'));
    tokenServer = createHttpServer((req, res) => {
      tokenRequests.push(req.url ?? '');
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"token":"t"}');
    });
    await new Promise<void>((resolve) => registry.listen(0, address, resolve));
    await new Promise<void>((resolve) => tokenServer.listen(0, '127.0.0.1', resolve));
    registryPort = (registry.address() as { port: number }).port;
    tokenPort = (tokenServer.address() as { port: number }).port;
  });
  after(async () => {
    registry?.closeAllConnections();
    tokenServer?.closeAllConnections();
    await Promise.all([new Promise((r) => registry?.close(r)), new Promise((r) => tokenServer?.close(r))]);
  });

  const store = async () => {
    const allowPrivateAddresses = new BlockList();
    allowPrivateAddresses.addAddress(address!);
    const names: Record<string, string[]> = { 'token.test': ['127.0.0.1'] };
    return new ImageStore({
      dir: await fresh('store'),
      allowPrivateAddresses,
      registryCertDir: certDir,
      resolveHost: async (host) => names[host] ?? [],
    });
  };

  test('a realm on loopback, named by address, is never contacted', async () => {
    realm = `http://127.0.0.1:${tokenPort}/token`;
    const images = await store();
    const error = await images.resolve(`${address}:${registryPort}/x:y`).then(() => assert.fail('pulled'), (e: unknown) => e);
    assert.ok(error instanceof BerthError, String(error));
    assert.ok(registryRequests > 0, `the registry was reached (through the pull proxy): ${error}`);
    assert.deepEqual(tokenRequests, [], 'the loopback token service saw nothing');
    assert.deepEqual(await images.list(), []);
  });

  test('a realm whose name resolves to loopback is refused by the pull proxy, and the answer says so', async () => {
    realm = `http://token.test:${tokenPort}/token`;
    await expectError((await store()).resolve(`${address}:${registryPort}/x:y`), 'forbidden', new RegExp(`sent the pull to token\\.test:${tokenPort}`));
    assert.deepEqual(tokenRequests, []);
  });
});

describe('unpacking is bounded', () => {
  // 64 MiB of zeros is 64 KiB of gzip: a small bomb against an 8 MiB limit.
  const bomb = () => tarball([{ path: 'zeros', body: Buffer.alloc(64 << 20) }]);

  test('a gzip bomb layer stops at the size limit and leaves nothing behind', async () => {
    const dir = await fresh('store');
    const store = new ImageStore({ dir, maxImageBytes: 8 << 20 });
    const layout = await writeLayout(await fresh('bomb'), bomb());
    await expectError(store.importArchive(layout, { name: 'bomb' }), 'invalid', /unpacks to more than 8M,/);
    assert.deepEqual(await store.list(), []);
    assert.deepEqual(await readdir(join(dir, 'images')).catch(() => []), []);
    assert.deepEqual(await readdir(join(dir, 'tmp')), []);
  });

  test('a gzip bomb outer archive stops at the size limit too', async () => {
    const dir = await fresh('store');
    const store = new ImageStore({ dir, maxImageBytes: 8 << 20 });
    const file = join(await fresh('outer'), 'bomb.tar.gz');
    await writeFile(file, gzipSync(tarball([{ path: 'oci-layout', body: '{}' }, { path: 'zeros', body: Buffer.alloc(64 << 20) }])));
    await expectError(store.importArchive(file, { name: 'bomb' }), 'invalid', /unpacks to more than 8M,/);
    assert.deepEqual(await readdir(join(dir, 'tmp')), []);
  });
});

describe('archives that climb out', () => {
  // Many entries after the bad one: extraction must have stopped before the scratch directory is removed.
  const filler = Array.from({ length: 200 }, (_, i) => ({ path: `blobs/f${i}`, body: Buffer.alloc(32 << 10, i) }));

  for (const [what, bad] of [['../', '../escape'], ['absolute', '/abs-escape']] as const) {
    test(`an outer entry named with ${what} is a 400 and leaves no scratch directory`, async () => {
      const file = join(await fresh('climb'), 'climb.tar');
      await writeFile(file, tarball([{ path: 'oci-layout', body: '{}' }, { path: bad, body: 'x' }, ...filler]));
      const dir = await fresh('store');
      const store = new ImageStore({ dir });
      await expectError(store.importArchive(file), 'invalid', /outside the archive/);
      assert.deepEqual(await readdir(join(dir, 'tmp')), []);
      const res = await as(t.client.token)('POST', '/api/images/import', { path: file });
      assert.equal(res.status, 400, JSON.stringify(res.body));
    });
  }
});
