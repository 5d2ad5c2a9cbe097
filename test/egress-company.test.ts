// Real company networks (issue #13): the settings an instance administrator gives (trusted
// networks, the upstream proxy, NO_PROXY) and what refuses them; the egress proxy chaining
// allowed requests through a real forwarding proxy that counts them, with Proxy-Authorization;
// and a real `npm install` in a real environment from a registry in a trusted network (a
// network namespace this test makes), refused and recorded without the trust.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CertificateAuthority } from '../src/runner/network/ca.ts';
import { egressNetworkConfigFrom, summarizeEgressNetwork, bypassesUpstream, isTrusted } from '../src/runner/network/company.ts';
import { checkAddress, EgressProxy, NetworkEventStore, type NetworkUsage } from '../src/runner/network/index.ts';
import { blockListOf } from '../src/runner/network/request-filter.ts';
import { startForwardProxy, type ForwardProxy } from './fakes/forward-proxy.ts';
import { ALLOW_LOOPBACK, hostCurl, NAMES, startOutside, TestPolicies, testResolver, type Outside } from './security/fixtures.ts';

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

async function until(check: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 20));
  }
}
