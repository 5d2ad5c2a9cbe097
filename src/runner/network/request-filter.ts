// The allow/deny decision alone: given a policy and what a request asks for, which rule
// decides. No I/O here; the proxy resolves names and asks checkAddress about the result.
import { BlockList, isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { isPreset, PRESETS } from './presets.ts';
import type { EgressPolicy } from './types.ts';

export interface EgressRequest {
  kind: 'http' | 'connect';
  /** As the client wrote it (the proxy normalizes it here). */
  host: string;
  port: number;
  /** Plain HTTP only. */
  method: string | null;
}

export type Decision =
  | { allowed: true; rule: string; host: string }
  | { allowed: false; rule: string; host: string; /** One sentence for the 403 body: what was refused and what to do. */ reason: string };

const DEFAULT_PORTS = [80, 443];

/** Lower case, no trailing dot, no brackets around an IPv6 literal. */
export function normalizeHost(host: string): string {
  let h = host.trim().toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (h.endsWith('.')) h = h.slice(0, -1);
  return h;
}

// A DNS name: labels of letters, digits, hyphens and underscores, at most 253 characters.
const HOSTNAME = /^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

/** Whether `pattern` (exact, or `*.suffix` for any name below suffix) matches `host` (normalized). */
export function domainMatches(pattern: string, host: string): boolean {
  const p = normalizeHost(pattern);
  if (p.startsWith('*.')) return host.endsWith(p.slice(1)) && host.length > p.length - 1;
  return p === host;
}

export function decide(policy: EgressPolicy, req: EgressRequest): Decision {
  const host = normalizeHost(req.host);
  const scope = policy.scope;
  const deny = (rule: string, reason: string): Decision => ({ allowed: false, rule, host, reason });
  // Raw addresses name no domain the policy could allow, and skip the address check's
  // companion, name resolution: always refused.
  if (isIP(host) || /^[0-9.]+$/.test(host) || /^0x/i.test(host)) {
    return deny('deny:ip-address', `${host} is an IP address; only domain names allowed by the policy are reachable`);
  }
  if (!HOSTNAME.test(host)) return deny('deny:invalid-host', `${JSON.stringify(req.host)} is not a valid host name`);
  const ports = policy.allowPorts ?? DEFAULT_PORTS;
  if (!Number.isInteger(req.port) || !ports.includes(req.port)) {
    return deny(`deny:${scope}:port:${req.port}`, `port ${req.port} is not allowed (allowed: ${ports.join(', ')}) by the ${scope} policy`);
  }
  if (req.kind === 'http' && policy.allowMethods && req.method !== null) {
    const method = req.method.toUpperCase();
    if (!policy.allowMethods.some((m) => m.toUpperCase() === method)) {
      return deny(`deny:${scope}:method:${method}`, `method ${method} is not allowed (allowed: ${policy.allowMethods.join(', ')}) by the ${scope} policy`);
    }
  }
  for (const pattern of policy.allowDomains) {
    if (domainMatches(pattern, host)) return { allowed: true, rule: `allow:${scope}:${normalizeHost(pattern)}`, host };
  }
  for (const name of policy.presets) {
    if (!isPreset(name)) continue;
    const hit = PRESETS[name].find((pattern) => domainMatches(pattern, host));
    if (hit) return { allowed: true, rule: `allow:${scope}:preset:${name}`, host };
  }
  return deny(`deny:${scope}:not-allowed`, `${host} is not in the ${scope} policy's allowed domains; ask for it to be added`);
}

/** Addresses the proxy never connects to: private, loopback, link-local, shared, documentation, multicast, reserved. */
const FORBIDDEN = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.88.99.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15],
  ['198.51.100.0', 24], ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) FORBIDDEN.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of [
  ['::', 128], ['::1', 128], ['64:ff9b::', 96], ['64:ff9b:1::', 48], ['100::', 64], ['2001::', 23], ['2001:db8::', 32],
  ['2002::', 16], ['fc00::', 7], ['fe80::', 10], ['fec0::', 10], ['ff00::', 8],
] as const) FORBIDDEN.addSubnet(net, prefix, 'ipv6');

/** What no trusted network opens, whatever a caller's predicate says (company.ts refuses them at start too): loopback, link-local, unspecified. */
const UNTRUSTABLE = new BlockList();
for (const [net, prefix] of [['0.0.0.0', 8], ['127.0.0.0', 8], ['169.254.0.0', 16]] as const) UNTRUSTABLE.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of [['::', 128], ['::1', 128], ['fe80::', 10], ['fd00:ec2::254', 128]] as const) UNTRUSTABLE.addSubnet(net, prefix, 'ipv6');

/** The IPv4 address inside an IPv4-mapped or -compatible IPv6 address, else the address itself. */
export function unmapAddress(address: string): string {
  const m = /^::(ffff:)?(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (m) return m[2]!;
  const hex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(address);
  if (hex) {
    const hi = parseInt(hex[1]!, 16);
    const lo = parseInt(hex[2]!, 16);
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return address;
}

export function blockListOf(cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  for (const cidr of cidrs) {
    const [net, bits] = cidr.split('/');
    const type = isIP(net ?? '') === 6 ? 'ipv6' : 'ipv4';
    if (!net || !isIP(net)) throw new Error(`not a CIDR: ${cidr}`);
    list.addSubnet(net, bits === undefined ? (type === 'ipv4' ? 32 : 128) : Number(bits), type);
  }
  return list;
}

/**
 * Whether the proxy may connect to `address` (a resolved name's address): null if so,
 * else the deny rule. `hostAddresses` are this host's own; `allowPrivate` is the test escape hatch;
 * `trusted` says whether a private address lies in an instance's trusted network.
 */
export function checkAddress(
  address: string,
  opts: { hostAddresses?: ReadonlySet<string>; allowPrivate?: BlockList | undefined; trusted?: ((address: string) => boolean) | undefined } = {},
): string | null {
  const a = unmapAddress(address);
  const family = isIP(a);
  if (family === 0) return `deny:bad-address:${address}`;
  const type = family === 4 ? 'ipv4' : 'ipv6';
  if (opts.allowPrivate?.check(a, type)) return null;
  const own = opts.hostAddresses?.has(a) ?? false;
  // A trusted network (company.ts) opens private space, never this host's own addresses.
  if (FORBIDDEN.check(a, type)) return !own && !UNTRUSTABLE.check(a, type) && opts.trusted?.(a) ? null : `deny:private-address:${a}`;
  if (own) return `deny:host-address:${a}`;
  return null;
}

/** Every address of this host's interfaces, as they are now. */
export function hostAddressesNow(): Set<string> {
  const set = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) set.add(a.address);
  return set;
}

/**
 * Whether a request path (query allowed) lies under `prefix` on a segment boundary: `/v1`
 * (or `/v1/`) covers `/v1`, `/v1/…` and `/v1?…`, never `/v10` or `/v1x`. Dot segments are
 * the caller's to resolve first (new URL does, %2e too); one that appears only once the path
 * is percent-decoded (`/v1/..%2fadmin`, which some servers decode and then resolve) puts the
 * path under no prefix but `/`: no credential rather than the wrong one.
 */
export function pathUnder(path: string, prefix: string): boolean {
  const pathname = path.split('?')[0]!;
  if (!pathname.startsWith('/')) return false;
  const p = prefix.replace(/\/+$/, '');
  if (p === '') return true;
  let decoded: string;
  try {
    decoded = decodeURIComponent(pathname);
  } catch {
    return false;
  }
  if (decoded.split(/[/\\]/).some((s) => s === '.' || s === '..')) return false;
  return pathname === p || pathname.startsWith(`${p}/`);
}
