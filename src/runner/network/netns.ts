// An environment's network namespace: a veth pair to the host, an address on each end,
// and nftables rules inside that let out exactly one thing, TCP to the runner's proxy on
// the host end. Everything else (any address, IPv4 or IPv6, DNS, the host's services,
// other environments, metadata addresses) is rejected, counted and noted per destination.
//
// The namespace is the host's (owned by the initial user namespace), so nothing in the
// environment, whose root lives in a user namespace of its own and lacks CAP_NET_ADMIN,
// can change its addresses, routes or rules.
import { createHash } from 'node:crypto';

export interface NetnsPlan {
  /** Name under /run/netns (in the spawner's mount namespace, where crun runs). */
  name: string;
  path: string;
  /** The host's end of the veth pair (at most 15 characters). */
  hostIf: string;
  hostAddress: string;
  envAddress: string;
  proxyPort: number;
}

export const PROXY_PORT = 3128;
export const DEFAULT_SUBNET = '100.96.0.0/11';

/**
 * Names for one namespace (`key`: an environment id, or a warm one's random key) of one
 * data dir: several Berth instances can share a host, and `prefix` finds this one's.
 */
export function netnsNames(dataDir: string, key: string): { name: string; hostIf: string } {
  const h = createHash('sha256').update(`${dataDir}\0${key}`).digest('hex');
  return { name: `${netnsPrefix(dataDir)}${h.slice(0, 12)}`, hostIf: `bz${h.slice(0, 13)}` };
}

export function netnsPrefix(dataDir: string): string {
  return `berth-${createHash('sha256').update(dataDir).digest('hex').slice(0, 6)}-`;
}

/**
 * A /31 in `subnet` for attempt `n` (hash-spread, so two runners on one host rarely
 * try the same; the caller skips addresses the host already has).
 */
export function pairAddresses(subnet: string, dataDir: string, id: string, n: number): { hostAddress: string; envAddress: string } {
  const [net, bitsText] = subnet.split('/');
  const bits = Number(bitsText);
  const base = ipv4ToInt(net ?? '');
  if (base === undefined || !(bits >= 8 && bits <= 30)) throw new Error(`network subnet must be an IPv4 CIDR between /8 and /30, got ${subnet}`);
  const pairs = 2 ** (32 - bits - 1);
  const h = createHash('sha256').update(`${dataDir}\0${id}\0${n}`).digest();
  const slot = h.readUInt32BE(0) % pairs;
  const host = ((base >>> 0) & ~(2 ** (32 - bits) - 1)) + slot * 2;
  return { hostAddress: intToIpv4(host), envAddress: intToIpv4(host + 1) };
}

function ipv4ToInt(a: string): number | undefined {
  const parts = a.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) return undefined;
  return ((parts[0]! << 24) >>> 0) + (parts[1]! << 16) + (parts[2]! << 8) + parts[3]!;
}

function intToIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** Protocols whose packets carry ports (`th dport` reads the transport header). */
const PORTED = '{ tcp, udp, udplite, sctp, dccp }';
/** Destinations each refused set holds between two reads. */
export const REFUSED_SET_SIZE = 4096;

/**
 * The ruleset inside the namespace (nft -f). Before each refusal the packet's destination
 * goes into a set with a counter of its own, so every refused attempt can be recorded as
 * an event (firewall-log.ts reads and empties the sets); a full set records no more until
 * read, but the rule after it refuses all the same. Packets without ports count as port 0.
 */
export function ruleset(p: NetnsPlan): string {
  const refused = (family: 4 | 6) => `  set refused${family} { type ipv${family}_addr . inet_proto . inet_service; flags dynamic,timeout; timeout 5m; size ${REFUSED_SET_SIZE}; counter; }`;
  const note = (ip: 'ip' | 'ip6', family: 4 | 6) => [
    `    meta l4proto ${PORTED} update @refused${family} { ${ip} daddr . meta l4proto . th dport }`,
    `    meta l4proto != ${PORTED} update @refused${family} { ${ip} daddr . meta l4proto . 0 }`,
  ];
  return `table inet berth {
  counter blocked { }
${refused(4)}
${refused(6)}
  chain output {
    type filter hook output priority 0; policy drop;
    oifname "lo" accept
    ip daddr ${p.hostAddress} tcp dport ${p.proxyPort} accept
${[...note('ip', 4), ...note('ip6', 6)].join('\n')}
    # Rejected rather than dropped, so a tool that tries fails at once instead of hanging.
    meta l4proto tcp counter name "blocked" reject with tcp reset
    counter name "blocked" reject with icmpx type admin-prohibited
  }
  chain input {
    type filter hook input priority 0; policy drop;
    iifname "lo" accept
    ip saddr ${p.hostAddress} tcp sport ${p.proxyPort} accept
    counter name "blocked" drop
  }
}
`;
}

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * Removes what an earlier setup left (idempotent; nothing there is fine). One process
 * when the name is still live in the spawner's mount namespace; `rm` catches a name
 * whose mount went with an earlier spawner.
 */
export function teardownScript(p: Pick<NetnsPlan, 'name' | 'hostIf'>): string {
  // Deleting one end of a veth pair deletes both at once; the namespace alone would go
  // asynchronously, leaving the host end to collide with the next setup.
  return `printf '%s\\n' ${quote(`link del ${p.hostIf}`)} ${quote(`netns del ${p.name}`)} | ip -force -batch - 2>/dev/null; rm -f ${quote(`/run/netns/${p.name}`)}; true`;
}

/** ip -batch input for the host's side: the namespace and the veth pair. */
export function hostBatch(p: NetnsPlan): string {
  return [
    `netns add ${p.name}`,
    `link add ${p.hostIf} type veth peer name eth0 netns ${p.name}`,
    // No IPv6 link-local addresses on either end: the environment has no IPv6 at all.
    `link set ${p.hostIf} addrgenmode none`,
    `addr add ${p.hostAddress}/31 dev ${p.hostIf}`,
    `link set ${p.hostIf} up`,
    '',
  ].join('\n');
}

/** ip -batch input for inside the namespace. */
export function insideBatch(p: NetnsPlan): string {
  return [
    'link set lo up',
    'link set eth0 addrgenmode none',
    `addr add ${p.envAddress}/31 dev eth0`,
    'link set eth0 up',
    // Default routes, so a direct connection reaches the rules (refused and recorded)
    // rather than failing before them with "network unreachable". IPv6 has no address
    // here: its packets only ever meet the rules.
    `route add default via ${p.hostAddress} dev eth0`,
    'route add ::/0 dev eth0',
    '',
  ].join('\n');
}

/**
 * One shell, three programs: ip on each side and nft. The rules go in before the link
 * is up, so there is no moment with an address and a route but no rules.
 * `files` hold hostBatch(p), insideBatch(p) and ruleset(p).
 */
export function setupScript(p: NetnsPlan, files: { host: string; inside: string; rules: string }): string {
  return `ip -batch ${quote(files.host)} && nsenter --net=${quote(p.path)} nft -f ${quote(files.rules)} && ip -n ${quote(p.name)} -batch ${quote(files.inside)}`;
}
