// Company certificate authorities (berth up --extra-ca): a TLS server whose certificate a
// "company" CA made here issued, reached from inside real environments (trusted only when
// the runner is given the CA), through the proxy's own upstream TLS (a host with
// credentials), and by host-side git; and the checks a CA file gets at start.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { RequestListener } from 'node:http';
import { createServer as createHttpsServer, type Server } from 'node:https';
import { connect, createServer as createTcpServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';
import { after, before, describe, test } from 'node:test';
import forge from 'node-forge';
import pino from 'pino';
import { cloneRepo, RepoAccess } from '../src/forges/index.ts';
import { ImageStore, LocalRunner, type EnvironmentSpec } from '../src/runner/index.ts';
import { CertificateAuthority } from '../src/runner/network/ca.ts';
import { loadCompanyCas, NetworkEventStore, writeHostTrust, type Resolver } from '../src/runner/network/index.ts';
import { blockListOf } from '../src/runner/network/request-filter.ts';
import { findKeytool } from '../src/runner/network/java-trust.ts';
import { resolveInRoot } from '../src/runner/network/resolve-in-root.ts';
import { trustLayer } from '../src/runner/network/trust-layer.ts';
import { startBerth } from '../src/server/index.ts';
import { DEFAULT_LIMITS } from '../src/shared/environment.ts';
import { newId } from '../src/shared/ids.ts';
import { isolatedGitEnv, serveGit, type GitRequestRecord } from './fakes/git-server.ts';
import { IMAGE_DIR, REPO, runToEnd } from './helpers.ts';
import { pushImage } from './registry-server.ts';
import { basePolicy, TestPolicies } from './security/fixtures.ts';

const logger = pino({ enabled: false });
const NAMES: Record<string, string[]> = { 'internal.corp.test': ['127.0.0.1'], 'api.corp.test': ['127.0.0.1'], 'git.corp.test': ['127.0.0.1'], 'registry.corp.test': ['127.0.0.1'] };
const resolver: Resolver = async (host) => {
  const a = NAMES[host];
  if (!a) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
  return a;
};
const SECRET = 'corp-api-token-0d9f2a';


/** An HTTPS server whose certificates (one per name) `ca` issued; `handler` answers. */
async function corpServer(ca: CertificateAuthority, names: string[], handler: RequestListener): Promise<{ server: Server; port: number }> {
  const certs = Object.fromEntries(names.map((n) => [n, ca.leaf(n)]));
  const first = certs[names[0]!]!;
  const server = createHttpsServer({
    cert: first.cert,
    key: first.key,
    SNICallback: (name, cb) => {
      const c = certs[name] ?? first;
      cb(null, createSecureContext({ cert: c.cert, key: c.key }));
    },
  }, handler);
  const port = await new Promise<number>((r) => server.listen(0, '127.0.0.1', () => r((server.address() as AddressInfo).port)));
  return { server, port };
}

describe('company CAs', () => {
  let dir: string;
  let companyCa: CertificateAuthority;
  let web: { server: Server; port: number };
  const seen: { url: string; authorization: string | undefined }[] = [];
  const images = new ImageStore({ dir: IMAGE_DIR, logger });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'berth-extra-ca-'));
    // Its own name: a chain is built by issuer name, and the runner's CA is 'Berth runner egress CA'.
    companyCa = await CertificateAuthority.open(join(dir, 'company-ca'), 'Corp TLS Inspection Root');
    web = await corpServer(companyCa, ['internal.corp.test', 'api.corp.test'], (req, res) => {
      seen.push({ url: req.url ?? '', authorization: req.headers.authorization });
      res.writeHead(200, { 'content-type': 'text/plain' }).end(`hello from corp ${req.url}\n`);
    });
  });

  after(async () => {
    web?.server.closeAllConnections();
    await new Promise((r) => web?.server.close(r));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** A runner whose environments may reach the corp server (127.0.0.1, the test escape hatch), with or without the company CA. */
  async function environment(name: string, companyCas: string[] | undefined) {
    const policies = new TestPolicies();
    policies.policy = basePolicy({
      allowDomains: Object.keys(NAMES),
      allowPorts: [web.port],
      credentials: [{ host: 'api.corp.test', pathPrefix: '/v1/', header: 'authorization', value: `Bearer ${SECRET}`, name: 'corp-api' }],
    });
    const events = new NetworkEventStore();
    const runner = new LocalRunner({ dataDir: join(dir, name), images, logger, network: { policies, events, resolver, allowPrivateAddresses: ['127.0.0.1/32'], companyCas, warm: 0 } });
    const spec: EnvironmentSpec = { id: newId('env'), hostname: name, image: await images.resolve('default'), limits: DEFAULT_LIMITS };
    await runner.start(spec);
    const sh = (script: string) => runToEnd(runner.exec(spec, { cmd: ['sh', '-c', script], timeoutMs: 120_000 }));
    return {
      sh,
      events,
      close: async () => {
        await runner.remove(spec.id).catch(() => {});
        runner.close();
      },
    };
  }

  test('an environment given the company CA trusts it everywhere: its bundle and variables, its system store (after update-ca-certificates too), node, python, and the proxy upstream', async () => {
    const env = await environment('trusting', [companyCa.certPem]);
    try {
      const url = `https://internal.corp.test:${web.port}/inside`;
      // The variables, and the bundle they name holds the company CA.
      const vars = await env.sh('echo "$SSL_CERT_FILE $NODE_EXTRA_CA_CERTS $REQUESTS_CA_BUNDLE $GIT_SSL_CAINFO $CURL_CA_BUNDLE"');
      assert.equal(vars.stdout.trim(), Array(5).fill('/.berth/ca-certificates.crt').join(' '));
      const bundle = await env.sh('cat /.berth/ca-certificates.crt');
      assert.ok(bundle.stdout.includes(companyCa.certPem.trim()), 'the bundle holds the company CA');

      const curl = await env.sh(`curl -sS -m 30 ${url}`);
      assert.equal(curl.exitCode, 0, curl.stderr);
      assert.equal(curl.stdout, 'hello from corp /inside\n');

      // The image's own store: what curl (OpenSSL), apt and wget read when no variable says otherwise.
      const system = await env.sh(`unset SSL_CERT_FILE CURL_CA_BUNDLE; curl -sS -m 30 --cacert /etc/ssl/certs/ca-certificates.crt ${url} && ls /usr/local/share/ca-certificates`);
      assert.equal(system.exitCode, 0, system.stderr);
      assert.match(system.stdout, /berth-company-ca-1\.crt/);

      const node = await env.sh(`node -e "fetch('${url}').then((r) => r.text()).then((t) => process.stdout.write(t), (e) => { console.error(e.cause ?? e); process.exit(1); })"`);
      assert.equal(node.exitCode, 0, node.stderr);
      assert.equal(node.stdout, 'hello from corp /inside\n');

      const py = await env.sh(`python3 -c "import urllib.request; print(urllib.request.urlopen('${url}', timeout=30).read().decode(), end='')"`);
      assert.equal(py.exitCode, 0, py.stderr);
      assert.equal(py.stdout, 'hello from corp /inside\n');

      // update-ca-certificates (apt runs it when a package brings certificates) replaces the
      // store by a rename, and builds the company CA back in from the anchor directory.
      const update = await env.sh(`update-ca-certificates >/dev/null && unset SSL_CERT_FILE CURL_CA_BUNDLE && curl -sS -m 30 --cacert /etc/ssl/certs/ca-certificates.crt ${url}`);
      assert.equal(update.exitCode, 0, update.stderr);
      assert.equal(update.stdout, 'hello from corp /inside\n');

      // A host with credentials: the proxy terminates TLS and makes its own connection upstream, trusting the company CA.
      const api = await env.sh(`curl -sS -m 30 https://api.corp.test:${web.port}/v1/things`);
      assert.equal(api.exitCode, 0, api.stderr);
      assert.equal(api.stdout, 'hello from corp /v1/things\n');
      assert.equal(seen.at(-1)?.authorization, `Bearer ${SECRET}`);
    } finally {
      await env.close();
    }
  });

  test('without the company CA, the same server is refused: inside, and by the proxy upstream', async () => {
    const env = await environment('plain', undefined);
    try {
      const curl = await env.sh(`curl -sS -m 30 https://internal.corp.test:${web.port}/inside`);
      assert.equal(curl.exitCode, 60, `curl: certificate problem expected, got ${curl.exitCode}: ${curl.stderr}`);
      assert.match(curl.stderr, /certificate/i);
      const before = seen.length;
      const api = await env.sh(`curl -sS -m 30 -o /dev/null -w '%{http_code}' https://api.corp.test:${web.port}/v1/things`);
      assert.notEqual(api.stdout, '200');
      assert.equal(seen.length, before, 'the proxy sent nothing to a server it could not verify');
    } finally {
      await env.close();
    }
  });

  test('host-side git clones over HTTPS from a server the company CA certified, and only with it', async () => {
    const root = join(dir, 'git-root');
    mkdirSync(join(root, 'corp'), { recursive: true });
    const home = join(dir, 'git-home');
    mkdirSync(home, { recursive: true });
    const gitEnv = isolatedGitEnv(home);
    const work = join(dir, 'git-work');
    execFileSync('git', ['init', '--quiet', '--initial-branch=main', work], { env: gitEnv });
    writeFileSync(join(work, 'README.md'), 'corp repo\n');
    execFileSync('git', ['-C', work, 'add', '.'], { env: gitEnv });
    execFileSync('git', ['-C', work, '-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '--quiet', '-m', 'first'], { env: gitEnv });
    execFileSync('git', ['clone', '--quiet', '--bare', work, join(root, 'corp', 'app.git')], { env: gitEnv });
    const records: GitRequestRecord[] = [];
    const git = await corpServer(companyCa, ['git.corp.test'], (req, res) => {
      const url = new URL(req.url ?? '/', 'https://git.corp.test');
      serveGit({ root, records }, req, res, url.pathname, url.search.slice(1));
    });
    try {
      const url = `https://git.corp.test:${git.port}/corp/app.git`;
      const trust = writeHostTrust(join(dir, 'host-trust'), loadCompanyCas([join(dir, 'company-ca', 'ca.crt')]));
      const plain = new RepoAccess({ localRepos: [], allowedGitHosts: ['127.0.0.1'] }, { resolver });
      await assert.rejects(cloneRepo({ url, dir: join(dir, 'clone-plain'), reach: await plain.reach(url) }), /certificate|SSL/i);

      const trusting = new RepoAccess({ localRepos: [], allowedGitHosts: ['127.0.0.1'], caFile: trust.bundle }, { resolver });
      const cloned = await cloneRepo({ url, dir: join(dir, 'clone'), reach: await trusting.reach(url) });
      assert.equal(cloned.branch, 'main');
      assert.equal(readFileSync(join(dir, 'clone', 'README.md'), 'utf8'), 'corp repo\n');
      assert.ok(records.some((r) => r.service === 'git-upload-pack'));
    } finally {
      git.server.closeAllConnections();
      await new Promise((r) => git.server.close(r));
    }
  });

  test('registry pulls verify a registry the company CA certified, and only with it', async () => {
    // A real registry (Debian's docker-registry) serving TLS with a certificate for registry.corp.test.
    const regDir = join(dir, 'registry');
    mkdirSync(regDir, { recursive: true });
    const leaf = companyCa.leaf('registry.corp.test');
    writeFileSync(join(regDir, 'cert.pem'), leaf.cert);
    writeFileSync(join(regDir, 'key.pem'), leaf.key, { mode: 0o600 });
    const port = await freePort();
    writeFileSync(join(regDir, 'config.yml'), ['version: 0.1', 'log:', '  level: warn', 'storage:', '  filesystem:', `    rootdirectory: ${join(regDir, 'data')}`, 'http:', `  addr: 127.0.0.1:${port}`, '  tls:', `    certificate: ${join(regDir, 'cert.pem')}`, `    key: ${join(regDir, 'key.pem')}`, ''].join('\n'));
    const registry = spawn('docker-registry', ['serve', join(regDir, 'config.yml')], { stdio: 'ignore' });
    try {
      for (let i = 0; !(await listening(port)); i++) {
        assert.ok(i < 400 && registry.exitCode === null, 'docker-registry did not start (apt-get install docker-registry)');
        await new Promise((r) => setTimeout(r, 50));
      }
      await pushImage(`127.0.0.1:${port}/corp/hello:1`, 'hello from the corp registry\n');
      const ref = `registry.corp.test:${port}/corp/hello:1`;
      // Not listed, so the pull goes through the pull proxy, which lets 127.0.0.1 through only by the test escape hatch.
      const store = (certDir?: string) => new ImageStore({ dir: join(dir, `images-${certDir ? 'trusting' : 'plain'}`), logger, allowPrivateAddresses: blockListOf(['127.0.0.1/32']), resolveHost: resolver, registryCertDir: certDir });
      await assert.rejects(store().resolve(ref), /certificate|x509/i);
      const trust = writeHostTrust(join(dir, 'host-trust'), loadCompanyCas([join(dir, 'company-ca', 'ca.crt')]));
      const image = await store(trust.certDir).resolve(ref);
      assert.equal(readFileSync(join(image.rootfs, 'hello.txt'), 'utf8'), 'hello from the corp registry\n');
    } finally {
      registry.kill('SIGTERM');
    }
  });

  test('Java keystores in the image get the CAs in the trust layer when the host has keytool', { skip: findKeytool() ? false : 'no keytool on this host (apt-get install default-jre-headless)' }, async () => {
    const keytool = findKeytool()!;
    const rootfs = join(dir, 'java-rootfs');
    mkdirSync(join(rootfs, 'etc/ssl/certs/java'), { recursive: true });
    mkdirSync(join(rootfs, 'usr/lib/jvm/java-17/lib/security'), { recursive: true });
    mkdirSync(join(rootfs, 'opt/java/openjdk/lib/security'), { recursive: true });
    // The image's own keystore (JKS, as Debian's ca-certificates-java writes it), holding one public CA.
    const publicCa = await CertificateAuthority.open(join(dir, 'public-ca'), 'Some Public Root');
    writeFileSync(join(dir, 'public-ca.pem'), publicCa.certPem);
    const keystore = join(rootfs, 'etc/ssl/certs/java/cacerts');
    execFileSync(keytool, ['-importcert', '-noprompt', '-storetype', 'JKS', '-keystore', keystore, '-storepass', 'changeit', '-alias', 'some-public-root', '-file', join(dir, 'public-ca.pem')], { stdio: 'ignore' });
    const imageBytes = readFileSync(keystore);
    // The JDK's link to it, and a JCEKS keystore (loading one deserializes objects): never read.
    execFileSync('ln', ['-s', '/etc/ssl/certs/java/cacerts', join(rootfs, 'usr/lib/jvm/java-17/lib/security/cacerts')]);
    writeFileSync(join(rootfs, 'opt/java/openjdk/lib/security/cacerts'), Buffer.from([0xce, 0xce, 0xce, 0xce, 0, 0, 0, 2]));

    const warnings: string[] = [];
    const layer = await trustLayer(join(dir, 'java-layers'), rootfs, [{ name: 'berth-company-ca-1', pem: companyCa.certPem }], { keytool, warn: (m) => warnings.push(m) });
    assert.ok(layer);
    assert.deepEqual(warnings, []);
    const list = (path: string, alias: string) => {
      try {
        execFileSync(keytool, ['-list', '-keystore', path, '-storepass', 'changeit', '-alias', alias], { stdio: 'pipe' });
        return true;
      } catch {
        return false;
      }
    };
    const layered = join(layer, 'etc/ssl/certs/java/cacerts');
    assert.ok(list(layered, 'berth-company-ca-1'), 'the company CA is in the layer\'s keystore');
    assert.ok(list(layered, 'some-public-root'), 'and the image\'s own CAs stay');
    assert.deepEqual(readFileSync(keystore), imageBytes, 'the image is untouched');
    assert.equal(existsSync(join(layer, 'opt/java/openjdk/lib/security/cacerts')), false, 'the JCEKS file was not touched');

    // Without keytool: the keystore is left, and the runner says why.
    const notes: string[] = [];
    await trustLayer(join(dir, 'java-layers-none'), rootfs, [{ name: 'berth-company-ca-1', pem: companyCa.certPem }], { warn: (m) => notes.push(m) });
    assert.match(notes.join('\n'), /Java keystore \(\/etc\/ssl\/certs\/java\/cacerts\) but this host has no keytool/);
  });

  test('CA files are checked at start: a clear error names the file and never shows its contents', async () => {
    const file = (name: string, text: string) => {
      const path = join(dir, name);
      writeFileSync(path, text);
      return path;
    };
    const good = join(dir, 'company-ca', 'ca.crt');
    const [only] = loadCompanyCas([good, good]);
    assert.equal(loadCompanyCas([good, good]).length, 1, 'the same CA twice is trusted once');
    assert.match(only!.subject, /Corp TLS Inspection Root/);

    assert.throws(() => loadCompanyCas([join(dir, 'missing.pem')]), (e: Error) => e.message.includes('missing.pem') && /ENOENT/.test(e.message));
    const garbage = file('garbage.pem', 'this is not a certificate, secret-ish text 1234\n');
    assert.throws(() => loadCompanyCas([garbage]), (e: Error) => e.message.includes('garbage.pem') && /no PEM certificate/.test(e.message) && !e.message.includes('secret-ish'));
    const broken = file('broken.pem', '-----BEGIN CERTIFICATE-----\nTUlJQnJva2Vu\n-----END CERTIFICATE-----\n');
    assert.throws(() => loadCompanyCas([broken]), (e: Error) => e.message.includes('broken.pem') && /not a valid X\.509/.test(e.message) && !e.message.includes('TUlJQnJva2Vu'));
    const leaf = companyCa.leaf('server.corp.test');
    const serverCert = file('server.pem', leaf.cert);
    assert.throws(() => loadCompanyCas([serverCert]), (e: Error) => e.message.includes('server.pem') && /not a CA certificate/.test(e.message) && /server\.corp\.test/.test(e.message));
    const withKey = file('with-key.pem', `${companyCa.certPem}${leaf.key}`);
    assert.throws(() => loadCompanyCas([withKey]), (e: Error) => e.message.includes('with-key.pem') && /private key/.test(e.message) && !e.message.includes('PRIVATE KEY-----\nMII'));
    const expired = file('expired.pem', expiredCa());
    assert.throws(() => loadCompanyCas([expired]), (e: Error) => e.message.includes('expired.pem') && /expired on 2020-01-02/.test(e.message));
    // Second in a file: named by its position.
    const second = file('two.pem', `${companyCa.certPem}${leaf.cert}`);
    assert.throws(() => loadCompanyCas([second]), /certificate 2 in .*two\.pem/);

    // startBerth refuses before it makes anything.
    const dataDir = join(dir, 'never-made');
    await assert.rejects(startBerth({ dataDir, extraCaFiles: [garbage], logger }), /garbage\.pem/);
    assert.equal(existsSync(dataDir), false);

    // So does `berth up`, with the flag and with the variable: one line, exit 1, no stack.
    const up = (args: string[], env: Record<string, string> = {}) => {
      try {
        execFileSync(process.execPath, ['--disable-warning=ExperimentalWarning', join(REPO, 'src/cli/main.ts'), '--data-dir', dataDir, 'up', '--port', '0', ...args], { env: { ...process.env, ...env }, stdio: 'pipe' });
        return { status: 0, stderr: '' };
      } catch (e) {
        const err = e as { status: number; stderr: Buffer };
        return { status: err.status, stderr: err.stderr.toString() };
      }
    };
    const flag = up(['--extra-ca', good, '--extra-ca', serverCert]);
    assert.equal(flag.status, 1);
    assert.match(flag.stderr, /^berth: the certificate in .*server\.pem \(CN=server\.corp\.test\) is not a CA certificate/m);
    assert.doesNotMatch(flag.stderr, /\n\s+at /, 'no stack trace');
    const variable = up([], { BERTH_EXTRA_CA_CERTS: `${good},${join(dir, 'nope.pem')}` });
    assert.equal(variable.status, 1);
    assert.match(variable.stderr, /cannot read extra CA file .*nope\.pem \(ENOENT\)/);
    assert.equal(existsSync(dataDir), false);
  });

  test('the trust layer follows links inside the image only, and keeps the image store owners and modes', async () => {
    const rootfs = join(dir, 'fake-rootfs');
    mkdirSync(join(rootfs, 'etc/pki/ca-trust/extracted/pem'), { recursive: true });
    mkdirSync(join(rootfs, 'etc/pki/tls/certs'), { recursive: true });
    mkdirSync(join(rootfs, 'etc/ssl'), { recursive: true });
    writeFileSync(join(rootfs, 'etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem'), '# image store\n');
    // RHEL's link, relative; and a hostile absolute link that must not leave the image.
    execFileSync('ln', ['-s', '../../ca-trust/extracted/pem/tls-ca-bundle.pem', join(rootfs, 'etc/pki/tls/certs/ca-bundle.crt')]);
    execFileSync('ln', ['-s', '/../../../../etc/hostname', join(rootfs, 'etc/ssl/cert.pem')]);
    assert.equal(resolveInRoot(rootfs, '/etc/pki/tls/certs/ca-bundle.crt'), '/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem');
    assert.equal(resolveInRoot(rootfs, '/etc/ssl/cert.pem'), undefined, 'the link points at /etc/hostname inside the image, which it does not have');
    const layer = await trustLayer(join(dir, 'layers'), rootfs, [{ name: 'berth-company-ca-1', pem: companyCa.certPem }]);
    assert.ok(layer);
    const store = readFileSync(join(layer, 'etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem'), 'utf8');
    assert.ok(store.startsWith('# image store\n') && store.includes(companyCa.certPem.trim()));
    assert.equal(existsSync(join(layer, 'etc/hostname')), false);
    assert.equal(await trustLayer(join(dir, 'layers'), rootfs, [{ name: 'berth-company-ca-1', pem: companyCa.certPem }]), layer, 'made once, then reused');
  });
});

async function freePort(): Promise<number> {
  const server = createTcpServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** A CA certificate that expired on 2020-01-02 (made with node-forge, as ca.ts makes its own). */
function expiredCa(): string {
  const keys = forge.pki.rsa.generateKeyPair(1024);
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = '01';
  cert.validity.notBefore = new Date('2019-01-01T00:00:00Z');
  cert.validity.notAfter = new Date('2020-01-02T00:00:00Z');
  const name = [{ name: 'commonName', value: 'Old Corp Root' }];
  cert.setSubject(name);
  cert.setIssuer(name);
  cert.setExtensions([{ name: 'basicConstraints', cA: true, critical: true }, { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true }]);
  cert.sign(keys.privateKey, forge.md.sha256.create());
  return forge.pki.certificateToPem(cert);
}
