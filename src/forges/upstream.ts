// The host's own outbound connections through the company's outbound proxy (company.ts's
// UpstreamProxy, BERTH_EGRESS_UPSTREAM_PROXY), as environments' traffic goes: host-side git
// and the forge APIs, unless BERTH_EGRESS_UPSTREAM_NO_PROXY names the destination. The
// proxy is asked for the name; the host's own address rules were checked before.
import { ProxyAgent, fetch as undiciFetch } from 'undici';
import { bypassesUpstream, type EgressNetworkConfig, type UpstreamProxy } from '../runner/network/index.ts';
import { inSpan } from '../shared/spans.ts';

export type HostUpstream = Pick<EgressNetworkConfig, 'upstreamProxy' | 'noProxy'>;

/**
 * The route to `host` (its checked `address`, when known): `{ url }` through the upstream
 * proxy, where the URL carries the credentials for git's environment; null to go directly;
 * undefined when no upstream proxy is configured (the host's own proxy variables apply).
 */
export function upstreamFor(upstream: HostUpstream, host: string, address: string | undefined): { url: string } | null | undefined {
  const hop = upstream.upstreamProxy;
  if (!hop) return undefined;
  if (bypassesUpstream(upstream.noProxy, host, address)) return null;
  return { url: upstreamProxyUrl(hop) };
}

/** `http://user:password@host:port`, user and password percent-encoded, from the Proxy-Authorization the config holds. */
export function upstreamProxyUrl(hop: UpstreamProxy): string {
  const authority = `${hop.host.includes(':') ? `[${hop.host}]` : hop.host}:${hop.port}`;
  if (!hop.authorization) return `http://${authority}`;
  const pair = Buffer.from(hop.authorization.replace(/^Basic /, ''), 'base64').toString('utf8');
  const colon = pair.indexOf(':');
  return `http://${encodeURIComponent(pair.slice(0, colon))}:${encodeURIComponent(pair.slice(colon + 1))}@${authority}`;
}

/** The secrets a proxy URL holds, for redaction: the URL's password as written and decoded. */
export function proxySecrets(url: string): string[] {
  const u = new URL(url);
  return u.password ? [u.password, decodeURIComponent(u.password)] : [];
}

let route: { upstream: HostUpstream; agent: ProxyAgent } | undefined;

/**
 * The instance's upstream proxy for the host's API calls (forges), set once by startBerth
 * like its CA certificates; undefined or no proxy: fetch goes directly.
 */
export function routeHostFetch(upstream: HostUpstream | undefined): void {
  const previous = route;
  const hop = upstream?.upstreamProxy;
  route = hop && upstream ? { upstream, agent: new ProxyAgent({ uri: `http://${hop.host.includes(':') ? `[${hop.host}]` : hop.host}:${hop.port}`, token: hop.authorization }) } : undefined;
  void previous?.agent.close().catch(() => {});
}

/** fetch for the host's calls to forge APIs: through the upstream proxy unless NO_PROXY names the host. */
export const hostFetch: typeof fetch = (input, init) => {
  const url = new URL(input instanceof Request ? input.url : String(input));
  // A span per forge API call under the current work (a task's pull request), when traces are on: the host, never the path.
  return inSpan('forge.http', { 'http.request.method': init?.method ?? (input instanceof Request ? input.method : 'GET'), 'server.address': url.hostname }, () => hostFetchVia(url, input, init));
};

function hostFetchVia(url: URL, input: Parameters<typeof fetch>[0], init: Parameters<typeof fetch>[1]): Promise<Response> {
  if (!route) return fetch(input, init);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  // A CIDR entry can only match an address written in the URL: the name is not resolved again here.
  if (bypassesUpstream(route.upstream.noProxy, host, host)) return fetch(input, init);
  return undiciFetch(input as Parameters<typeof undiciFetch>[0], { ...(init as Parameters<typeof undiciFetch>[1]), dispatcher: route.agent }) as unknown as Promise<Response>;
}
