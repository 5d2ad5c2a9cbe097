// Real company networks (issue #13): the settings an instance administrator gives (trusted
// networks, the upstream proxy, NO_PROXY) and what refuses them; the egress proxy chaining
// allowed requests through a real forwarding proxy that counts them, with Proxy-Authorization;
// and a real `npm install` in a real environment from a registry in a trusted network (a
// network namespace this test makes), refused and recorded without the trust.
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomInt } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import * as tar from 'tar';
import { ImageStore, LocalRunner, type EnvironmentSpec } from '../src/runner/index.ts';
import { DEFAULT_LIMITS } from '../src/shared/environment.ts';
import { newId } from '../src/shared/ids.ts';
import { IMAGE_DIR, runCli, runToEnd } from './helpers.ts';
import { freshDatabase, ON_POSTGRES } from './postgres.ts';
import { startBerth } from '../src/server/index.ts';
import { CertificateAuthority } from '../src/runner/network/ca.ts';
import { egressNetworkConfigFrom, summarizeEgressNetwork, bypassesUpstream, isTrusted } from '../src/runner/network/company.ts';
import { checkAddress, EgressProxy, NetworkEventStore, type NetworkUsage } from '../src/runner/network/index.ts';
import { blockListOf } from '../src/runner/network/request-filter.ts';
import { startForwardProxy, type ForwardProxy } from './fakes/forward-proxy.ts';
import { ALLOW_LOOPBACK, basePolicy, hostCurl, NAMES, startOutside, TestPolicies, testResolver, type Outside } from './security/fixtures.ts';

const none = new Set<string>();

describe('company network settings', () => {
  test('trusted networks are read from the flag or the variable, normalized, and shown', () => {
    const c = egressNetworkConfigFrom({ env: { BERTH_EGRESS_TRUSTED_NETWORKS: '10.20.0.0/16, 198.18.0.0/15,fd12:3456::/32' }, hostAddresses: none });
    assert.deepEqual(c.trustedNetworks, ['10.20.0.0/16', '198.18.0.0/15', 'fd12:3456::/32']);
    assert.equal(isTrusted(c.trusted, '10.20.9.9'), true);
    assert.equal(isTrusted(c.trusted, '::ffff:10.20.9.9'), true, 'IPv4-mapped is the same address');
    assert.equal(isTrusted(c.trusted, '10.21.0.1'), false);
    const flag = egressNetworkConfigFrom({ trustedNetworks: ['203.0.113.0/24'], env: { BERTH_EGRESS_TRUSTED_NETWORKS: '10.20.0.0/16' }, hostAddresses: none });
    assert.deepEqual(flag.trustedNetworks, ['203.0.113.0/24'], 'the flag replaces the variable');
    assert.deepEqual(summarizeEgressNetwork(flag), { trustedNetworks: ['203.0.113.0/24'], upstreamProxy: null, noProxy: [] });
  });

  test('what can never be trusted is refused at start with a message naming it', () => {
    const refuse = (cidr: string, pattern: RegExp, hostAddresses: ReadonlySet<string> = none) =>
      assert.throws(() => egressNetworkConfigFrom({ env: { BERTH_EGRESS_TRUSTED_NETWORKS: cidr }, hostAddresses }), pattern, cidr);
    refuse('169.254.169.0/24', /169\.254\.169\.0\/24 overlaps 169\.254\.0\.0\/16 \(link-local \(cloud metadata at 169\.254\.169\.254\)\), which can never be trusted/);
    refuse('169.254.169.254', /cloud metadata/);
    refuse('127.0.0.0/8', /loopback/);
    refuse('::1', /loopback/);
    refuse('0.0.0.0/0', /can never be trusted/);
    refuse('fe80::/64', /link-local/);
    refuse('fd00::/8', /fd00:ec2::254\/128 \(cloud metadata\)/);
    refuse('100.96.0.0/16', /the runner's environment network 100\.96\.0\.0\/11/);
    refuse('10.0.0.0/8', /contains 10\.1\.2\.3, an address of this host/, new Set(['10.1.2.3']));
    refuse('10.20.1.0/16', /has bits set past its \/16 prefix: did you mean 10\.20\.0\.0\/16\?/);
    refuse('10.20.0.0/33', /prefix length must be 0 to 32/);
    refuse('corp.example', /is not a network: write an address and prefix length/);
    // The host's real addresses, as they are now: none can be trusted.
    assert.throws(() => egressNetworkConfigFrom({ trustedNetworks: ['127.0.0.1/32'] }), /--trusted-network: 127\.0\.0\.1\/32 overlaps/);
  });

  test('even a trusted network never opens this host\'s own addresses or loopback to the proxy', () => {
    const c = egressNetworkConfigFrom({ env: { BERTH_EGRESS_TRUSTED_NETWORKS: '10.20.0.0/16' }, hostAddresses: none });
    const trusted = (a: string) => isTrusted(c.trusted, a);
    assert.equal(checkAddress('10.20.0.5', { trusted }), null);
    assert.equal(checkAddress('10.20.0.5', { trusted, hostAddresses: new Set(['10.20.0.5']) }), 'deny:private-address:10.20.0.5', 'a host address added after start stays refused');
    assert.equal(checkAddress('10.21.0.5', { trusted }), 'deny:private-address:10.21.0.5');
    assert.equal(checkAddress('127.0.0.1', { trusted: () => true }), 'deny:private-address:127.0.0.1', 'loopback stays refused whatever the predicate says');
    assert.equal(checkAddress('169.254.169.254', { trusted: () => true }), 'deny:private-address:169.254.169.254');
    assert.equal(isTrusted(blockListOf(['127.0.0.0/8', '169.254.0.0/16']), '169.254.169.254'), false);
    assert.equal(isTrusted(blockListOf(['127.0.0.0/8']), '127.0.0.1'), false);
  });

  test('the upstream proxy URL: credentials become Proxy-Authorization and are never shown', () => {
    const c = egressNetworkConfigFrom({ upstreamProxy: 'http://build%40corp:s3cr%3At@proxy.corp.example:3128', env: { BERTH_EGRESS_UPSTREAM_NO_PROXY: '.corp.example, 10.0.0.0/8' }, hostAddresses: none });
    assert.equal(c.upstreamProxy?.authorization, `Basic ${Buffer.from('build@corp:s3cr:t').toString('base64')}`);
    assert.deepEqual(summarizeEgressNetwork(c), { trustedNetworks: [], upstreamProxy: 'http://proxy.corp.example:3128', noProxy: ['.corp.example', '10.0.0.0/8'] });
    assert.doesNotMatch(JSON.stringify(c), /s3cr|Basic/, 'a serialized config carries no credential');
    const dir = mkdtempSync(join(tmpdir(), 'berth-upstream-password-'));
    writeFileSync(join(dir, 'password'), 'from-file\n');
    const f = egressNetworkConfigFrom({ env: { BERTH_EGRESS_UPSTREAM_PROXY: 'http://build@proxy:8080', BERTH_EGRESS_UPSTREAM_PROXY_PASSWORD_FILE: join(dir, 'password') }, hostAddresses: none });
    assert.equal(f.upstreamProxy?.authorization, `Basic ${Buffer.from('build:from-file').toString('base64')}`);
    rmSync(dir, { recursive: true, force: true });
    const refuse = (input: Parameters<typeof egressNetworkConfigFrom>[0], pattern: RegExp) => assert.throws(() => egressNetworkConfigFrom({ hostAddresses: none, env: {}, ...input }), pattern);
    refuse({ upstreamProxy: 'https://proxy:3128' }, /only http:\/\/ upstream proxies are supported/);
    refuse({ upstreamProxy: 'proxy:3128' }, /only http:\/\//);
    refuse({ upstreamProxy: 'not a url' }, /must be a URL such as http:\/\/proxy\.corp\.example:3128/);
    refuse({ upstreamProxy: 'http://proxy:3128/path' }, /no path/);
    refuse({ upstreamProxy: 'http://127.0.0.1:8080', controlPlanePort: 8080 }, /is this host's control plane port/);
    refuse({ upstreamProxy: 'http://localhost:8080', controlPlanePort: 8080 }, /control plane port/);
    refuse({ env: { BERTH_EGRESS_UPSTREAM_NO_PROXY: 'corp.example' } }, /BERTH_EGRESS_UPSTREAM_NO_PROXY is set but there is no upstream proxy/);
    refuse({ upstreamProxy: 'http://p:1', env: { BERTH_EGRESS_UPSTREAM_NO_PROXY: 'a b' } }, /is not a domain, address or CIDR/);
    refuse({ upstreamProxy: 'http://p:1', env: { BERTH_EGRESS_UPSTREAM_PROXY_PASSWORD_FILE: '/nonexistent/berth' } }, /names no user/);
  });

  test('NO_PROXY as curl reads it: a domain and the names below it, addresses and CIDRs, or *', () => {
    assert.equal(bypassesUpstream(['corp.example'], 'git.corp.example', undefined), true);
    assert.equal(bypassesUpstream(['.corp.example'], 'corp.example', undefined), true);
    assert.equal(bypassesUpstream(['corp.example'], 'evilcorp.example', undefined), false);
    assert.equal(bypassesUpstream(['10.0.0.0/8'], 'anything.example', '10.9.9.9'), true);
    assert.equal(bypassesUpstream(['10.0.0.0/8'], 'anything.example', '11.0.0.1'), false);
    assert.equal(bypassesUpstream(['*'], 'x.example', undefined), true);
  });
});

describe('berth up with a company network', () => {
  test('a trusted network that can never be trusted stops the start before anything is made', async () => {
    const dataDir = join(mkdtempSync(join(tmpdir(), 'berth-up-refused-')), 'data');
    await assert.rejects(
      startBerth({ dataDir, port: 0, imageDir: IMAGE_DIR, egressNetwork: { trustedNetworks: ['169.254.169.254/32'] } }),
      /--trusted-network: 169\.254\.169\.254\/32 overlaps 169\.254\.0\.0\/16 .*can never be trusted/,
    );
    assert.throws(() => readFileSync(join(dataDir, 'client.json')), /ENOENT/);
    rmSync(join(dataDir, '..'), { recursive: true, force: true });
  });

  test('berth runner list and the runners API show the trusted networks and the upstream proxy, never its password', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'berth-up-company-'));
    const database = ON_POSTGRES ? await freshDatabase() : undefined;
    process.env.BERTH_EGRESS_UPSTREAM_NO_PROXY = '.corp.test,10.77.0.0/16';
    const berth = await startBerth({
      dataDir, port: 0, imageDir: IMAGE_DIR, databaseUrl: database?.url, modelEnv: {}, runnerHeartbeatMs: 300,
      logger: pino({ level: process.env.BERTH_TEST_LOG ?? 'silent' }),
      egressNetwork: { trustedNetworks: ['10.77.0.0/16', '198.18.64.0/18'], upstreamProxy: 'http://build:hunter2-upstream@proxy.corp.test:3128' },
    });
    delete process.env.BERTH_EGRESS_UPSTREAM_NO_PROXY;
    try {
      const r = await runCli(['runner', 'list'], { BERTH_DATA_DIR: dataDir });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /local egress:\n {2}trusted networks: 10\.77\.0\.0\/16, 198\.18\.64\.0\/18\n {2}upstream proxy: http:\/\/proxy\.corp\.test:3128 \(not for \.corp\.test, 10\.77\.0\.0\/16\)\n/);
      const json = await runCli(['runner', 'list', '--json'], { BERTH_DATA_DIR: dataDir });
      const [local] = JSON.parse(json.stdout);
      assert.deepEqual(local.network, { egressProxy: true, nftables: true, trustedNetworks: ['10.77.0.0/16', '198.18.64.0/18'], upstreamProxy: 'http://proxy.corp.test:3128', noProxy: ['.corp.test', '10.77.0.0/16'] });
      assert.doesNotMatch(r.stdout + json.stdout, /hunter2/);
    } finally {
      await berth.close();
      await database?.drop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe('egress through the company\'s upstream proxy', () => {
  const PASSWORD = `pw-${Math.random().toString(36).slice(2)}`;
  const SECRET = `berth-upstream-credential-${Math.random().toString(36).slice(2)}`;
  const ENV = 'env_upstream';
  let outside: Outside;
  let upstream: ForwardProxy;
  let proxy: EgressProxy;
  let direct: EgressProxy;
  let proxyUrl: string;
  let directUrl: string;
  let caFile: string;
  let runnerCaFile: string;
  const dir = mkdtempSync(join(tmpdir(), 'berth-upstream-'));
  const events = new NetworkEventStore();
  const usage = (): NetworkUsage => ({ bytesUp: 0, bytesDown: 0, connections: 0, open: 0, refused: 0, peak: 0 });

  before(async () => {
    outside = await startOutside();
    upstream = await startForwardProxy({ credentials: `build:${PASSWORD}`, names: NAMES });
    const runnerCa = await CertificateAuthority.open(join(dir, 'ca'));
    caFile = join(dir, 'outside-ca.pem');
    writeFileSync(caFile, outside.caPem);
    runnerCaFile = join(dir, 'runner-ca.pem');
    writeFileSync(runnerCaFile, runnerCa.certPem);
    const policies = new TestPolicies({
      allowDomains: ['outside.test', 'api.outside.test', 'other.outside.test'],
      allowPorts: [outside.httpPort, outside.httpsPort],
      credentials: [{ host: 'api.outside.test', pathPrefix: '/v1', header: 'authorization', value: `Bearer ${SECRET}`, name: 'api' }],
    });
    const env = { BERTH_EGRESS_UPSTREAM_PROXY: `http://build:${PASSWORD}@127.0.0.1:${upstream.port}`, BERTH_EGRESS_UPSTREAM_NO_PROXY: 'other.outside.test' };
    const common = { environmentId: ENV, policies, events, resolver: testResolver, ca: async () => runnerCa, upstreamCa: outside.caPem, allowPrivate: blockListOf(ALLOW_LOOPBACK) };
    proxy = new EgressProxy({ ...common, usage: usage(), egressNetwork: egressNetworkConfigFrom({ env, hostAddresses: none }) });
    await proxy.listen(0, '127.0.0.1');
    proxyUrl = `http://127.0.0.1:${proxy.address().port}`;
    // The same upstream with NO_PROXY '*': everything goes directly.
    direct = new EgressProxy({ ...common, usage: usage(), egressNetwork: egressNetworkConfigFrom({ env: { ...env, BERTH_EGRESS_UPSTREAM_NO_PROXY: '*' }, hostAddresses: none }) });
    await direct.listen(0, '127.0.0.1');
    directUrl = `http://127.0.0.1:${direct.address().port}`;
  });
  after(async () => {
    await proxy?.close();
    await direct?.close();
    await upstream?.close();
    await outside?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const since = (n: number) => events.events(ENV).slice(n);

  test('HTTPS: the egress proxy decides, then tunnels by CONNECT through the upstream proxy with its Proxy-Authorization', async () => {
    const before = upstream.forwarded.length;
    const n = events.events(ENV).length;
    const r = await hostCurl(['-x', proxyUrl, '--cacert', caFile, `https://outside.test:${outside.httpsPort}/secure`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `hello GET /secure host=outside.test:${outside.httpsPort}\n`);
    assert.deepEqual(upstream.forwarded.slice(before), [{ kind: 'connect', target: `outside.test:${outside.httpsPort}`, method: 'CONNECT' }]);
    await until(() => since(n).some((e) => e.kind === 'connect'));
    const e = since(n).find((x) => x.kind === 'connect')!;
    assert.deepEqual([e.allowed, e.rule, e.status], [true, 'allow:environment:outside.test', 200]);
    assert.ok(e.bytesDown > 0 && e.bytesUp > 0);
  });

  test('plain HTTP goes to the upstream proxy as an absolute URI, with its Proxy-Authorization', async () => {
    const before = upstream.forwarded.length;
    const seen = outside.seen.length;
    const r = await hostCurl(['-x', proxyUrl, `http://outside.test:${outside.httpPort}/plain?q=1`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `hello GET /plain?q=1 host=outside.test:${outside.httpPort}\n`);
    assert.deepEqual(upstream.forwarded.slice(before), [{ kind: 'http', target: `http://outside.test:${outside.httpPort}/plain?q=1`, method: 'GET' }]);
    assert.equal(outside.seen[seen]?.headers['proxy-authorization'], undefined, 'the credential for the upstream proxy stops there');
    const e = events.events(ENV).at(-1)!;
    assert.deepEqual([e.kind, e.allowed, e.path, e.status], ['http', true, '/plain?q=1', 200]);
  });

  test('credentials are added before the hop: TLS the proxy terminates goes on through CONNECT', async () => {
    const before = upstream.forwarded.length;
    const seen = outside.seen.length;
    const r = await hostCurl(['-x', proxyUrl, '--cacert', runnerCaFile, `https://api.outside.test:${outside.httpsPort}/v1/models`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `hello GET /v1/models host=api.outside.test:${outside.httpsPort}\n`);
    assert.deepEqual(upstream.forwarded.slice(before), [{ kind: 'connect', target: `api.outside.test:${outside.httpsPort}`, method: 'CONNECT' }]);
    assert.equal(outside.seen[seen]?.headers.authorization, `Bearer ${SECRET}`);
    assert.equal(outside.seen[seen]?.tls, true);
    const e = events.events(ENV).find((x) => x.path === '/v1/models')!;
    assert.equal(e.rule, 'allow:environment:api.outside.test+credential:api');
  });

  test('a refused request never reaches the upstream proxy', async () => {
    const before = upstream.forwarded.length;
    const r = await hostCurl(['-x', proxyUrl, '-w', '%{http_code}', `http://elsewhere.test:${outside.httpPort}/`]);
    assert.match(r.stdout, /403$/);
    const t = await hostCurl(['-x', proxyUrl, `https://elsewhere.test:${outside.httpsPort}/`]);
    assert.notEqual(t.code, 0);
    assert.equal(upstream.forwarded.length, before);
  });

  test('NO_PROXY destinations are reached directly; * sends everything directly', async () => {
    const before = upstream.forwarded.length;
    const r = await hostCurl(['-x', proxyUrl, '--cacert', caFile, `https://other.outside.test:${outside.httpsPort}/bypass`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `hello GET /bypass host=other.outside.test:${outside.httpsPort}\n`);
    const all = await hostCurl(['-x', directUrl, `http://outside.test:${outside.httpPort}/direct`]);
    assert.equal(all.stdout, `hello GET /direct host=outside.test:${outside.httpPort}\n`);
    const tls = await hostCurl(['-x', directUrl, '--cacert', caFile, `https://outside.test:${outside.httpsPort}/direct`]);
    assert.equal(tls.code, 0, tls.stderr);
    assert.equal(upstream.forwarded.length, before, 'the upstream proxy forwarded none of them');
  });

  test('wrong upstream credentials: a 502 that names the upstream proxy, never the password', async () => {
    const env = { BERTH_EGRESS_UPSTREAM_PROXY: `http://build:wrong-${PASSWORD}@127.0.0.1:${upstream.port}` };
    const policies = new TestPolicies({ allowDomains: ['outside.test'], allowPorts: [outside.httpsPort] });
    const wrong = new EgressProxy({ environmentId: 'env_wrong', policies, events, usage: usage(), resolver: testResolver, allowPrivate: blockListOf(ALLOW_LOOPBACK), egressNetwork: egressNetworkConfigFrom({ env, hostAddresses: none }) });
    await wrong.listen(0, '127.0.0.1');
    try {
      const refusedBefore = upstream.refused;
      const r = await hostCurl(['-x', `http://127.0.0.1:${wrong.address().port}`, '-v', `https://outside.test:${outside.httpsPort}/`]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /< HTTP\/1\.1 502/);
      assert.equal(upstream.refused, refusedBefore + 1);
      await until(() => events.events('env_wrong').length > 0);
      const e = events.events('env_wrong')[0]!;
      assert.deepEqual([e.kind, e.allowed, e.status], ['connect', true, 502]);
      assert.match(e.error ?? '', /the upstream proxy http:\/\/127\.0\.0\.1:\d+ refused it: HTTP\/1\.1 407/);
      assert.doesNotMatch(JSON.stringify(events.events('env_wrong')) + r.stderr, new RegExp(PASSWORD));
    } finally {
      await wrong.close();
    }
  });
});

describe('npm install from a registry in a trusted network', () => {
  // The company network: a namespace of this test's behind a veth pair, the host routing a
  // /28 of 203.0.113.0/24 (documentation space) to it, a registry-shaped server inside
  // answering on the /28 and on its veth address, which is outside the trusted network.
  const tag = randomInt(0, 1 << 16).toString(16).padStart(4, '0');
  const ns = `bt-trusted-${tag}`;
  const hostIf = `btn${tag}h`;
  const nsIf = `btn${tag}n`;
  const link = randomInt(0, 64) * 4;
  const hostEnd = `198.19.${randomInt(0, 256)}.${link + 1}`;
  const nsEnd = hostEnd.replace(/\d+$/, String(link + 2));
  const corp = randomInt(0, 16) * 16;
  const trustedNet = `203.0.113.${corp}/28`;
  const registryAddress = `203.0.113.${corp + 10}`;
  const names: Record<string, string[]> = { 'registry.corp.test': [registryAddress], 'untrusted.corp.test': [nsEnd] };
  const resolver = async (host: string) => {
    const a = names[host];
    if (!a) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    return a;
  };
  const logger = pino({ level: process.env.BERTH_TEST_LOG ?? 'silent' });
  const dir = mkdtempSync(join(tmpdir(), 'berth-trusted-'));
  const requests: string[] = [];
  const events = new NetworkEventStore();
  let server: ChildProcess | undefined;
  let runner: LocalRunner;
  let spec: EnvironmentSpec;
  const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });

  before(async () => {
    ip('netns', 'add', ns);
    ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf);
    ip('link', 'set', nsIf, 'netns', ns);
    ip('addr', 'add', `${hostEnd}/30`, 'dev', hostIf);
    ip('link', 'set', hostIf, 'up');
    ip('-n', ns, 'addr', 'add', `${nsEnd}/30`, 'dev', nsIf);
    ip('-n', ns, 'addr', 'add', `${registryAddress}/28`, 'dev', 'lo');
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    ip('-n', ns, 'link', 'set', nsIf, 'up');
    ip('route', 'add', trustedNet, 'via', nsEnd, 'dev', hostIf);

    // A package as the npm registry serves it: metadata naming a tarball, with its hashes.
    mkdirSync(join(dir, 'package'));
    writeFileSync(join(dir, 'package', 'package.json'), JSON.stringify({ name: 'berth-trusted-demo', version: '1.0.0', main: 'index.js' }));
    writeFileSync(join(dir, 'package', 'index.js'), "module.exports = 'served from the trusted network';\n");
    const tgz = join(dir, 'berth-trusted-demo-1.0.0.tgz');
    await tar.c({ gzip: true, file: tgz, cwd: dir, portable: true }, ['package']);
    const bytes = readFileSync(tgz);
    const dist = { shasum: createHash('sha1').update(bytes).digest('hex'), integrity: `sha512-${createHash('sha512').update(bytes).digest('base64')}` };
    writeFileSync(join(dir, 'registry.mjs'), REGISTRY.replace(/\b(DIST|TGZ)\b/g, (name) => JSON.stringify(name === 'DIST' ? dist : tgz)));
    server = spawn('ip', ['netns', 'exec', ns, process.execPath, join(dir, 'registry.mjs')], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      server!.once('exit', (code) => reject(new Error(`the registry exited (${code})`)));
      server!.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
        for (const line of chunk.split('\n').filter(Boolean)) {
          if (line === 'listening') resolve();
          else requests.push(line);
        }
      });
    });

    const images = new ImageStore({ dir: IMAGE_DIR, logger });
    const policies = new TestPolicies();
    policies.policy = basePolicy({ allowDomains: ['registry.corp.test', 'untrusted.corp.test'] });
    // Made now: the veth's host end is one of this host's addresses, which no trusted network may hold.
    const egressNetwork = egressNetworkConfigFrom({ trustedNetworks: [trustedNet], env: {} });
    runner = new LocalRunner({ dataDir: join(dir, 'data'), images, logger, network: { policies, events, resolver, egressNetwork } });
    spec = { id: newId('env'), hostname: 'npm-trusted', image: await images.resolve('default'), limits: DEFAULT_LIMITS };
    await runner.start(spec);
  });

  after(async () => {
    await runner?.remove(spec.id).catch(() => {});
    runner?.close();
    if (server?.pid) process.kill(server.pid);
    try {
      ip('route', 'del', trustedNet);
    } catch {}
    try {
      ip('netns', 'del', ns);
    } catch {}
    try {
      ip('link', 'del', hostIf);
    } catch {}
    rmSync(dir, { recursive: true, force: true });
  });

  const npm = (registry: string) => runToEnd(runner.exec(spec, {
    cmd: ['sh', '-c', `mkdir -p /tmp/app && cd /tmp/app && rm -rf node_modules package-lock.json && npm install --no-audit --no-fund --no-update-notifier --registry ${registry} berth-trusted-demo && node -e "console.log(require('berth-trusted-demo'))"`],
    timeoutMs: 180_000,
  }));

  test('a name the policy allows, resolving into the trusted network: npm installs from it', async () => {
    const before = requests.length;
    const r = await npm('http://registry.corp.test/');
    assert.equal(r.exitCode, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /served from the trusted network/);
    const served = requests.slice(before);
    assert.ok(served.includes(`GET /berth-trusted-demo registry.corp.test ${hostEnd}`), served.join('\n'));
    assert.ok(served.includes(`GET /berth-trusted-demo/-/berth-trusted-demo-1.0.0.tgz registry.corp.test ${hostEnd}`), served.join('\n'));
    const recorded = events.events(spec.id).filter((e) => e.host === 'registry.corp.test');
    assert.ok(recorded.length >= 2 && recorded.every((e) => e.allowed && e.rule === 'allow:environment:registry.corp.test+trusted-network'), JSON.stringify(recorded));
  });

  test('the same server on an address outside the trusted network: refused, recorded, never reached', async () => {
    const before = requests.length;
    const r = await npm('http://untrusted.corp.test/');
    assert.notEqual(r.exitCode, 0, r.stdout);
    assert.match(r.stderr, /403/);
    assert.deepEqual(requests.slice(before), [], 'the registry saw nothing');
    const refused = events.events(spec.id).filter((e) => e.host === 'untrusted.corp.test');
    assert.ok(refused.length >= 1 && refused.every((e) => !e.allowed && e.status === 403 && e.rule === `deny:private-address:${nsEnd}`), JSON.stringify(refused));
  });

  test('the same registry and name through a proxy without the trust: npm is refused, and the refusal recorded as before', async () => {
    const policies = new TestPolicies({ allowDomains: ['registry.corp.test'] });
    const untrusted = new EgressProxy({ environmentId: 'env_untrusted', policies, events, resolver, usage: { bytesUp: 0, bytesDown: 0, connections: 0, open: 0, refused: 0, peak: 0 } });
    await untrusted.listen(0, '127.0.0.1');
    const before = requests.length;
    try {
      const app = join(dir, 'host-app');
      mkdirSync(app, { recursive: true });
      writeFileSync(join(app, 'package.json'), '{"name":"host-app","version":"1.0.0"}');
      const r = await new Promise<{ code: number | null; out: string }>((resolve) => {
        const child = spawn('npm', ['install', '--no-audit', '--no-fund', '--no-update-notifier', '--fetch-retries=0', '--cache', join(dir, 'npm-cache'), '--registry', 'http://registry.corp.test/', '--proxy', `http://127.0.0.1:${untrusted.address().port}`, 'berth-trusted-demo'], { cwd: app, stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        child.stdout.on('data', (b: Buffer) => (out += b));
        child.stderr.on('data', (b: Buffer) => (out += b));
        child.on('exit', (code) => resolve({ code, out }));
      });
      assert.notEqual(r.code, 0, r.out);
      assert.match(r.out, /403/);
      assert.deepEqual(requests.slice(before), [], 'the registry saw nothing');
      const refused = events.events('env_untrusted');
      assert.ok(refused.length >= 1 && refused.every((e) => e.host === 'registry.corp.test' && !e.allowed && e.status === 403 && e.rule === `deny:private-address:${registryAddress}`), JSON.stringify(refused));
    } finally {
      await untrusted.close();
    }
  });
});

/**
 * The registry: a package's metadata and tarball as registry.npmjs.org answers them; one stdout line per request.
 * DIST and TGZ are filled in one pass: the integrity is base64 and may itself contain "TGZ".
 */
const REGISTRY = `
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
const dist = DIST;
const tgz = readFileSync(TGZ);
const server = createServer((req, res) => {
  console.log(req.method + ' ' + req.url + ' ' + req.headers.host + ' ' + req.socket.remoteAddress);
  const base = 'http://' + req.headers.host;
  if (req.url === '/berth-trusted-demo') {
    const doc = { name: 'berth-trusted-demo', 'dist-tags': { latest: '1.0.0' }, versions: { '1.0.0': { name: 'berth-trusted-demo', version: '1.0.0', main: 'index.js', dist: { ...dist, tarball: base + '/berth-trusted-demo/-/berth-trusted-demo-1.0.0.tgz' } } } };
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify(doc));
  }
  if (req.url === '/berth-trusted-demo/-/berth-trusted-demo-1.0.0.tgz') {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': tgz.length });
    return res.end(tgz);
  }
  res.writeHead(404, { 'content-type': 'application/json' });
  res.end('{"error":"not found"}');
});
server.listen(80, '0.0.0.0', () => console.log('listening'));
`;


async function until(check: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 20));
  }
}
