// Package mirrors: what Berth writes for each ecosystem (pure), how policies take and check
// mirrors, and real npm, pip and apt-get in a real environment using them against a local
// HTTPS server shaped like a corporate repository manager: an npm registry (metadata and
// tarball), a PyPI "simple" index with a wheel, and a Debian archive signed with a key made
// here. The server refuses every request without the mirror's token, which only the egress
// proxy adds: the environment never holds it.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { distroOf, mirrorConfig } from '../src/runner/mirrors.ts';
import { CertificateAuthority } from '../src/runner/network/ca.ts';
import type { Resolver } from '../src/runner/network/index.ts';
import { applyMirrorPatch, checkMirrorUrl, mirrorCredentials, resolveMirrors } from '../src/server/policy/mirrors.ts';
import { EMPTY_FIELDS, resolvePolicy } from '../src/server/policy/resolve.ts';
import { startBerth, type RunningBerth } from '../src/server/index.ts';
import { apiAs, IMAGE_DIR, REPO, runCli, TEST_REPOS } from './helpers.ts';
import { freshDatabase, ON_POSTGRES, type TestDatabase } from './postgres.ts';

const CA_BUNDLE = '/.berth/ca-certificates.crt';

describe('mirror configuration (pure)', () => {
  const all = [
    { ecosystem: 'npm', url: 'https://nexus.corp/repository/npm/' },
    { ecosystem: 'pypi', url: 'https://nexus.corp/repository/pypi/simple/' },
    { ecosystem: 'go', url: 'https://nexus.corp/repository/go/' },
    { ecosystem: 'crates', url: 'https://nexus.corp/repository/cargo/' },
    { ecosystem: 'maven', url: 'https://nexus.corp/repository/maven-public/?a=<b>&c' },
    { ecosystem: 'apt', url: 'https://nexus.corp/repository/debian/' },
  ] as const;

  test('each ecosystem gets what its tools read: variables for npm, pip, Go and Maven; files for cargo, Maven and apt', () => {
    const c = mirrorConfig(all, { distro: { id: 'debian', codename: 'bookworm' }, caBundle: CA_BUNDLE });
    assert.deepEqual(c.env, [
      'npm_config_registry=https://nexus.corp/repository/npm/',
      'YARN_NPM_REGISTRY_SERVER=https://nexus.corp/repository/npm/',
      'PIP_INDEX_URL=https://nexus.corp/repository/pypi/simple/',
      'UV_DEFAULT_INDEX=https://nexus.corp/repository/pypi/simple/',
      'GOPROXY=https://nexus.corp/repository/go/',
      'MAVEN_ARGS=--global-settings /.berth/mirrors/maven-settings.xml',
    ]);
    assert.deepEqual(c.mounts, [
      { name: 'cargo-config.toml', destination: '/.cargo/config.toml' },
      { name: 'apt.conf', destination: '/etc/apt/apt.conf.d/99berth-mirror' },
    ]);
    // Cargo: crates.io replaced by the sparse index, trusting the bundle with the runner's CA.
    const cargo = c.files['cargo-config.toml']!;
    assert.match(cargo, /^\[source\.crates-io\]\nreplace-with = "berth-mirror"$/m);
    assert.match(cargo, /^\[source\.berth-mirror\]\nregistry = "sparse\+https:\/\/nexus\.corp\/repository\/cargo\/"$/m);
    assert.match(cargo, /^\[http\]\ncainfo = "\/\.berth\/ca-certificates\.crt"$/m);
    // Maven: one mirror of everything, its URL escaped for XML.
    const maven = c.files['maven-settings.xml']!;
    assert.match(maven, /<mirror>\s*<id>berth-mirror<\/id>[\s\S]*<url>https:\/\/nexus\.corp\/repository\/maven-public\/\?a=&lt;b&gt;&amp;c<\/url>\s*<mirrorOf>\*<\/mirrorOf>\s*<\/mirror>/);
    assert.doesNotMatch(maven, /<b>/);
    // apt: the release and its updates from the mirror; the image's own lists are not read.
    assert.equal(c.files['apt-sources.list']!.split('\n').filter((l) => l.startsWith('deb ')).join('\n'),
      'deb https://nexus.corp/repository/debian/ bookworm main\ndeb https://nexus.corp/repository/debian/ bookworm-updates main');
    assert.match(c.files['apt.conf']!, /^Dir::Etc::SourceList "\/\.berth\/mirrors\/apt-sources\.list";$/m);
    assert.match(c.files['apt.conf']!, /^Dir::Etc::SourceParts "\/\.berth\/mirrors\/apt-sources\.list\.d";$/m);
    assert.match(c.files['apt.conf']!, /^Acquire::https::CAInfo "\/\.berth\/ca-certificates\.crt";$/m);
    assert.deepEqual(c.skipped, []);
  });

  test('apt follows the image: Ubuntu gets its components and -security; an image apt cannot be told about is left alone', () => {
    const ubuntu = mirrorConfig([all[5]], { distro: distroOf('NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\nUBUNTU_CODENAME=noble\n'), caBundle: CA_BUNDLE });
    assert.deepEqual(ubuntu.files['apt-sources.list']!.split('\n').filter((l) => l.startsWith('deb ')), [
      'deb https://nexus.corp/repository/debian/ noble main restricted universe multiverse',
      'deb https://nexus.corp/repository/debian/ noble-updates main restricted universe multiverse',
      'deb https://nexus.corp/repository/debian/ noble-security main restricted universe multiverse',
    ]);
    assert.deepEqual(distroOf('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_CODENAME=bookworm\n'), { id: 'debian', codename: 'bookworm' });
    assert.deepEqual(distroOf('ID=linuxmint\nID_LIKE="ubuntu debian"\nVERSION_CODENAME=wilma\nUBUNTU_CODENAME=noble\n'), { id: 'ubuntu', codename: 'noble' });
    assert.equal(distroOf('ID=alpine\nVERSION_ID=3.20.0\n'), null);
    assert.equal(distroOf('ID=kali\nID_LIKE=debian\nVERSION_CODENAME=kali-rolling\n'), null, "a derivative's own codename is no suite of Debian's");
    assert.equal(distroOf('ID=debian\nVERSION_CODENAME="bad name; rm -rf /"\n'), null);
    const alpine = mirrorConfig([all[5]], { distro: null, caBundle: CA_BUNDLE });
    assert.deepEqual(alpine.mounts, []);
    assert.equal(alpine.skipped.length, 1);
    assert.equal(alpine.files['apt-sources.list'], undefined);
    assert.deepEqual(mirrorConfig([], { distro: null, caBundle: CA_BUNDLE }), { files: {}, mounts: [], env: [], skipped: [] });
  });

  test('URLs are checked: http(s), a domain name, no credentials, query or fragment; a trailing / is added', () => {
    assert.equal(checkMirrorUrl('npm', 'https://Nexus.Corp:8443/repository/npm'), 'https://nexus.corp:8443/repository/npm/');
    assert.equal(checkMirrorUrl('go', 'http://proxy.corp/'), 'http://proxy.corp/');
    const refused: [string, RegExp][] = [
      ['https://user:pass@nexus.corp/npm/', /must not carry credentials .*berth secret set NAME --egress-only --host nexus\.corp.*--mirror-secret npm=NAME/],
      ['ftp://nexus.corp/npm/', /https:\/\/ or http:\/\/ URL, not ftp/],
      ['nexus.corp/npm/', /is not a URL: give its full address, e\.g\. npm=https:/],
      ['https://10.1.2.3/npm/', /IP addresses/],
      ['https://[::1]/npm/', /IP addresses/],
      ['https://nexus.corp/npm/?token=x', /no query or fragment/],
      ['https://localhost/npm/', /full domain name/],
    ];
    for (const [url, why] of refused) assert.throws(() => checkMirrorUrl('npm', url), (e: Error) => why.test(e.message), url);
  });

  test('patches merge by ecosystem; a secret must be egress-only for the mirror host, over https', () => {
    const hosts: Record<string, string> = { NEXUS: 'nexus.corp', OTHER: 'other.corp' };
    const at = (n: string) => hosts[n];
    const one = applyMirrorPatch(null, { npm: { url: 'https://nexus.corp/npm', secret: 'NEXUS' }, pypi: { url: 'https://nexus.corp/pypi/simple/' } }, at);
    assert.deepEqual(one, { npm: { url: 'https://nexus.corp/npm/', secret: 'NEXUS' }, pypi: { url: 'https://nexus.corp/pypi/simple/', secret: null } });
    assert.deepEqual(applyMirrorPatch(one, { pypi: null }, at), { npm: { url: 'https://nexus.corp/npm/', secret: 'NEXUS' } });
    assert.equal(applyMirrorPatch(one, { pypi: null, npm: null }, at), null);
    assert.equal(applyMirrorPatch(one, null, at), null);
    assert.throws(() => applyMirrorPatch(null, { nuget: { url: 'https://nexus.corp/' } }, at), /no mirror kind 'nuget': mirrors are for npm, pypi, go, crates, maven, apt/);
    assert.throws(() => applyMirrorPatch(null, { npm: { url: 'https://nexus.corp/', secret: 'NOPE' } }, at), /no egress-only secret 'NOPE' here: set it with `berth secret set NOPE --egress-only --host nexus\.corp`/);
    assert.throws(() => applyMirrorPatch(null, { npm: { url: 'https://nexus.corp/', secret: 'OTHER' } }, at), /sent to other\.corp, not to the npm mirror's host nexus\.corp/);
    assert.throws(() => applyMirrorPatch(null, { npm: { url: 'http://nexus.corp/', secret: 'NEXUS' } }, at), /over TLS only/);
  });

  test("the project's mirror wins per ecosystem; hosts and ports are allowed; credentials come from the secret the mirror names", () => {
    const org = { ...EMPTY_FIELDS, allowDomains: ['example.com'], mirrors: { npm: { url: 'https://nexus.corp/npm/', secret: 'NEXUS' }, go: { url: 'http://goproxy.corp:8081/', secret: null } } };
    const project = { ...EMPTY_FIELDS, mirrors: { npm: { url: 'https://artifacts.team.corp/npm/', secret: 'TEAM' } } };
    const layers = [{ scope: 'environment', fields: EMPTY_FIELDS }, { scope: 'project:web', fields: project }, { scope: 'org', fields: org }];
    const mirrors = resolveMirrors(layers);
    assert.deepEqual(mirrors.map((m) => `${m.ecosystem} ${m.url} ${m.scope}`), ['npm https://artifacts.team.corp/npm/ project:web', 'go http://goproxy.corp:8081/ org']);
    const policy = resolvePolicy(layers);
    assert.deepEqual(policy.allowDomains, ['example.com', 'artifacts.team.corp', 'goproxy.corp']);
    assert.deepEqual(policy.allowPorts, [80, 443, 8081]);
    assert.equal(resolvePolicy([{ scope: 'org', fields: { ...EMPTY_FIELDS, mirrors: { npm: { url: 'https://nexus.corp/npm/', secret: null } } } }]).allowPorts, null, 'a mirror on 443 leaves the ports as they are');
    const secret = (name: string, projectId: string | null, host: string) => ({ orgId: 'org_1', projectId, name, value: `v-${name}-${projectId}`, host, pathPrefix: '/', header: 'Authorization', format: 'Bearer {value}' });
    const secrets = [secret('TEAM', 'prj_1', 'artifacts.team.corp'), secret('TEAM', null, 'artifacts.team.corp'), secret('NEXUS', 'prj_1', 'nexus.corp'), secret('NEXUS', null, 'nexus.corp')];
    assert.deepEqual(mirrorCredentials(mirrors, secrets, 'org_1', 'prj_1').map((c) => `${c.host} ${c.value}`), ['artifacts.team.corp Bearer v-TEAM-prj_1']);
    // The org's mirror takes the org's secret, never a project's of the same name.
    const orgOnly = resolveMirrors([{ scope: 'org', fields: org }]);
    assert.deepEqual(mirrorCredentials(orgOnly, secrets, 'org_1', 'prj_1').map((c) => `${c.host} ${c.value}`), ['nexus.corp Bearer v-NEXUS-null']);
    assert.deepEqual(mirrorCredentials(orgOnly, secrets.map((s) => ({ ...s, host: 'elsewhere.corp' })), 'org_1', null), [], 'a secret for another host is not sent');
    const shared = resolveMirrors([{ scope: 'org', fields: { ...EMPTY_FIELDS, mirrors: { npm: { url: 'https://nexus.corp/npm/', secret: 'NEXUS' }, pypi: { url: 'https://nexus.corp/pypi/', secret: 'NEXUS' } } } }]);
    assert.equal(mirrorCredentials(shared, secrets, 'org_1', null).length, 1, 'two mirrors sharing a secret give the proxy one credential');
  });
});

// ---------------------------------------------------------------------------------------
// A real environment, real npm, pip and apt-get, a local repository manager.

const TOKEN = `mirror-token-${Math.random().toString(36).slice(2)}`;
const MIRROR_HOST = 'mirror.test';
const DEBS = ['python3-pip', 'python3-distutils', 'python3-lib2to3', 'python3-setuptools', 'python3-pkg-resources', 'python3-wheel'];
const DEB_CACHE = join(REPO, '.cache', 'mirror-debs');

interface Seen {
  path: string;
  authorized: boolean;
}

/** Debian's python3-pip and what it needs beyond the default image, fetched once into the cache. */
function debs(): string[] {
  mkdirSync(DEB_CACHE, { recursive: true });
  const have = () => DEBS.every((d) => readdirSync(DEB_CACHE).some((f) => f.startsWith(`${d}_`)));
  if (!have()) {
    const get = () => execFileSync('apt-get', ['download', ...DEBS], { cwd: DEB_CACHE, stdio: 'pipe' });
    try {
      get();
    } catch {
      execFileSync('apt-get', ['update', '-qq'], { stdio: 'pipe' });
      get();
    }
  }
  return readdirSync(DEB_CACHE).filter((f) => f.endsWith('.deb')).map((f) => join(DEB_CACHE, f));
}

const sha = (algo: string, b: Buffer) => createHash(algo).update(b).digest('hex');

/** A Debian archive with `suites`, the debs in the first; Release files clear-signed by a key made here. */
function aptRepository(root: string, gnupg: string, files: string[]): Buffer {
  const gpg = (args: string[]) => execFileSync('gpg', ['--homedir', gnupg, '--batch', '--yes', '--pinentry-mode', 'loopback', '--passphrase', '', ...args], { stdio: 'pipe' });
  gpg(['--quick-gen-key', 'Berth mirror test <mirror@berth.test>', 'ed25519', 'sign', 'never']);
  mkdirSync(join(root, 'pool', 'main'), { recursive: true });
  const entries: string[] = [];
  for (const f of files) {
    const name = f.split('/').at(-1)!;
    copyFileSync(f, join(root, 'pool', 'main', name));
    const b = readFileSync(f);
    const control = execFileSync('dpkg-deb', ['-f', f], { encoding: 'utf8' }).trimEnd();
    entries.push(`${control}\nFilename: pool/main/${name}\nSize: ${b.length}\nMD5sum: ${sha('md5', b)}\nSHA256: ${sha('sha256', b)}\n`);
  }
  for (const [suite, packages] of [['bookworm', entries.join('\n')], ['bookworm-updates', '']] as const) {
    const dir = join(root, 'dists', suite);
    mkdirSync(join(dir, 'main', 'binary-amd64'), { recursive: true });
    writeFileSync(join(dir, 'main', 'binary-amd64', 'Packages'), packages);
    const p = Buffer.from(packages);
    const release = [
      'Origin: Berth test mirror', 'Label: Berth test mirror', `Suite: ${suite}`, `Codename: ${suite}`,
      `Date: ${new Date(Date.now() - 60_000).toUTCString().replace('GMT', 'UTC')}`, 'Architectures: amd64', 'Components: main',
      'SHA256:', ` ${sha('sha256', p)} ${p.length} main/binary-amd64/Packages`, '',
    ].join('\n');
    writeFileSync(join(dir, 'Release'), release);
    gpg(['--clearsign', '-o', join(dir, 'InRelease'), join(dir, 'Release')]);
  }
  return gpg(['--export']);
}

/** An npm tarball and a wheel of one tiny package each. */
function packages(dir: string) {
  const npmDir = join(dir, 'npm', 'package');
  mkdirSync(npmDir, { recursive: true });
  writeFileSync(join(npmDir, 'package.json'), JSON.stringify({ name: 'berth-mirror-probe', version: '1.0.0', main: 'index.js' }));
  writeFileSync(join(npmDir, 'index.js'), "module.exports = 'npm probe from the mirror';\n");
  execFileSync('tar', ['-czf', join(dir, 'probe.tgz'), '-C', join(dir, 'npm'), 'package']);
  const tgz = readFileSync(join(dir, 'probe.tgz'));

  const w = join(dir, 'wheel');
  const info = 'berth_mirror_probe-1.0.0.dist-info';
  mkdirSync(join(w, 'berth_mirror_probe'), { recursive: true });
  mkdirSync(join(w, info));
  const files: Record<string, string> = {
    'berth_mirror_probe/__init__.py': "VALUE = 'pip probe from the mirror'\n",
    [`${info}/METADATA`]: 'Metadata-Version: 2.1\nName: berth-mirror-probe\nVersion: 1.0.0\n',
    [`${info}/WHEEL`]: 'Wheel-Version: 1.0\nGenerator: berth-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n',
  };
  const record = Object.entries(files).map(([p, c]) => `${p},sha256=${createHash('sha256').update(c).digest('base64url')},${Buffer.byteLength(c)}`);
  files[`${info}/RECORD`] = `${record.join('\n')}\n${info}/RECORD,,\n`;
  for (const [p, c] of Object.entries(files)) writeFileSync(join(w, p), c);
  const wheelName = 'berth_mirror_probe-1.0.0-py3-none-any.whl';
  execFileSync('python3', ['-m', 'zipfile', '-c', join(dir, wheelName), 'berth_mirror_probe', info], { cwd: w });
  return { tgz, wheel: readFileSync(join(dir, wheelName)), wheelName };
}

/** The repository manager: npm under /npm/, PyPI's simple index under /pypi/, Debian under /debian/; 401 without the token. */
async function startMirror(dir: string, ca: CertificateAuthority, key: { files: string[] }) {
  const seen: Seen[] = [];
  const gnupg = mkdtempSync(join(tmpdir(), 'berth-mirror-gpg-'));
  const aptRoot = join(dir, 'debian');
  const publicKey = aptRepository(aptRoot, gnupg, key.files);
  const pkg = packages(dir);
  let base = '';
  const leaf = ca.leaf(MIRROR_HOST);
  const server: Server = createServer({ cert: leaf.cert, key: leaf.key }, (req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'https://x').pathname);
    const authorized = req.headers.authorization === `Bearer ${TOKEN}`;
    seen.push({ path, authorized });
    if (!authorized) {
      res.writeHead(401, { 'www-authenticate': 'Bearer realm="mirror"' }).end('a token is needed\n');
      return;
    }
    const send = (type: string, body: string | Buffer) => res.writeHead(200, { 'content-type': type, 'content-length': Buffer.byteLength(body) }).end(body);
    if (path === '/npm/berth-mirror-probe') {
      return send('application/json', JSON.stringify({
        name: 'berth-mirror-probe',
        'dist-tags': { latest: '1.0.0' },
        versions: { '1.0.0': { name: 'berth-mirror-probe', version: '1.0.0', main: 'index.js', dist: {
          tarball: `${base}/npm/berth-mirror-probe/-/berth-mirror-probe-1.0.0.tgz`,
          shasum: sha('sha1', pkg.tgz),
          integrity: `sha512-${createHash('sha512').update(pkg.tgz).digest('base64')}`,
        } } },
      }));
    }
    if (path === '/npm/berth-mirror-probe/-/berth-mirror-probe-1.0.0.tgz') return send('application/octet-stream', pkg.tgz);
    if (path === '/pypi/simple/berth-mirror-probe/') {
      return send('text/html', `<!DOCTYPE html><html><body><a href="${base}/pypi/packages/${pkg.wheelName}#sha256=${sha('sha256', pkg.wheel)}">${pkg.wheelName}</a></body></html>\n`);
    }
    if (path === `/pypi/packages/${pkg.wheelName}`) return send('application/octet-stream', pkg.wheel);
    if (path.startsWith('/debian/') && !path.includes('..')) {
      const file = join(aptRoot, path.slice('/debian/'.length));
      if (existsSync(file) && statSync(file).isFile()) return send('application/octet-stream', readFileSync(file));
    }
    res.writeHead(404).end('not here\n');
  });
  const port = await new Promise<number>((r) => server.listen(0, '127.0.0.1', () => r((server.address() as AddressInfo).port)));
  base = `https://${MIRROR_HOST}:${port}`;
  return {
    base,
    seen,
    publicKey,
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      try {
        execFileSync('gpgconf', ['--homedir', gnupg, '--kill', 'gpg-agent'], { stdio: 'ignore' });
      } catch {
        // No agent was left.
      }
      rmSync(gnupg, { recursive: true, force: true });
    },
  };
}

describe('mirrors in a real environment', () => {
  let dir: string;
  let dataDir: string;
  let database: TestDatabase | undefined;
  let berth: RunningBerth;
  let mirror: Awaited<ReturnType<typeof startMirror>>;
  let token: string;
  const api = (method: string, path: string, body?: unknown) => apiAs({ client: { url: berth.url, token } as never }, token)(method, path, body);
  const cli = (args: string[], input?: string) => runCli(args, { BERTH_DATA_DIR: dataDir }, input);
  const sh = async (script: string) => {
    const r = await api('POST', '/api/orgs/default/environments/mirrored/exec', { cmd: ['sh', '-c', script], timeout: '10m' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body as { exitCode: number; stdout: string; stderr: string };
  };
  const ok = async (script: string) => {
    const r = await sh(script);
    assert.equal(r.exitCode, 0, `${script}\n${r.stdout}\n${r.stderr}`);
    return r.stdout;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'berth-mirrors-'));
    dataDir = mkdtempSync(join(tmpdir(), 'berth-mirrors-data-'));
    const ca = await CertificateAuthority.open(join(dir, 'public-ca'));
    mirror = await startMirror(dir, ca, { files: debs() });
    const resolver: Resolver = async (host) => {
      if (host === MIRROR_HOST) return ['127.0.0.1'];
      throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    };
    database = ON_POSTGRES ? await freshDatabase() : undefined;
    berth = await startBerth({
      dataDir,
      port: 0,
      imageDir: IMAGE_DIR,
      databaseUrl: database?.url,
      logger: pino({ level: process.env.BERTH_TEST_LOG ?? 'silent' }),
      sweepIntervalMs: 3_600_000,
      tokenRateLimit: 1_000_000,
      modelEnv: {},
      repos: TEST_REPOS,
      // The test escape hatch: the "corporate" mirror listens on the host's loopback.
      network: { resolver, allowPrivateAddresses: ['127.0.0.1/32'], upstreamCa: ca.certPem },
    });
    token = (JSON.parse(readFileSync(berth.clientConfigPath, 'utf8')) as { token: string }).token;
  });

  after(async () => {
    const rows = await berth?.database.db.selectFrom('environments').select('id').where('state', '<>', 'deleted').execute();
    for (const { id } of rows ?? []) await berth.runner.remove(id).catch(() => {});
    await berth?.close();
    await database?.drop();
    await mirror?.close();
    for (const d of [dir, dataDir]) if (d) rmSync(d, { recursive: true, force: true });
  });

  test('bad mirrors are refused with what to do, and change nothing', async () => {
    const before = await api('GET', '/api/orgs/default/policies/effective');
    const refused: [string[], RegExp][] = [
      [['--mirror', 'npm=https://me:pw@mirror.test/npm/'], /must not carry credentials/],
      [['--mirror', 'npm=ftp://mirror.test/npm/'], /https:\/\/ or http:\/\//],
      [['--mirror', 'npm=https://127.0.0.1/npm/'], /IP addresses/],
      [['--mirror', 'nuget=https://mirror.test/'], /no mirror kind 'nuget'/],
      [['--mirror', 'npm'], /--mirror takes KIND=URL/],
      [['--mirror-secret', 'npm=X'], /add --mirror npm=URL/],
      [['--mirror', 'npm=https://mirror.test/npm/', '--mirror-secret', 'npm=NOPE'], /no egress-only secret 'NOPE' here: set it with `berth secret set NOPE --egress-only --host mirror\.test`/],
    ];
    for (const [args, why] of refused) {
      const r = await cli(['policy', 'set', ...args]);
      assert.notEqual(r.code, 0, args.join(' '));
      assert.match(r.stderr, why, args.join(' '));
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    }
    assert.deepEqual((await api('GET', '/api/orgs/default/policies/effective')).body, before.body);
  });

  test("a project's mirror wins over the org's for its ecosystem; only admins set mirrors", async () => {
    const repo = mkdtempSync(join(tmpdir(), 'berth-mirrors-repo-'));
    const project = await api('POST', '/api/orgs/default/projects', { name: 'team', repoUrl: repo });
    assert.equal(project.status, 201, JSON.stringify(project.body));
    assert.equal((await cli(['policy', 'set', '--mirror', 'npm=https://org.mirror.test/npm', 'pypi=https://org.mirror.test/pypi/simple/'])).code, 0);
    const set = await cli(['policy', 'set', '--project', 'team', '--mirror', 'npm=https://team.mirror.test/npm/']);
    assert.equal(set.code, 0, set.stderr);
    const eff = JSON.parse((await cli(['policy', 'show', '--project', 'team', '--json'])).stdout).effective;
    assert.deepEqual(eff.mirrors.map((m: { ecosystem: string; url: string; scope: string }) => `${m.ecosystem} ${m.url} ${m.scope}`), [
      'npm https://team.mirror.test/npm/ project:team',
      'pypi https://org.mirror.test/pypi/simple/ org',
    ]);
    assert.deepEqual(eff.allowDomains, ['team.mirror.test', 'org.mirror.test']);
    const list = await cli(['policy', 'list']);
    assert.match(list.stdout, /project:team .*npm=https:\/\/team\.mirror\.test\/npm\//);
    // A member may not point the org's tools somewhere else.
    const member = (await api('POST', '/api/orgs/default/tokens', { role: 'member', name: 'mirrors-member' })).body.token as string;
    const refused = await apiAs({ client: { url: berth.url } as never }, member)('PATCH', '/api/orgs/default/policies/org', { mirrors: { npm: { url: 'https://elsewhere.test/npm/' } } });
    assert.equal(refused.status, 403, JSON.stringify(refused.body));
    assert.equal((await cli(['policy', 'clear', '--project', 'team'])).code, 0);
    assert.equal((await cli(['policy', 'set', '--unset', 'mirrors'])).code, 0);
    rmSync(repo, { recursive: true, force: true });
  });

  test('npm, pip and apt-get in a real environment use the mirrors; the proxy adds the token, which never enters', async () => {
    assert.equal((await cli(['secret', 'set', 'MIRROR_TOKEN', '--egress-only', '--host', MIRROR_HOST], TOKEN)).code, 0);
    const b = mirror.base;
    const set = await cli(['policy', 'set',
      '--mirror', `npm=${b}/npm/`, `pypi=${b}/pypi/simple/`, `apt=${b}/debian/`, `go=${b}/go/`, `crates=${b}/cargo/`, `maven=${b}/maven/`,
      '--mirror-secret', 'npm=MIRROR_TOKEN', 'pypi=MIRROR_TOKEN', 'apt=MIRROR_TOKEN']);
    assert.equal(set.code, 0, set.stderr);
    const shown = await cli(['policy', 'show']);
    assert.match(shown.stdout, new RegExp(`mirrors .*npm ${b}/npm/ \\(secret MIRROR_TOKEN, added by the proxy\\) from org`));
    assert.match(shown.stdout, new RegExp(`domains .*${MIRROR_HOST.replace('.', '\\.')}`));
    const port = new URL(b).port;
    assert.match(shown.stdout, new RegExp(`ports .*${port}`), 'the mirror\'s port is allowed');

    const created = await api('POST', '/api/orgs/default/environments', { name: 'mirrored' });
    assert.equal(created.status, 201, JSON.stringify(created.body));

    // What Berth wrote: variables and files, none of them holding the token.
    const env = await ok('env');
    assert.match(env, new RegExp(`^npm_config_registry=${b}/npm/$`, 'm'));
    assert.match(env, new RegExp(`^PIP_INDEX_URL=${b}/pypi/simple/$`, 'm'));
    assert.match(env, new RegExp(`^GOPROXY=${b}/go/$`, 'm'));
    assert.match(env, /^MAVEN_ARGS=--global-settings \/\.berth\/mirrors\/maven-settings\.xml$/m);
    assert.match(await ok('cat /.cargo/config.toml'), new RegExp(`registry = "sparse\\+${b}/cargo/"`));
    assert.match(await ok('cat /.berth/mirrors/maven-settings.xml'), new RegExp(`<url>${b}/maven/</url>`));
    assert.match(await ok('cat /etc/apt/apt.conf.d/99berth-mirror'), /Dir::Etc::SourceList "\/\.berth\/mirrors\/apt-sources\.list";/);
    assert.match(await ok('cat /.berth/mirrors/apt-sources.list'), new RegExp(`^deb ${b}/debian/ bookworm main$`, 'm'));
    const everything = await ok('env; cat /proc/1/environ | tr "\\0" "\\n"; cat /.berth/mirrors/* /.cargo/config.toml /etc/apt/apt.conf.d/99berth-mirror 2>/dev/null; true');
    assert.ok(!everything.includes(TOKEN), 'the token is nowhere inside');
    // Read-only: the policy's files are not the environment's to change.
    assert.notEqual((await sh('echo x >> /.berth/mirrors/apt-sources.list')).exitCode, 0);

    // apt: the archive is signed with our key, which the environment trusts like a company key.
    await ok(`echo ${mirror.publicKey.toString('base64')} | base64 -d > /etc/apt/trusted.gpg.d/berth-mirror-test.gpg`);
    const update = await ok('apt-get update 2>&1');
    assert.match(update, new RegExp(`Get:\\d+ ${b}/debian bookworm InRelease`));
    assert.doesNotMatch(update, /deb\.debian\.org|security\.debian\.org/, "the image's own sources are not read");
    await ok('DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-pip 2>&1');
    assert.match(await ok('pip --version'), /^pip 23\./);

    // pip: the simple index and the wheel.
    const pip = await ok('pip install --break-system-packages --no-cache-dir berth-mirror-probe 2>&1');
    assert.match(pip, /Successfully installed berth-mirror-probe-1\.0\.0/);
    assert.equal((await ok('cd / && python3 -c "import berth_mirror_probe as p; print(p.VALUE)"')).trim(), 'pip probe from the mirror');

    // npm: metadata and tarball.
    await ok('mkdir -p /tmp/app && cd /tmp/app && npm init -y >/dev/null && npm install --no-audit --no-fund berth-mirror-probe 2>&1');
    assert.equal((await ok('cd /tmp/app && node -p "require(\'berth-mirror-probe\')"')).trim(), 'npm probe from the mirror');
    assert.match(await ok('cd /tmp/app && npm config get registry'), new RegExp(`^${b}/npm/$`, 'm'));

    // Every request reached the mirror with the token the proxy added; none came without.
    const paths = mirror.seen.map((s) => s.path);
    for (const p of ['/debian/dists/bookworm/InRelease', '/npm/berth-mirror-probe', '/npm/berth-mirror-probe/-/berth-mirror-probe-1.0.0.tgz', '/pypi/simple/berth-mirror-probe/']) {
      assert.ok(paths.includes(p), `${p} in ${JSON.stringify(paths)}`);
    }
    assert.ok(paths.some((p) => p.startsWith('/debian/pool/main/python3-pip_')), 'the .deb came from the mirror');
    assert.deepEqual(mirror.seen.filter((s) => !s.authorized), [], 'no request without the token');
    const events = await api('GET', '/api/orgs/default/environments/mirrored/network?limit=1000');
    const rules = new Set((events.body.items as { host: string; rule: string; allowed: boolean }[]).filter((e) => e.host === MIRROR_HOST).map((e) => `${e.allowed} ${e.rule}`));
    assert.ok([...rules].some((r) => /^true allow:default:mirror\.test\+credential:MIRROR_TOKEN$/.test(r)), JSON.stringify([...rules]));
  });

  test('a policy change reaches the environment when it starts again', async () => {
    const own = await cli(['policy', 'set', '--env', 'mirrored', '--mirror', `npm=${mirror.base}/npm/`]);
    assert.notEqual(own.code, 0);
    assert.match(own.stderr, /package mirrors are set for the org or a project, not one environment/);
    const r = await cli(['policy', 'set', '--remove-mirror', 'npm', 'apt']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await api('POST', '/api/orgs/default/environments/mirrored/stop')).status, 200);
    assert.equal((await api('POST', '/api/orgs/default/environments/mirrored/start')).status, 200);
    const env = await ok('env');
    assert.doesNotMatch(env, /npm_config_registry=/);
    assert.match(env, /^PIP_INDEX_URL=/m, 'the others stay');
    assert.match(await ok('npm config get registry'), /^https:\/\/registry\.npmjs\.org\/$/m);
    // The image's apt sources again: the conf file is gone (an empty mount point at most).
    assert.equal((await ok('cat /etc/apt/apt.conf.d/99berth-mirror 2>/dev/null; true')).trim(), '');
    assert.match(await ok('apt-config dump | grep -i "Dir::Etc::sourcelist" || true'), /"sources\.list"/);
    assert.doesNotMatch(await ok('cat /.berth/mirrors/README'), /npm|apt/);

    const cleared = await cli(['policy', 'set', '--unset', 'mirrors']);
    assert.equal(cleared.code, 0, cleared.stderr);
    assert.match((await cli(['policy', 'show'])).stdout, /^mirrors\s+-$/m);
  });
});
