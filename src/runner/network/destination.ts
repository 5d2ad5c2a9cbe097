// Where a connection the host makes on someone's behalf may go: the egress proxy's address
// rules (request-filter.ts checkAddress), for connections that do not pass through a proxy —
// host-side git for tasks and projects, forge APIs, registry pulls. The name is resolved here
// and the address that passed is the one to connect to: a second lookup by the client could
// answer differently (DNS rebinding), so callers pin it (git: http.curloptResolve).
// Trusted networks (company.ts) do not widen this: here no policy names the host — any
// member may type a repository URL — so private hosts stay behind the explicit allowances
// (BERTH_ALLOWED_GIT_HOSTS, BERTH_ALLOWED_REGISTRIES, BERTH_ALLOWED_MODEL_HOSTS).
import { BlockList, isIP } from 'node:net';
import { lookup } from 'node:dns/promises';
import { blockListOf, checkAddress, hostAddressesNow, normalizeHost } from './request-filter.ts';

/** Answers every address of a name (tests pass one that knows their names). */
export type DestinationResolver = (host: string) => Promise<string[]>;

export const systemResolver: DestinationResolver = async (host) => (await lookup(host, { all: true, verbatim: true })).map((a) => a.address);

/**
 * Private destinations an instance administrator allows: CIDRs or addresses (10.0.0.0/8,
 * 127.0.0.1) and host names (gitlab.corp), which are then trusted whatever they resolve to.
 */
export interface PrivateAllowance {
  addresses: BlockList | undefined;
  names: ReadonlySet<string>;
}

export const NO_ALLOWANCE: PrivateAllowance = { addresses: undefined, names: new Set() };

/** Reads a list such as `gitlab.corp,10.1.0.0/16,127.0.0.1`; throws with the entry that is neither. */
export function privateAllowanceOf(entries: readonly string[]): PrivateAllowance {
  const cidrs: string[] = [];
  const names = new Set<string>();
  for (const raw of entries) {
    const entry = raw.trim();
    if (entry === '') continue;
    const [net] = entry.split('/');
    if (isIP(net ?? '')) cidrs.push(entry);
    else if (/^[a-z0-9_.-]+$/i.test(entry) && !entry.includes('/')) names.add(normalizeHost(entry));
    else throw new Error(`${JSON.stringify(entry)} is neither a host name nor an address or CIDR`);
  }
  return { addresses: cidrs.length ? blockListOf(cidrs) : undefined, names };
}

export type Destination =
  | { ok: true; host: string; /** The address to connect to; null for a host the allowance trusts by name (resolved by the client). */ address: string | null }
  | { ok: false; host: string; /** 'unresolved': the name has no address now; 'refused': it points where the host must not go. */ why: 'unresolved' | 'refused'; rule: string; reason: string };

/**
 * Whether the host may connect to `host` for someone else. Fails closed: a resolver that
 * throws, or an address that is not one, is a refusal. Private, loopback, link-local (cloud
 * metadata), shared and reserved addresses and this host's own are refused unless allowed.
 */
export async function resolveDestination(host: string, o: { resolver?: DestinationResolver | undefined; allow?: PrivateAllowance | undefined } = {}): Promise<Destination> {
  const name = normalizeHost(host);
  const allow = o.allow ?? NO_ALLOWANCE;
  if (allow.names.has(name)) return { ok: true, host: name, address: null };
  let addresses: string[];
  if (isIP(name)) addresses = [name];
  else {
    try {
      addresses = await (o.resolver ?? systemResolver)(name);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      return { ok: false, host: name, why: 'unresolved', rule: 'error:resolve', reason: `${name} could not be resolved (${code})` };
    }
  }
  if (addresses.length === 0) return { ok: false, host: name, why: 'unresolved', rule: 'error:resolve', reason: `${name} has no addresses` };
  const own = hostAddressesNow();
  let firstRefusal: string | undefined;
  for (const address of addresses) {
    const refused = checkAddress(address, { hostAddresses: own, allowPrivate: allow.addresses });
    if (!refused) return { ok: true, host: name, address };
    firstRefusal ??= refused;
  }
  return {
    ok: false,
    host: name,
    why: 'refused',
    rule: firstRefusal!,
    reason: `${name} is a private, loopback, link-local or this host's own address (or resolves to one), which Berth does not connect to from the host`,
  };
}
