// Registry logins and mirrors against a real registry: Debian's docker-registry behind a
// password (htpasswd, bcrypt) on loopback. A pull without the login is refused with what to
// do, a wrong one says which secret was refused (never its value), the right one pulls; an
// instance mirror serves docker.io/… without docker.io ever being looked up.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { createServer as createHttpServer, request as httpRequest, type IncomingMessage } from 'node:http';
import { BlockList, connect, createServer as createTcpServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ImageStore } from '../src/runner/images/index.ts';
import { mirrored, parseMirrors } from '../src/runner/images/mirrors.ts';
import { PullProxy } from '../src/runner/images/pull-proxy.ts';
import { egressNetworkConfigFrom } from '../src/runner/network/company.ts';
import { BerthError } from '../src/shared/errors.ts';
import { startTestBerth, type TestBerth } from './helpers.ts';
import { manifestGets, pushImage, startRegistry, type TestRegistry } from './registry-server.ts';

const LOGIN = 'puller:s3cret-Pa55word-for-tests';
const scratch = await mkdtemp(join(tmpdir(), 'berth-registry-auth-'));
let counter = 0;
const fresh = async (name: string) => mkdtemp(join(scratch, `${++counter}-${name}-`));

async function refused(promise: Promise<unknown>, kind: string, message: RegExp): Promise<BerthError> {
  const error = await promise.then(() => assert.fail('expected an error'), (e: unknown) => e);
  assert.ok(error instanceof BerthError, `expected a BerthError, got ${String(error)}`);
  assert.equal(error.kind, kind, error.message);
  assert.match(error.message, message);
  return error;
}

/** A resolver that fails the test if anything but loopback is looked up. */
const loopbackOnly = async (host: string): Promise<string[]> => {
  throw new Error(`the pull looked up ${host}, which it must not reach`);
};

let registry: TestRegistry;
let digest: string;

before(async () => {
  registry = await startRegistry(await fresh('registry'), { login: LOGIN });
  digest = await pushImage(`${registry.host}/team/tool:1`, 'hello from behind a password\n', LOGIN);
});

after(async () => {
  await registry?.stop();
  await rm(scratch, { recursive: true, force: true });
});

describe('a registry that wants a login', () => {
  test('without one the pull is refused, saying how to give one; nothing is stored', async () => {
    const dir = await fresh('store');
    const store = new ImageStore({ dir, allowedRegistries: [registry.host], resolveHost: loopbackOnly });
    const ref = `${registry.host}/team/tool:1`;
    const error = await refused(store.resolve(ref, { org: 'org_a' }), 'forbidden', /the registry wants a login/);
    assert.match(error.message, /--auth-secret NAME/);
    assert.match(error.message, /USER:PASSWORD/);
    assert.deepEqual(await store.list(), []);
  });

  test('a wrong login names the secret, never its value', async () => {
    const store = new ImageStore({ dir: await fresh('store'), allowedRegistries: [registry.host], resolveHost: loopbackOnly });
    const wrong = 'puller:not-the-Password-9';
    const error = await refused(
      store.resolve(`${registry.host}/team/tool:1`, { org: 'org_a', login: async () => ({ value: wrong, from: 'secret WRONG_LOGIN' }) }),
      'forbidden',
      /refused the login in secret WRONG_LOGIN/,
    );
    assert.ok(!error.message.includes('not-the-Password-9'), error.message);
    assert.ok(!error.message.includes(Buffer.from(wrong).toString('base64')), error.message);
  });

  test('a secret that is not USER:PASSWORD is refused before anything is sent', async () => {
    const store = new ImageStore({ dir: await fresh('store'), allowedRegistries: [registry.host], resolveHost: loopbackOnly });
    const before = registry.output().length;
    const error = await refused(
      store.resolve(`${registry.host}/team/tool:1`, { org: 'org_a', login: async () => ({ value: 'just-a-token-value', from: 'secret TOKEN_ONLY' }) }),
      'invalid',
      /secret TOKEN_ONLY does not hold a registry login: store it as USER:PASSWORD/,
    );
    assert.ok(!error.message.includes('just-a-token-value'));
    assert.ok(!registry.output().slice(before).includes('/v2/team/tool/manifests'), 'the registry was not asked');
  });

  test('with the login the image is pulled, for the registry it names only; the login file is gone after', async () => {
    const dir = await fresh('store');
    const store = new ImageStore({ dir, allowedRegistries: [registry.host], resolveHost: loopbackOnly });
    const asked: string[] = [];
    const image = await store.resolve(`${registry.host}/team/tool:1`, {
      org: 'org_a',
      login: async (host) => {
        asked.push(host);
        return { value: LOGIN, from: 'secret TEAM_LOGIN' };
      },
    });
    assert.equal(image.digest, digest);
    assert.equal(await readFile(join(image.rootfs, 'hello.txt'), 'utf8'), 'hello from behind a password\n');
    assert.deepEqual(asked, [registry.host]);
    // The login file lives in the store's own scratch (not the shared /tmp) and is gone after.
    const left = (await readdir(dir, { recursive: true })).filter((f) => /(^|\/)(\.login-|auth\.json$)/.test(f));
    assert.deepEqual(left, [], 'no login file left behind');
    for (const file of await readdir(dir, { recursive: true, withFileTypes: true })) {
      if (file.isFile() && !file.parentPath.includes('/blobs/') && !file.parentPath.includes('/rootfs')) {
        assert.ok(!(await readFile(join(file.parentPath, file.name), 'utf8')).includes(Buffer.from(LOGIN).toString('base64')), `${file.name} holds the login`);
      }
    }
    assert.ok(!registry.output().includes('s3cret-Pa55word'), 'the registry log holds no password');
  });
});

describe('registry mirrors', () => {
  test('BERTH_REGISTRY_MIRRORS is read strictly', () => {
    const mirrors = parseMirrors('docker.io=https://mirror.corp/hub, ghcr.io=127.0.0.1:5000');
    assert.equal(mirrors.get('docker.io'), 'mirror.corp/hub');
    assert.equal(mirrors.get('index.docker.io'), 'mirror.corp/hub', "Docker Hub's other names too");
    assert.equal(mirrors.get('ghcr.io'), '127.0.0.1:5000');
    for (const bad of ['docker.io', 'docker.io=http://mirror.corp', 'docker.io=ftp://x', '=mirror.corp', 'docker.io=mirror corp', 'a=b=c']) {
      assert.throws(() => parseMirrors(bad), /BERTH_REGISTRY_MIRRORS: .* write registry=mirror/, bad);
    }
    assert.equal(mirrored('docker.io/alpine:3.20', mirrors), 'mirror.corp/hub/library/alpine:3.20');
    assert.equal(mirrored('docker.io/library/alpine:3.20', mirrors), 'mirror.corp/hub/library/alpine:3.20');
    assert.equal(mirrored('docker.io/bitnami/redis@sha256:' + 'a'.repeat(64), mirrors), `mirror.corp/hub/bitnami/redis@sha256:${'a'.repeat(64)}`);
    assert.equal(mirrored('quay.io/a/b:1', mirrors), 'quay.io/a/b:1', 'a registry without a mirror is pulled from itself');
  });

  test('docker.io/… is pulled from the mirror, named as given, and docker.io is never looked up', async () => {
    const store = new ImageStore({
      dir: await fresh('store'),
      allowedRegistries: [registry.host],
      registryMirrors: parseMirrors(`docker.io=${registry.host}`),
      resolveHost: loopbackOnly,
    });
    const gets = manifestGets(registry, 'team/tool', '1');
    // The mirror wants the login too: it goes to the mirror, the registry the pull reaches.
    const image = await store.resolve('docker.io/team/tool:1', { org: 'org_a', login: async () => ({ value: LOGIN, from: 'secret HUB_LOGIN' }) });
    assert.equal(image.name, 'docker.io/team/tool:1');
    assert.equal(image.digest, digest);
    assert.equal(manifestGets(registry, 'team/tool', '1'), gets + 1, 'served by the mirror');
    assert.deepEqual((await store.list()).map((i) => i.name), ['docker.io/team/tool:1']);
  });
});

describe('berth image pull --auth-secret', () => {
  let t: TestBerth;
  before(async () => {
    process.env.BERTH_ALLOWED_REGISTRIES = registry.host;
    t = await startTestBerth();
  });
  after(async () => {
    delete process.env.BERTH_ALLOWED_REGISTRIES;
    await t?.destroy();
  });

  test('refused without the secret, pulled with it; the audit log names the secret, never the value', async () => {
    const ref = `${registry.host}/team/tool:1`;
    const without = await t.cli(['image', 'pull', ref]);
    assert.notEqual(without.code, 0);
    assert.match(without.stderr, /the registry wants a login: store USER:PASSWORD as a secret and pull with `berth image pull .* --auth-secret NAME`/);

    const missing = await t.cli(['image', 'pull', ref, '--auth-secret', 'TEAM_LOGIN']);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /no org secret 'TEAM_LOGIN'/);

    const set = await t.cli(['secret', 'set', 'TEAM_LOGIN'], { input: LOGIN });
    assert.equal(set.code, 0, set.stderr);
    const pulled = await t.cli(['image', 'pull', ref, '--auth-secret', 'TEAM_LOGIN', '--json']);
    assert.equal(pulled.code, 0, pulled.stderr);
    const image = JSON.parse(pulled.stdout) as { name: string; org: string; digest: string };
    assert.deepEqual([image.name, image.org, image.digest], [ref, 'default', digest]);
    const listed = await t.cli(['image', 'ls', '--json']);
    assert.ok((JSON.parse(listed.stdout) as { name: string }[]).some((i) => i.name === ref));

    const audit = await t.api('GET', '/api/orgs/default/audit?action=image.pull');
    assert.equal(audit.status, 200, JSON.stringify(audit.body));
    const text = JSON.stringify(audit.body);
    assert.match(text, /TEAM_LOGIN/);
    assert.ok(!text.includes('s3cret-Pa55word'));

    const notARef = await t.api('POST', '/api/orgs/default/images/pull', { ref: 'default' });
    assert.equal(notARef.status, 400);
    assert.match(notARef.body.error.message, /not a registry reference/);
    // The org's images are in the shared test cache: leave it as it was.
    const org = (await t.berth.database.db.selectFrom('orgs').select('id').where('name', '=', 'default').executeTakeFirstOrThrow()).id;
    await t.berth.runner.images.remove(ref, { org });
  });

  test("a project's registry login: its environments pull with it, others do not; the login never reaches an environment", async () => {
    const ref = `${registry.host}/team/tool:2`;
    const digest2 = await pushImage(ref, 'second\n', LOGIN);
    const without = await t.cli(['env', 'create', '--image', ref]);
    assert.notEqual(without.code, 0);
    assert.match(without.stderr, /the registry wants a login/);

    const created = await t.cli(['project', 'create', 'imgs', '--repo', scratch, '--registry-login', `${registry.host}=TEAM_LOGIN`, '--secret', 'TEAM_LOGIN']);
    assert.equal(created.code, 0, created.stderr);
    const shown = await t.cli(['project', 'show', 'imgs']);
    assert.match(shown.stdout, new RegExp(`registries\\s+${registry.host.replaceAll('.', '\\.')} \\(login in TEAM_LOGIN\\)`));
    assert.match(shown.stdout, /variables\s+none/, 'named with --secret too, it is still the runner\'s only');

    const env = await t.cli(['env', 'create', '--project', 'imgs', '--image', ref, '--json']);
    assert.equal(env.code, 0, env.stderr);
    const { id, state } = JSON.parse(env.stdout) as { id: string; state: string };
    assert.equal(state, 'running');
    // The test image has no shell to look inside with; what it runs on is the pulled image.
    const org = (await t.berth.database.db.selectFrom('orgs').select('id').where('name', '=', 'default').executeTakeFirstOrThrow()).id;
    const image = await t.berth.runner.images.get(ref, { org });
    assert.equal(image?.digest, digest2);
    assert.equal(await readFile(join(image!.rootfs, 'hello.txt'), 'utf8'), 'second\n');
    assert.equal((await t.cli(['env', 'rm', id])).code, 0);

    // A login bound to another registry is not sent to this one.
    assert.equal((await t.cli(['project', 'update', 'imgs', '--registry-login', 'ghcr.io=TEAM_LOGIN'])).code, 0);
    const ref3 = `${registry.host}/team/tool:3`;
    await pushImage(ref3, 'third\n', LOGIN);
    const elsewhere = await t.cli(['env', 'create', '--project', 'imgs', '--image', ref3]);
    assert.notEqual(elsewhere.code, 0);
    assert.match(elsewhere.stderr, /the registry wants a login/);
    assert.equal((await t.cli(['project', 'update', 'imgs', '--unset', 'registry-login'])).code, 0);
    assert.deepEqual((await t.api('GET', '/api/orgs/default/projects/imgs')).body.registryLogins, {});

    await t.berth.runner.images.remove(ref, { org });
  });
});

describe('the pull proxy on a company network', () => {
  // A service standing for a registry, a company proxy that records what it is asked and
  // reaches that service for the names it knows, and the pull proxy between skopeo's side
  // (a unix socket, as in the pull sandbox) and them.
  const asked: { line: string; auth: string | undefined }[] = [];
  let target: ReturnType<typeof createTcpServer>;
  let upstream: ReturnType<typeof createHttpServer>;
  let targetPort: number;
  let upstreamPort: number;
  const reached: string[] = [];

  before(async () => {
    target = createTcpServer((socket) => socket.on('data', (b: Buffer) => {
      reached.push(b.toString());
      socket.end(`pong:${b.toString()}`);
    }));
    await new Promise<void>((resolve) => target.listen(0, '127.0.0.1', resolve));
    targetPort = (target.address() as { port: number }).port;
    // The company proxy knows registry.corp (here: the service on loopback); tunnels and absolute-URL requests both.
    upstream = createHttpServer((req: IncomingMessage, res) => {
      asked.push({ line: `${req.method} ${req.url}`, auth: req.headers['proxy-authorization'] });
      res.end('via the company proxy');
    });
    upstream.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
      asked.push({ line: `CONNECT ${req.url}`, auth: req.headers['proxy-authorization'] });
      if (!req.url?.startsWith('registry.corp:')) return void client.end('HTTP/1.1 403 Forbidden\r\n\r\n');
      const out = connect(targetPort, '127.0.0.1', () => {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        if (head.length) out.write(head);
        out.pipe(client).pipe(out);
      });
      out.on('error', () => client.destroy());
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    upstreamPort = (upstream.address() as { port: number }).port;
  });
  after(async () => {
    upstream?.closeAllConnections();
    await Promise.all([new Promise((r) => target?.close(r)), new Promise((r) => upstream?.close(r))]);
  });

  const names: Record<string, string[]> = { 'registry.corp': ['10.213.4.5'], 'elsewhere.corp': ['10.99.0.1'], 'direct.test': ['127.0.0.1'] };
  async function proxy(env: Record<string, string>, allowPrivate?: BlockList) {
    const socket = join(await fresh('pull-proxy'), 'proxy.sock');
    const egressNetwork = egressNetworkConfigFrom({ env, hostAddresses: new Set() });
    const p = await PullProxy.listen(socket, { resolve: async (host) => names[host] ?? [], maxBytes: 1 << 20, egressNetwork, allowPrivate });
    return { p, socket };
  }
  /** CONNECT through the pull proxy, then one exchange: the status line and what came back. */
  async function tunnel(socketPath: string, authority: string, send: string): Promise<{ status: string; reply: string }> {
    return new Promise((resolve, reject) => {
      const socket = connect(socketPath);
      let data = '';
      let sent = false;
      socket.on('data', (b: Buffer) => {
        data += b.toString();
        if (!sent && data.includes('\r\n\r\n')) {
          sent = true;
          if (data.startsWith('HTTP/1.1 200')) socket.write(send);
          else socket.end();
        }
      });
      socket.on('close', () => resolve({ status: data.split('\r\n')[0]!, reply: data.split('\r\n\r\n').slice(1).join('') }));
      socket.on('error', reject);
      socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
    });
  }

  test('a registry in a trusted network is reached through the upstream proxy, by name, with its credentials', async () => {
    const { p, socket } = await proxy({ BERTH_EGRESS_TRUSTED_NETWORKS: '10.213.0.0/16', BERTH_EGRESS_UPSTREAM_PROXY: `http://puller:proxy-pw@127.0.0.1:${upstreamPort}` });
    try {
      asked.length = 0;
      const r = await tunnel(socket, 'registry.corp:443', 'ping');
      assert.equal(r.status, 'HTTP/1.1 200 Connection Established');
      assert.equal(r.reply, 'pong:ping');
      assert.deepEqual(asked, [{ line: 'CONNECT registry.corp:443', auth: `Basic ${Buffer.from('puller:proxy-pw').toString('base64')}` }]);

      // A plain-HTTP token realm goes the same way: the absolute URL to the company proxy.
      const answer = await new Promise<string>((resolve, reject) => {
        const req = httpRequest({ socketPath: socket, path: 'http://registry.corp/token?scope=x', headers: { host: 'registry.corp' } }, (res) => {
          let body = '';
          res.on('data', (b: Buffer) => (body += b.toString())).on('end', () => resolve(body));
        });
        req.on('error', reject).end();
      });
      assert.equal(answer, 'via the company proxy');
      assert.deepEqual(asked[1], { line: 'GET http://registry.corp/token?scope=x', auth: `Basic ${Buffer.from('puller:proxy-pw').toString('base64')}` });

      // Outside the trusted networks: refused here, and the company proxy never asked.
      asked.length = 0;
      assert.match((await tunnel(socket, 'elsewhere.corp:443', 'ping')).status, /^HTTP\/1\.1 403/);
      assert.deepEqual(asked, []);
      assert.deepEqual(p.refused, ['elsewhere.corp:443']);
    } finally {
      await p.close();
    }
  });

  test('without trusted networks the private registry is refused; no-proxy destinations go directly', async () => {
    const { p, socket } = await proxy({ BERTH_EGRESS_UPSTREAM_PROXY: `http://127.0.0.1:${upstreamPort}`, BERTH_EGRESS_UPSTREAM_NO_PROXY: 'direct.test' }, blockListOf('127.0.0.1'));
    try {
      asked.length = 0;
      assert.match((await tunnel(socket, 'registry.corp:443', 'ping')).status, /^HTTP\/1\.1 403/);
      reached.length = 0;
      const r = await tunnel(socket, `direct.test:${targetPort}`, 'hello');
      assert.equal(r.reply, 'pong:hello');
      assert.deepEqual(reached, ['hello']);
      assert.deepEqual(asked, [], 'the company proxy was not asked for either');
    } finally {
      await p.close();
    }
  });
});

function blockListOf(address: string): BlockList {
  const list = new BlockList();
  list.addAddress(address);
  return list;
}
