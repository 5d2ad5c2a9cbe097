// The company network an instance administrator puts the runner on, read once at start:
// networks that names an environment's policy allows may resolve into (trusted networks),
// and the company's outbound proxy every allowed request is chained through (upstream
// proxy), with the destinations reached directly instead (no-proxy). Parsed and checked
// here; the egress proxy, image pulls and mirrors import the typed result.
import { readFileSync } from 'node:fs';
import { BlockList, isIP } from 'node:net';
import { DEFAULT_SUBNET } from './netns.ts';
import { hostAddressesNow, normalizeHost, unmapAddress } from './request-filter.ts';

export interface UpstreamProxy {
  /** The proxy's host name or address, as the URL gave it (IPv6 without brackets). */
  host: string;
  port: number;
  /** The Proxy-Authorization value (`Basic …`) when the URL or the password file gives credentials; never shown. */
  authorization: string | undefined;
  /** The URL without credentials, for logs and `berth runner list`. */
  display: string;
}

export interface EgressNetworkConfig {
  /** CIDRs as given, normalized (`10.20.0.0/16`); shown in `berth runner list`. */
  trustedNetworks: string[];
  /** The same as a BlockList, for checkAddress; undefined when there are none. */
  trusted: BlockList | undefined;
  upstreamProxy: UpstreamProxy | undefined;
  /** Destinations reached directly, not through the upstream proxy (see bypassesUpstream). */
  noProxy: string[];
}

/** What may be shown about the config: no credentials. */
export interface EgressNetworkSummary {
  trustedNetworks: string[];
  upstreamProxy: string | null;
  noProxy: string[];
}

export const NO_COMPANY_NETWORK: EgressNetworkConfig = { trustedNetworks: [], trusted: undefined, upstreamProxy: undefined, noProxy: [] };

export const COMPANY_ENV = {
  trustedNetworks: 'BERTH_EGRESS_TRUSTED_NETWORKS',
  upstreamProxy: 'BERTH_EGRESS_UPSTREAM_PROXY',
  upstreamPasswordFile: 'BERTH_EGRESS_UPSTREAM_PROXY_PASSWORD_FILE',
  noProxy: 'BERTH_EGRESS_UPSTREAM_NO_PROXY',
} as const;

/**
 * Ranges no trusted network may touch, whatever the administrator says: loopback,
 * unspecified, link-local (cloud metadata lives at 169.254.169.254), multicast and reserved.
 */
const NEVER_TRUSTED: readonly (readonly [string, string])[] = [
  ['0.0.0.0/8', 'the unspecified range'], ['127.0.0.0/8', 'loopback'], ['169.254.0.0/16', 'link-local (cloud metadata at 169.254.169.254)'],
  ['224.0.0.0/4', 'multicast'], ['240.0.0.0/4', 'reserved'], ['::/128', 'the unspecified address'], ['::1/128', 'loopback'],
  ['fe80::/10', 'link-local'], ['ff00::/8', 'multicast'],
  // Metadata services on addresses outside link-local: AWS's IPv6 one, Alibaba's.
  ['fd00:ec2::254/128', 'cloud metadata'], ['100.100.100.200/32', 'cloud metadata'],
];
const NEVER_TRUSTED_LIST = new BlockList();
for (const [cidr] of NEVER_TRUSTED) addCidr(NEVER_TRUSTED_LIST, parseCidr(cidr));

export interface CompanyNetworkInput {
  /** `--trusted-network` values; when any are given they replace BERTH_EGRESS_TRUSTED_NETWORKS. */
  trustedNetworks?: readonly string[] | undefined;
  /** `--upstream-proxy`; replaces BERTH_EGRESS_UPSTREAM_PROXY. */
  upstreamProxy?: string | undefined;
  env?: NodeJS.ProcessEnv | undefined;
  /** The control plane's listening port: an upstream proxy on this host and that port would loop requests into the API. */
  controlPlanePort?: number | undefined;
  /** The runner's environment subnet (its veth pairs), which no trusted network may overlap. */
  environmentSubnet?: string | undefined;
  /** This host's addresses (default: its interfaces now). */
  hostAddresses?: ReadonlySet<string> | undefined;
}

/** Reads and checks the settings; throws an Error whose message says which setting is wrong and what to do. */
export function egressNetworkConfigFrom(input: CompanyNetworkInput = {}): EgressNetworkConfig {
  const env = input.env ?? process.env;
  const given = input.trustedNetworks?.length ? [...input.trustedNetworks] : listOf(env[COMPANY_ENV.trustedNetworks]);
  const source = input.trustedNetworks?.length ? '--trusted-network' : COMPANY_ENV.trustedNetworks;
  const own = input.hostAddresses ?? hostAddressesNow();
  const subnet = parseCidr(input.environmentSubnet ?? DEFAULT_SUBNET);
  const trustedNetworks: string[] = [];
  const trusted = new BlockList();
  for (const raw of given) {
    const cidr = parseTrusted(raw, source);
    for (const [never, what] of NEVER_TRUSTED) {
      if (overlaps(cidr, parseCidr(never))) throw new Error(`${source}: ${raw} overlaps ${never} (${what}), which can never be trusted: name only the company's own networks`);
    }
    if (overlaps(cidr, subnet)) throw new Error(`${source}: ${raw} overlaps the runner's environment network ${input.environmentSubnet ?? DEFAULT_SUBNET}, which can never be trusted`);
    const list = new BlockList();
    addCidr(list, cidr);
    for (const address of own) {
      const a = unmapAddress(address);
      if (isIP(a) && list.check(a, isIP(a) === 4 ? 'ipv4' : 'ipv6')) {
        throw new Error(`${source}: ${raw} contains ${a}, an address of this host (where the control plane and the runner listen), which can never be trusted: name a narrower network`);
      }
    }
    addCidr(trusted, cidr);
    trustedNetworks.push(cidr.text);
  }
  const proxyUrl = (input.upstreamProxy ?? env[COMPANY_ENV.upstreamProxy] ?? '').trim();
  const passwordFile = env[COMPANY_ENV.upstreamPasswordFile]?.trim() || undefined;
  const upstreamProxy = proxyUrl ? parseUpstream(proxyUrl, input.upstreamProxy !== undefined ? '--upstream-proxy' : COMPANY_ENV.upstreamProxy, passwordFile) : undefined;
  if (!upstreamProxy && passwordFile) throw new Error(`${COMPANY_ENV.upstreamPasswordFile} is set but there is no upstream proxy: set ${COMPANY_ENV.upstreamProxy} too, or unset it`);
  if (upstreamProxy && input.controlPlanePort !== undefined && upstreamProxy.port === input.controlPlanePort) {
    const h = upstreamProxy.host;
    if (h === 'localhost' || (isIP(h) && (own.has(h) || NEVER_TRUSTED_LIST.check(h, isIP(h) === 4 ? 'ipv4' : 'ipv6')))) {
      throw new Error(`the upstream proxy ${upstreamProxy.display} is this host's control plane port: give the company's outbound proxy`);
    }
  }
  const noProxy = listOf(env[COMPANY_ENV.noProxy]).map((e) => checkNoProxyEntry(e));
  if (noProxy.length && !upstreamProxy) throw new Error(`${COMPANY_ENV.noProxy} is set but there is no upstream proxy: set ${COMPANY_ENV.upstreamProxy} too, or unset it`);
  return { trustedNetworks, trusted: trustedNetworks.length ? trusted : undefined, upstreamProxy, noProxy };
}

export function summarizeEgressNetwork(c: EgressNetworkConfig): EgressNetworkSummary {
  return { trustedNetworks: [...c.trustedNetworks], upstreamProxy: c.upstreamProxy?.display ?? null, noProxy: [...c.noProxy] };
}

/** Whether `address` lies in a trusted network (and outside what can never be trusted: checked again at use). */
export function isTrusted(trusted: BlockList | undefined, address: string): boolean {
  if (!trusted) return false;
  const a = unmapAddress(address);
  const family = isIP(a);
  if (family === 0) return false;
  const type = family === 4 ? 'ipv4' : 'ipv6';
  return trusted.check(a, type) && !NEVER_TRUSTED_LIST.check(a, type);
}

/**
 * Whether a request for `host` (its checked `address`) goes directly rather than through
 * the upstream proxy. Entries as curl reads NO_PROXY: `*` for everything, a domain for
 * itself and every name below it (a leading `.` or `*.` changes nothing), an address or
 * CIDR for what the name resolved to.
 */
export function bypassesUpstream(noProxy: readonly string[], host: string, address: string | undefined): boolean {
  const name = normalizeHost(host);
  const a = address ? unmapAddress(address) : undefined;
  for (const entry of noProxy) {
    if (entry === '*') return true;
    const [net] = entry.split('/');
    if (isIP(net ?? '')) {
      if (!a || !isIP(a)) continue;
      const list = new BlockList();
      addCidr(list, parseCidr(entry));
      if (list.check(a, isIP(a) === 4 ? 'ipv4' : 'ipv6')) return true;
      continue;
    }
    const domain = entry.replace(/^\*?\./, '');
    if (name === domain || name.endsWith(`.${domain}`)) return true;
  }
  return false;
}

function listOf(value: string | undefined): string[] {
  return (value ?? '').split(',').map((v) => v.trim()).filter(Boolean);
}

function checkNoProxyEntry(raw: string): string {
  const e = raw.toLowerCase();
  if (e === '*') return e;
  const [net] = e.split('/');
  if (isIP(net ?? '')) {
    try {
      return parseCidr(e).text;
    } catch (err) {
      throw new Error(`${COMPANY_ENV.noProxy}: ${(err as Error).message}`);
    }
  }
  if (!/^(\*?\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*$/.test(e)) throw new Error(`${COMPANY_ENV.noProxy}: ${JSON.stringify(raw)} is not a domain, address or CIDR (e.g. corp.example, .corp.example, 10.0.0.0/8)`);
  return e;
}

function parseUpstream(raw: string, source: string, passwordFile: string | undefined): UpstreamProxy {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error(`${source} must be a URL such as http://proxy.corp.example:3128 (credentials: http://user:password@host:port)`);
  }
  const display = `${url.protocol}//${url.host}`;
  if (url.protocol !== 'http:') throw new Error(`${source}: only http:// upstream proxies are supported (the proxy speaks CONNECT for TLS), not ${url.protocol}//`);
  if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash) throw new Error(`${source}: give only scheme, host and port (${display}), no path`);
  const host = normalizeHost(url.hostname);
  const port = url.port ? Number(url.port) : 80;
  let user = url.username ? decodeURIComponent(url.username) : '';
  let password = url.password ? decodeURIComponent(url.password) : '';
  if (passwordFile) {
    if (!user) throw new Error(`${COMPANY_ENV.upstreamPasswordFile} is set but ${source} names no user: write it as http://user@host:port`);
    if (password) throw new Error(`${source} has a password and ${COMPANY_ENV.upstreamPasswordFile} is set too: keep one`);
    try {
      password = readFileSync(passwordFile, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw new Error(`${COMPANY_ENV.upstreamPasswordFile}: cannot read ${passwordFile} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }
  if (user.includes(':')) throw new Error(`${source}: the user name may not contain ':' (Basic authentication cannot carry it)`);
  user = user.trim();
  const authorization = user ? `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` : undefined;
  const proxy = { host, port, display } as UpstreamProxy;
  // Not enumerable: a logged or serialized config carries no credential.
  Object.defineProperty(proxy, 'authorization', { value: authorization, enumerable: false });
  return proxy;
}

interface Cidr {
  text: string;
  family: 4 | 6;
  bits: number;
  net: bigint;
}

function parseTrusted(raw: string, source: string): Cidr {
  try {
    return parseCidr(raw.trim());
  } catch (err) {
    throw new Error(`${source}: ${(err as Error).message}`);
  }
}

/** `10.20.0.0/16`, `fd12::/48`, or one address; refuses host bits past the prefix (a typo more often than not). */
function parseCidr(raw: string): Cidr {
  const [address, bitsText, extra] = raw.split('/');
  const found = isIP(address ?? '');
  if (!address || found === 0 || extra !== undefined) throw new Error(`${JSON.stringify(raw)} is not a network: write an address and prefix length, such as 10.20.0.0/16`);
  const family = found === 4 ? 4 : 6;
  const width = family === 4 ? 32 : 128;
  const bits = bitsText === undefined ? width : /^\d{1,3}$/.test(bitsText) ? Number(bitsText) : NaN;
  if (!(bits >= 0 && bits <= width)) throw new Error(`${JSON.stringify(raw)}: the prefix length must be 0 to ${width}`);
  const value = toBigInt(address, family);
  const mask = bits === 0 ? 0n : ((1n << BigInt(width)) - 1n) ^ ((1n << BigInt(width - bits)) - 1n);
  const net = value & mask;
  if (net !== value) throw new Error(`${JSON.stringify(raw)} has bits set past its /${bits} prefix: did you mean ${fromBigInt(net, family)}/${bits}?`);
  return { text: `${fromBigInt(net, family)}/${bits}`, family, bits, net };
}

function addCidr(list: BlockList, c: Cidr): void {
  list.addSubnet(fromBigInt(c.net, c.family), c.bits, c.family === 4 ? 'ipv4' : 'ipv6');
}

/** Two CIDRs of one family share an address exactly when one holds the other's network address. */
function overlaps(a: Cidr, b: Cidr): boolean {
  if (a.family !== b.family) return false;
  const width = a.family === 4 ? 32 : 128;
  const bits = Math.min(a.bits, b.bits);
  const shift = BigInt(width - bits);
  return a.net >> shift === b.net >> shift;
}

function toBigInt(address: string, family: number): bigint {
  if (family === 4) return address.split('.').reduce((n, part) => (n << 8n) | BigInt(Number(part)), 0n);
  let a = address.toLowerCase();
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  if (v4) {
    const n = toBigInt(v4[1]!, 4);
    a = `${a.slice(0, -v4[1]!.length)}${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
  }
  const [head, tail] = a.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.reduce((n, g) => (n << 16n) | BigInt(parseInt(g, 16)), 0n);
}

function fromBigInt(n: bigint, family: 4 | 6): string {
  if (family === 4) return [24n, 16n, 8n, 0n].map((s) => String((n >> s) & 255n)).join('.');
  const groups = Array.from({ length: 8 }, (_, i) => ((n >> BigInt(112 - 16 * i)) & 0xffffn).toString(16));
  // The longest run of zero groups (two or more) becomes '::', as RFC 5952 writes it.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}
