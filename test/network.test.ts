// The environment network: the allow/deny decision (pure), the egress proxy on the
// host's loopback against local "outside" servers, and the runner giving a real
// environment its namespace, rules and proxy across start, stop, restart and remove.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { ImageStore, LocalRunner, type EnvironmentSpec } from '../src/runner/index.ts';
import { CertificateAuthority } from '../src/runner/network/ca.ts';
import { checkAddress, decide, EgressProxy, NetworkEventStore, type NetworkUsage } from '../src/runner/network/index.ts';
import { blockListOf } from '../src/runner/network/request-filter.ts';
import { hostBatch, insideBatch, netnsNames, pairAddresses, ruleset } from '../src/runner/network/netns.ts';
import { parseRefusedSet, refusalEvent, refusalRule, refusalSignal, sinceLastRead, type Refusal } from '../src/runner/network/firewall-log.ts';
import { ociConfig } from '../src/runner/bundle.ts';
import { DEFAULT_LIMITS } from '../src/shared/environment.ts';
import { newId } from '../src/shared/ids.ts';
import { IMAGE_DIR, runToEnd } from './helpers.ts';
import { ALLOW_LOOPBACK, basePolicy, hostCurl, startOutside, TestPolicies, testResolver, type Outside } from './security/fixtures.ts';

const logger = pino({ level: process.env.BERTH_TEST_LOG ?? 'silent' });

describe('request filter', () => {
  const http = (host: string, port = 80, method = 'GET') => ({ kind: 'http' as const, host, port, method });
  const tunnel = (host: string, port = 443) => ({ kind: 'connect' as const, host, port, method: null });

  test('exact names and wildcards; a wildcard covers names below it, not the name itself', () => {
    const p = basePolicy({ allowDomains: ['api.example.com', '*.example.org'] });
    assert.equal(decide(p, tunnel('api.example.com')).rule, 'allow:environment:api.example.com');
    assert.equal(decide(p, tunnel('API.Example.COM.')).allowed, true, 'case and a trailing dot do not matter');
    assert.equal(decide(p, tunnel('www.example.com')).allowed, false);
    assert.equal(decide(p, tunnel('a.b.example.org')).rule, 'allow:environment:*.example.org');
    assert.equal(decide(p, tunnel('example.org')).allowed, false);
    assert.equal(decide(p, tunnel('evilexample.org')).allowed, false);
    assert.equal(decide(p, tunnel('example.org.evil.com')).allowed, false);
    assert.equal(decide(p, tunnel('nothing.test')).rule, 'deny:environment:not-allowed');
  });

  test('presets name the registries, and the rule says which preset allowed', () => {
    const p = basePolicy({ presets: ['npm', 'pypi', 'github', 'debian', 'go', 'crates', 'ubuntu'], scope: 'project:web' });
    for (const host of ['registry.npmjs.org', 'files.pythonhosted.org', 'codeload.github.com', 'objects.githubusercontent.com', 'deb.debian.org', 'proxy.golang.org', 'static.crates.io', 'de.archive.ubuntu.com']) {
      assert.equal(decide(p, tunnel(host)).allowed, true, host);
    }
    assert.equal(decide(p, tunnel('registry.npmjs.org')).rule, 'allow:project:web:preset:npm');
    assert.equal(decide(basePolicy({ presets: ['no-such-preset'] }), tunnel('registry.npmjs.org')).allowed, false);
  });

  test('ports default to 80 and 443; methods limit plain HTTP only', () => {
    const p = basePolicy({ allowDomains: ['example.com'] });
    assert.equal(decide(p, tunnel('example.com', 22)).rule, 'deny:environment:port:22');
    assert.equal(decide(basePolicy({ allowDomains: ['example.com'], allowPorts: [8443] }), tunnel('example.com', 8443)).allowed, true);
    const get = basePolicy({ allowDomains: ['example.com'], allowMethods: ['GET', 'head'] });
    assert.equal(decide(get, http('example.com', 80, 'HEAD')).allowed, true);
    assert.equal(decide(get, http('example.com', 80, 'POST')).rule, 'deny:environment:method:POST');
    assert.equal(decide(get, tunnel('example.com')).allowed, true, 'a tunnel has no visible method');
  });

  test('addresses are never names: IPv4, IPv6, decimal and hex forms are refused even if listed', () => {
    const p = basePolicy({ allowDomains: ['127.0.0.1', '*'] });
    for (const host of ['127.0.0.1', '[::1]', '::ffff:127.0.0.1', '2130706433', '0x7f000001', '169.254.169.254', '1.1.1.1']) {
      const d = decide(p, tunnel(host));
      assert.equal(d.allowed, false, host);
      assert.match(d.rule, /^deny:(ip-address|invalid-host)/, host);
    }
  });

  test('resolved addresses: private, loopback, link-local, metadata, mapped and ULA are refused; the hatch opens only what it names', () => {
    for (const a of ['127.0.0.1', '10.0.0.1', '172.16.5.4', '192.168.1.1', '169.254.169.254', '100.100.100.200', '0.0.0.0', '::1', '::ffff:127.0.0.1', '::ffff:7f00:1', 'fe80::1', 'fd00::1', '::', '224.0.0.1']) {
      assert.match(checkAddress(a) ?? 'allowed', /^deny:private-address:/, a);
    }
    assert.equal(checkAddress('93.184.216.34'), null);
    assert.equal(checkAddress('2606:2800:220:1:248:1893:25c8:1946'), null);
    assert.equal(checkAddress('1.2.3.4', { hostAddresses: new Set(['1.2.3.4']) }), 'deny:host-address:1.2.3.4');
    const hatch = blockListOf(['127.0.0.1/32']);
    assert.equal(checkAddress('127.0.0.1', { allowPrivate: hatch }), null);
    assert.match(checkAddress('127.0.0.2', { allowPrivate: hatch }) ?? '', /^deny:private-address/);
  });
});

describe('namespace plan', () => {
  test('names fit the kernel, addresses are a /31 inside the subnet, and the rules let out only the proxy', () => {
    const { name, hostIf } = netnsNames('/var/lib/berth', 'env_abcdefghijkl');
    assert.ok(hostIf.length <= 15, hostIf);
    assert.match(name, /^berth-[0-9a-f]{6}-[0-9a-f]{12}$/);
    assert.notEqual(netnsNames('/other/data', 'env_abcdefghijkl').hostIf, hostIf, 'two data dirs on one host do not collide');
    for (let n = 0; n < 50; n++) {
      const a = pairAddresses('100.96.0.0/11', '/d', `env_${n}`, 0);
      const last = Number(a.hostAddress.split('.')[3]);
      assert.equal(last % 2, 0);
      assert.equal(Number(a.envAddress.split('.')[3]), last + 1);
      assert.ok(checkAddress(a.hostAddress)?.startsWith('deny:private-address'), 'the proxy never connects to a veth address');
      const [x, y] = a.hostAddress.split('.').map(Number);
      assert.ok(x === 100 && y! >= 96 && y! < 128, a.hostAddress);
    }
    const plan = { name, path: `/run/netns/${name}`, hostIf, hostAddress: '100.96.0.2', envAddress: '100.96.0.3', proxyPort: 3128 };
    const rules = ruleset(plan);
    assert.match(rules, /policy drop;/);
    assert.deepEqual(rules.split('\n').filter((l) => l.trim().endsWith('accept')).map((l) => l.trim()), [
      'oifname "lo" accept', 'ip daddr 100.96.0.2 tcp dport 3128 accept',
      'iifname "lo" accept', 'ip saddr 100.96.0.2 tcp sport 3128 accept',
    ]);
    assert.match(insideBatch(plan), /^addr add 100\.96\.0\.3\/31 dev eth0$/m);
    // IPv6 gets a route and no address: its packets meet the rules, and are recorded there.
    assert.match(insideBatch(plan), /^route add ::\/0 dev eth0$/m);
    assert.doesNotMatch(insideBatch(plan), /addr add [0-9a-f:]+\//);
    // Every refusal is noted per destination before the rule that refuses it.
    const output = rules.slice(rules.indexOf('chain output'), rules.indexOf('chain input'));
    assert.ok(output.indexOf('update @refused4') < output.indexOf('reject') && output.indexOf('update @refused6') < output.indexOf('reject'), output);
    assert.match(hostBatch(plan), new RegExp(`^link add ${hostIf} type veth peer name eth0 netns ${name}$`, 'm'));
  });

  test('the bundle joins the namespace and mounts the trust bundle read-only; without a network, a new empty namespace', () => {
    const input = { hostname: 'h', rootfs: '/r', initBinary: '/i', env: [], limits: DEFAULT_LIMITS, cgroupsPath: '/berth/x' };
    const withNet = ociConfig({ ...input, network: { netnsPath: '/run/netns/berth-x', caBundle: { source: '/d/ca.pem', destination: '/.berth/ca-certificates.crt' } } });
    assert.deepEqual(withNet.linux.namespaces.find((n) => n.type === 'network'), { type: 'network', path: '/run/netns/berth-x' });
    const mount = withNet.mounts.find((m) => m.destination === '/.berth/ca-certificates.crt');
    assert.ok(mount?.options.includes('ro'));
    const without = ociConfig(input);
    assert.deepEqual(without.linux.namespaces.find((n) => n.type === 'network'), { type: 'network' });
    assert.equal(without.mounts.some((m) => m.destination.includes('ca-certificates')), false);
  });
});

describe('firewall log', () => {
  const ctx = { hostAddress: '100.96.0.2', subnet: '100.96.0.0/11', hostAddresses: new Set(['192.0.2.2', '100.96.0.2', '100.96.0.4']) };
  const r = (address: string, port: number, protocol = 'tcp', packets = 1): Refusal => ({ family: address.includes(':') ? 6 : 4, address, protocol, port, packets, bytes: packets * 60 });

  test("nft's listing of a refused set becomes one refusal per destination, ports or not", () => {
    const line = JSON.stringify({ nftables: [{ metainfo: { version: '1.0.6' } }, { set: { family: 'inet', name: 'refused4', table: 'berth', elem: [
      { elem: { val: { concat: ['8.8.8.8', 'udp', 53] }, expires: 299, counter: { packets: 3, bytes: 87 } } },
      { elem: { val: { concat: ['9.9.9.9', 'icmp', 0] }, counter: { packets: 1, bytes: 28 } } },
      { elem: { val: { concat: ['2606:4700::1', 'tcp', 443] }, counter: { packets: 1, bytes: 80 } } },
    ] } }] });
    assert.deepEqual(parseRefusedSet(line), [
      { family: 4, address: '8.8.8.8', protocol: 'udp', port: 53, packets: 3, bytes: 87 },
      { family: 4, address: '9.9.9.9', protocol: 'icmp', port: 0, packets: 1, bytes: 28 },
    ], 'an address of the other family is not this set\'s');
    assert.deepEqual(parseRefusedSet(JSON.stringify({ nftables: [{ set: { name: 'refused6' } }] })), []);
  });

  test('the rule names which default-deny refused it', () => {
    const cases: [Refusal, string][] = [
      [r('1.1.1.1', 443), 'direct-connection'],
      [r('8.8.8.8', 53, 'udp'), 'dns'],
      [r('2001:4860:4860::8888', 53, 'udp'), 'dns'],
      [r('169.254.169.254', 80), 'metadata'],
      [r('169.254.1.1', 80), 'link-local'],
      [r('100.96.0.2', 5432), 'host'],
      [r('192.0.2.2', 22), 'host'],
      [r('100.96.0.4', 3128), 'other-environment'],
      [r('100.96.0.5', 8080), 'other-environment'],
      [r('2606:4700::1', 443), 'ipv6'],
      [r('9.9.9.9', 0, 'icmp'), 'direct-connection'],
    ];
    for (const [refusal, why] of cases) assert.equal(refusalRule(refusal, ctx), `deny:firewall:${why}`, refusal.address);
    assert.deepEqual(refusalEvent('env_x', r('8.8.8.8', 53, 'udp', 4), 'deny:firewall:dns', '2026-01-01T00:00:00.000Z'), {
      environmentId: 'env_x', at: '2026-01-01T00:00:00.000Z', kind: 'firewall', host: '8.8.8.8', port: 53, method: 'UDP', path: null,
      allowed: false, rule: 'deny:firewall:dns', status: null, bytesUp: 240, bytesDown: 0, durationMs: 0, packets: 4,
    });
  });

  test('each read counts what is new: a flood stays in the set and is counted on, an idle destination is removed', () => {
    let seen = new Map<string, Refusal>();
    let step = sinceLastRead([r('1.1.1.1', 443, 'tcp', 5), r('8.8.8.8', 53, 'udp', 1)], seen);
    assert.deepEqual(step.refusals.map((x) => x.packets), [5, 1]);
    assert.deepEqual(step.idle, []);
    seen = step.seen;
    step = sinceLastRead([r('1.1.1.1', 443, 'tcp', 12), r('8.8.8.8', 53, 'udp', 1), r('9.9.9.9', 80, 'tcp', 2)], seen);
    assert.deepEqual(step.refusals.map((x) => [x.address, x.packets, x.bytes]), [['1.1.1.1', 7, 420], ['9.9.9.9', 2, 120]]);
    assert.deepEqual(step.idle.map((x) => x.address), ['8.8.8.8']);
    seen = step.seen;
    // 8.8.8.8 was removed and came back; 1.1.1.1 timed out and came back with a lower count.
    step = sinceLastRead([r('1.1.1.1', 443, 'tcp', 3), r('8.8.8.8', 53, 'udp', 1)], seen);
    assert.deepEqual(step.refusals.map((x) => [x.address, x.packets]), [['1.1.1.1', 3], ['8.8.8.8', 1]]);
  });

  test("the snmp gate sums the counters a refusal moves, and nothing else", () => {
    const snmp = 'Ip: Forwarding OutRequests OutDiscards\nIp: 1 900 2\nIcmp: InMsgs OutDestUnreachs\nIcmp: 4 3\nTcp: ActiveOpens AttemptFails\nTcp: 50 5\nUdp: InDatagrams\nUdp: 7\n';
    const snmp6 = 'Ip6InReceives                   	40\nIp6OutDiscards                  	1\nIcmp6OutDestUnreachs            	1\n';
    assert.equal(refusalSignal(snmp, snmp6), 2 + 3 + 5 + 1 + 1);
    assert.equal(refusalSignal(snmp.replace('Tcp: 50 5', 'Tcp: 51 5').replace('Ip: 1 900 2', 'Ip: 1 2000 2'), snmp6), 12, 'allowed traffic does not move it');
  });
});

describe('egress proxy', () => {
  let outside: Outside;
  let policies: TestPolicies;
  let events: NetworkEventStore;
  let usage: NetworkUsage;
  let proxy: EgressProxy;
  let strict: EgressProxy;
  let proxyUrl: string;
  let strictUrl: string;
  let runnerCa: CertificateAuthority;
  const caDir = mkdtempSync(join(tmpdir(), 'berth-test-runner-ca-'));
  const ENV = 'env_proxytest';

  before(async () => {
    outside = await startOutside();
    runnerCa = await CertificateAuthority.open(caDir);
    policies = new TestPolicies({ allowDomains: ['outside.test', 'api.outside.test', 'rebind.test', 'metadata.test', 'mapped.test', 'private.test'], allowPorts: [outside.httpPort, outside.httpsPort] });
    events = new NetworkEventStore();
    usage = { bytesUp: 0, bytesDown: 0, connections: 0, open: 0, refused: 0, peak: 0 };
    const common = { environmentId: ENV, policies, events, resolver: testResolver, ca: async () => runnerCa, upstreamCa: outside.caPem };
    proxy = new EgressProxy({ ...common, usage, allowPrivate: blockListOf(ALLOW_LOOPBACK) });
    await proxy.listen(0, '127.0.0.1');
    proxyUrl = `http://127.0.0.1:${proxy.address().port}`;
    // The same policy without the test's escape hatch: what production does.
    strict = new EgressProxy({ ...common, usage: { bytesUp: 0, bytesDown: 0, connections: 0, open: 0, refused: 0, peak: 0 } });
    await strict.listen(0, '127.0.0.1');
    strictUrl = `http://127.0.0.1:${strict.address().port}`;
  });
  after(async () => {
    await proxy?.close();
    await strict?.close();
    await outside?.close();
    rmSync(caDir, { recursive: true, force: true });
  });

  const last = () => events.events(ENV).at(-1)!;

  test('plain HTTP to an allowed name goes through, and is recorded with method, path, bytes and rule', async () => {
    const r = await hostCurl(['-x', proxyUrl, `http://outside.test:${outside.httpPort}/hello?x=1`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `hello GET /hello?x=1 host=outside.test:${outside.httpPort}\n`);
    const e = last();
    assert.equal(e.kind, 'http');
    assert.equal(e.allowed, true);
    assert.deepEqual([e.host, e.port, e.method, e.path, e.status, e.rule], ['outside.test', outside.httpPort, 'GET', '/hello?x=1', 200, 'allow:environment:outside.test']);
    assert.equal(e.bytesDown, r.stdout.length);
    assert.ok(e.durationMs >= 0);
  });

  test('a refused request gets a 403 whose body names the rule', async () => {
    const r = await hostCurl(['-x', proxyUrl, '-w', '\n%{http_code}', `http://elsewhere.test:${outside.httpPort}/`]);
    assert.match(r.stdout, /elsewhere\.test is not in the environment policy's allowed domains/);
    assert.match(r.stdout, /rule: deny:environment:not-allowed\n+403$/);
    assert.deepEqual([last().allowed, last().status, last().rule], [false, 403, 'deny:environment:not-allowed']);
  });

  test('the Host header cannot pick another host: the URL decides, and upstream sees the URL\'s host', async () => {
    const r = await hostCurl(['-x', proxyUrl, '-H', 'Host: evil.test', `http://outside.test:${outside.httpPort}/h`]);
    assert.equal(r.stdout, `hello GET /h host=outside.test:${outside.httpPort}\n`);
    const refused = await hostCurl(['-x', proxyUrl, '-H', 'Host: outside.test', '-w', '%{http_code}', `http://evil.test:${outside.httpPort}/`]);
    assert.match(refused.stdout, /403$/);
    // Sent straight to the proxy as if it were the server: not a proxy request.
    const direct = await hostCurl(['-H', 'Host: outside.test', '-w', '%{http_code}', `${proxyUrl}/`]);
    assert.match(direct.stdout, /deny:not-a-proxy-request\n400$/);
  });

  test('CONNECT to an allowed name is a tunnel; the client checks the real server\'s certificate', async () => {
    const caFile = join(caDir, 'outside-ca.pem');
    await import('node:fs/promises').then((fs) => fs.writeFile(caFile, outside.caPem));
    const r = await hostCurl(['-x', proxyUrl, '--cacert', caFile, `https://outside.test:${outside.httpsPort}/secure`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `hello GET /secure host=outside.test:${outside.httpsPort}\n`);
    // A tunnel is recorded when it closes.
    await until(() => last().kind === 'connect');
    const e = last();
    assert.deepEqual([e.kind, e.host, e.port, e.method, e.status, e.allowed], ['connect', 'outside.test', outside.httpsPort, 'CONNECT', 200, true]);
    assert.ok(e.bytesUp > 200 && e.bytesDown > 500, `tunnel bytes counted: ${e.bytesUp} up, ${e.bytesDown} down`);
  });

  test('CONNECT to a raw address is refused', async () => {
    for (const target of [`127.0.0.1:${outside.httpsPort}`, `[::1]:${outside.httpsPort}`]) {
      const r = await rawConnect(proxy, `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
      assert.match(r, /^HTTP\/1\.1 403 /, target);
      assert.match(r, /rule: deny:ip-address/);
    }
  });

  test('names resolving to loopback, private, link-local or mapped addresses are refused after resolution (rebinding)', async () => {
    for (const [name, rule] of [['rebind.test', 'deny:private-address:127.0.0.1'], ['metadata.test', 'deny:private-address:169.254.169.254'], ['private.test', 'deny:private-address:10.1.2.3'], ['mapped.test', 'deny:private-address:127.0.0.1']] as const) {
      const r = await hostCurl(['-x', strictUrl, '-w', '\n%{http_code}', `http://${name}:${outside.httpPort}/`]);
      assert.match(r.stdout, new RegExp(`rule: ${rule.replace(/\./g, '\\.')}\\n+403$`), name);
      const c = await rawConnect(strict, `CONNECT ${name}:${outside.httpsPort} HTTP/1.1\r\n\r\n`);
      assert.match(c, /^HTTP\/1\.1 403 /, name);
    }
  });

  test('a policy change applies to the next request, without a restart', async () => {
    const url = `http://other.outside.test:${outside.httpPort}/`;
    assert.match((await hostCurl(['-x', proxyUrl, '-w', '%{http_code}', url])).stdout, /403$/);
    const before = policies.policy;
    policies.policy = { ...before, allowDomains: [...before.allowDomains, '*.outside.test'] };
    try {
      assert.match((await hostCurl(['-x', proxyUrl, '-w', '%{http_code}', url])).stdout, /200$/);
      assert.equal(last().rule, 'allow:environment:*.outside.test');
      policies.policy = { ...policies.policy, allowMethods: ['GET'] };
      const post = await hostCurl(['-x', proxyUrl, '-d', 'x', '-w', '%{http_code}', url]);
      assert.match(post.stdout, /rule: deny:environment:method:POST\n403$/);
    } finally {
      policies.policy = before;
    }
  });

  test('credentials are added outside the sandbox, for exactly their host and path prefix', async () => {
    const before = policies.policy;
    policies.policy = {
      ...before,
      allowDomains: [...before.allowDomains, 'other.outside.test'],
      credentials: [{ host: 'api.outside.test', pathPrefix: '/v1/', header: 'Authorization', value: 'Bearer s3cret-value', name: 'api-key' }],
    };
    const runnerCaFile = join(caDir, 'runner-ca.pem');
    await import('node:fs/promises').then((fs) => fs.writeFile(runnerCaFile, runnerCa.certPem));
    try {
      const n = outside.seen.length;
      const ok = await hostCurl(['-x', proxyUrl, '--cacert', runnerCaFile, '-H', 'Authorization: Bearer fake', `https://api.outside.test:${outside.httpsPort}/v1/models`]);
      assert.equal(ok.code, 0, ok.stderr);
      const wrongPath = await hostCurl(['-x', proxyUrl, '--cacert', runnerCaFile, `https://api.outside.test:${outside.httpsPort}/v1/../v2/models`, '--path-as-is']);
      assert.equal(wrongPath.code, 0, wrongPath.stderr);
      const seen = outside.seen.slice(n);
      assert.equal(seen[0]?.headers.authorization, 'Bearer s3cret-value', 'the credential replaces what the client sent');
      assert.equal(seen[0]?.tls, true, 'and goes upstream over TLS');
      assert.equal(seen[1]?.url, '/v2/models', 'dot segments resolved before the prefix check');
      assert.equal(seen[1]?.headers.authorization, undefined);
      assert.match(events.events(ENV).find((e) => e.path === '/v1/models')?.rule ?? '', /\+credential:api-key$/);
      // Another host, even one the same CA could sign for, is a plain tunnel: the runner's CA is not trusted for it.
      const other = await hostCurl(['-x', proxyUrl, '--cacert', runnerCaFile, `https://other.outside.test:${outside.httpsPort}/`]);
      assert.notEqual(other.code, 0, 'other.outside.test is tunnelled to the real server, whose CA the client was not given');
      assert.ok(!events.events(ENV).some((e) => JSON.stringify(e).includes('s3cret-value')), 'no event carries the value');
    } finally {
      policies.policy = before;
    }
  });

  test('concurrent connections are capped by the policy; the refusals are counted and recorded once per burst', async () => {
    const before = policies.policy;
    policies.policy = { ...before, maxConnections: 3 };
    const sockets: Socket[] = [];
    try {
      const refusedBefore = usage.refused;
      for (let i = 0; i < 10; i++) {
        const s = connect(proxy.address().port, '127.0.0.1');
        s.on('error', () => {});
        sockets.push(s);
        await new Promise((r) => s.once('connect', r));
      }
      await until(() => usage.refused - refusedBefore === 7);
      assert.equal(proxy.usage().open, 3);
      assert.ok(events.denied(ENV).some((e) => e.rule === 'deny:max-connections'));
    } finally {
      for (const s of sockets) s.destroy();
      policies.policy = before;
    }
    await until(() => proxy.usage().open === 0);
  });

  test('usage counts bytes each way and connections', async () => {
    const u0 = proxy.usage();
    const r = await hostCurl(['-x', proxyUrl, `http://outside.test:${outside.httpPort}/bytes/100000`, '-o', '/dev/null', '-w', '%{size_download}']);
    assert.equal(r.stdout, '100000');
    const u1 = proxy.usage();
    assert.equal(u1.connections - u0.connections, 1);
    assert.ok(u1.bytesDown - u0.bytesDown > 100_000 && u1.bytesDown - u0.bytesDown < 101_000, String(u1.bytesDown - u0.bytesDown));
    assert.ok(u1.bytesUp - u0.bytesUp > 50);
  });
});


describe('an environment on the network', () => {
  let dataDir: string;
  let images: ImageStore;
  let outside: Outside;
  let spec: EnvironmentSpec;
  const policies = new TestPolicies();
  const events = new NetworkEventStore();
  const runners: LocalRunner[] = [];
  const newRunner = () => {
    const r = new LocalRunner({ dataDir, images, logger, network: { policies, events, resolver: testResolver, allowPrivateAddresses: ALLOW_LOOPBACK } });
    runners.push(r);
    return r;
  };

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'berth-network-'));
    images = new ImageStore({ dir: IMAGE_DIR, logger });
    outside = await startOutside();
    policies.policy = basePolicy({ allowDomains: ['outside.test'], allowPorts: [outside.httpPort] });
    spec = { id: newId('env'), hostname: 'net-test', image: await images.resolve('default'), limits: DEFAULT_LIMITS };
  });
  after(async () => {
    for (const r of runners) {
      await r.remove(spec.id).catch(() => {});
      r.close();
    }
    await outside?.close();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  const curl = (runner: LocalRunner) => runToEnd(runner.exec(spec, { cmd: ['curl', '-sS', '-m', '5', `http://outside.test:${outside.httpPort}/in`] }));
  const refused = (host: string, port: number) => events.events(spec.id).some((e) => e.kind === 'firewall' && e.host === host && e.port === port && e.method === 'TCP' && !e.allowed);
  const netnsName = () => readdirSync('/run/netns').filter((n) => n.startsWith('berth-'));

  test('without network options an environment has only loopback, as before', async () => {
    const plain = new LocalRunner({ dataDir: mkdtempSync(join(tmpdir(), 'berth-nonet-')), images, logger });
    const s = { ...spec, id: newId('env') };
    try {
      await plain.start(s);
      const r = await runToEnd(plain.exec(s, { cmd: ['sh', '-c', 'cat /proc/net/dev | tail -n +3 | cut -d: -f1; env | grep -ci proxy || true'] }));
      assert.equal(r.stdout.replace(/ /g, ''), 'lo\n0\n');
    } finally {
      await plain.remove(s.id);
      plain.close();
    }
  });

  test('start gives it a namespace whose only way out is the proxy; stop, start, restart and remove keep that true', async () => {
    const runner = newRunner();
    await runner.start(spec);
    let r = await curl(runner);
    assert.equal(r.stdout, `hello GET /in host=outside.test:${outside.httpPort}\n`, r.stderr);
    const plan = runner.network!.proxyAddress(spec.id)!;
    assert.ok(plan.host.startsWith('100.'));

    // Stop closes the proxy with the processes and keeps the namespace, veth pair and
    // rules (they hold no process); start reuses them.
    const planFile = () => JSON.parse(readFileSync(join(dataDir, 'network', 'environments', `${spec.id}.json`), 'utf8')) as { hostIf: string; name: string };
    const first = planFile();
    assert.ok(existsSync(`/sys/class/net/${first.hostIf}`));
    // What the firewall refused just before a stop is read before the stop returns.
    const direct = (host: string, port: number) => runToEnd(runner.exec(spec, { cmd: ['curl', '-sS', '-m', '5', '--noproxy', '*', `http://${host}:${port}/`] }));
    await direct('1.1.1.1', 8081);
    await runner.stop(spec.id);
    assert.ok(refused('1.1.1.1', 8081), 'recorded by the time stop returns');
    assert.ok(existsSync(`/sys/class/net/${first.hostIf}`), 'stopped: the veth pair stays');
    assert.ok(netnsName().includes(first.name), 'stopped: the namespace stays');
    assert.equal(runner.network!.usage(spec.id).open, 0);
    await assert.rejects(rawTcp(plan.host, plan.port), 'stopped: the proxy does not listen');
    await runner.start(spec);
    assert.deepEqual(planFile(), first, 'the same namespace and addresses');
    assert.equal((await curl(runner)).stdout, `hello GET /in host=outside.test:${outside.httpPort}\n`);
    r = await runToEnd(runner.exec(spec, { cmd: ['curl', '-sS', '-m', '5', '--noproxy', '*', `http://${plan.host}:${outside.httpPort}/in`] }));
    assert.notEqual(r.exitCode, 0, 'after a start on kept rules, a direct connection is still refused');
    await until(() => refused(plan.host, outside.httpPort));

    // The runner dies (no cleanup); a new one on the same data dir finds the running
    // environment and listens again for it.
    runner.close();
    const again = newRunner();
    // Without a start: the control plane only asks for the status of a running one.
    assert.equal(await again.status(spec.id), 'running');
    await until(async () => (await curl(again)).stdout.startsWith('hello'));
    await again.start(spec);
    r = await curl(again);
    assert.equal(r.stdout, `hello GET /in host=outside.test:${outside.httpPort}\n`, r.stderr);
    // The new runner reads the running environment's refusals too.
    await runToEnd(again.exec(spec, { cmd: ['curl', '-sS', '-m', '5', '--noproxy', '*', 'http://1.1.1.1:8082/'] }));
    await until(() => refused('1.1.1.1', 8082));

    // Start twice is a no-op.
    await again.start(spec);

    // The runner dies and the environment's processes with it (a host crash, say): the
    // next runner finds a namespace name with nothing behind it and builds it again.
    again.close();
    const third = newRunner();
    await third.backend.kill(third.containerId(spec.id));
    await third.backend.delete(third.containerId(spec.id));
    await third.start(spec);
    r = await curl(third);
    assert.equal(r.stdout, `hello GET /in host=outside.test:${outside.httpPort}\n`, r.stderr);

    // Remove takes everything.
    const now = JSON.parse(readFileSync(join(dataDir, 'network', 'environments', `${spec.id}.json`), 'utf8')) as { hostIf: string; name: string };
    assert.ok(existsSync(`/sys/class/net/${now.hostIf}`));
    assert.ok(netnsName().includes(now.name));
    await third.remove(spec.id);
    assert.equal(existsSync(`/sys/class/net/${now.hostIf}`), false, 'the veth pair is gone');
    assert.equal(existsSync(join(dataDir, 'network', 'environments', `${spec.id}.json`)), false);
    assert.equal(netnsName().includes(now.name), false, 'the namespace name is gone');
  });

  test("the firewall's reader keeps no process while nothing is refused, and starts one again for the next refusal", async () => {
    const runner = new LocalRunner({ dataDir, images, logger, network: { policies, events, resolver: testResolver, allowPrivateAddresses: ALLOW_LOOPBACK, firewallIdleMs: 1_000 } });
    runners.push(runner);
    const s = { ...spec, id: newId('env') };
    const refusedHere = (port: number) => events.events(s.id).some((e) => e.kind === 'firewall' && e.host === '1.1.1.1' && e.port === port);
    // nft processes reading this environment's namespace.
    const readers = () => {
      const ns = readlinkSync(`/proc/${netnsPid()}/ns/net`);
      return readdirSync('/proc').filter((pid) => {
        try {
          return /^\d+$/.test(pid) && readFileSync(`/proc/${pid}/cmdline`, 'utf8') === 'nft\0-j\0-i\0' && readlinkSync(`/proc/${pid}/ns/net`) === ns;
        } catch {
          return false;
        }
      }).length;
    };
    let initPid: number | undefined;
    const netnsPid = () => initPid;
    try {
      await runner.start(s);
      initPid = await runner.backend.pid(runner.containerId(s.id));
      await runToEnd(runner.exec(s, { cmd: ['curl', '-sS', '-m', '5', '--noproxy', '*', 'http://1.1.1.1:8091/'] }));
      await until(() => refusedHere(8091), 10_000);
      await until(() => readers() === 0, 10_000);
      await runToEnd(runner.exec(s, { cmd: ['curl', '-sS', '-m', '5', '--noproxy', '*', 'http://1.1.1.1:8092/'] }));
      await until(() => refusedHere(8092), 10_000);
    } finally {
      await runner.remove(s.id).catch(() => {});
    }
  });
});


/** Connects and hangs up: resolves when something listens at host:port. */
function rawTcp(host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = connect(port, host);
    s.on('connect', () => {
      s.destroy();
      resolve();
    });
    s.on('error', reject);
  });
}

/** Sends `request` to the proxy and returns everything it answers before closing. */
function rawConnect(proxy: EgressProxy, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(proxy.address().port, '127.0.0.1');
    let out = '';
    s.on('data', (b) => (out += b));
    s.on('end', () => resolve(out));
    s.on('close', () => resolve(out));
    s.on('error', reject);
    s.write(request);
  });
}

async function until(check: () => boolean | Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 20));
  }
}
