// The network's contract with the rest of Berth: what a policy says, where policies
// come from, and what the proxy reports. The policy store (server side) implements
// PolicySource; the audit log implements NetworkEventSink.
import type { PackageMirror } from '../mirrors.ts';
import type { EgressNetworkConfig } from './company.ts';

/** One environment's egress policy, as the proxy applies it to each request. */
export interface EgressPolicy {
  /** Exact names (`registry.npmjs.org`) or one-level-or-deeper wildcards (`*.example.com`, which does not match `example.com` itself). */
  allowDomains: string[];
  /** Names from PRESETS: 'npm' | 'pypi' | 'crates' | 'go' | 'debian' | 'ubuntu' | 'github'. */
  presets: string[];
  /** Destination ports allowed; null: 80 and 443. */
  allowPorts: number[] | null;
  /**
   * Methods allowed for every request the proxy reads: plain HTTP, plain HTTP inside a
   * CONNECT tunnel, and TLS it terminates (hosts with credentials); other TLS tunnels' methods
   * are not visible. null: any.
   */
  allowMethods: string[] | null;
  /** Concurrent connections to the proxy, per environment. */
  maxConnections: number;
  /** Headers the proxy adds on the way out, over TLS, for exactly `host` and paths under `pathPrefix` (whole segments: /v1 is not /v10); `value` never enters the sandbox. */
  credentials: { host: string; pathPrefix: string; header: string; value: string; name: string }[];
  /** Where the decision came from, for the event's rule: e.g. 'environment', 'project:web', 'org'. */
  scope: string;
}

/** Synchronous, asked per connection and per request: the implementation caches and refreshes (changes must apply within a second). */
export interface PolicySource {
  policyFor(environmentId: string): EgressPolicy;
  /** The package mirrors the environment's tools are pointed at (runner/mirrors.ts), read at each start; none when absent. */
  mirrorsFor?(environmentId: string): PackageMirror[];
}

export interface NetworkEvent {
  environmentId: string;
  at: string;
  /**
   * 'http': a plain-HTTP request (or one inside a TLS connection the proxy terminates);
   * 'connect': a CONNECT tunnel; 'firewall': packets the namespace's rules refused to one
   * destination (a direct connection, DNS, IPv6 …), with the protocol as `method`.
   */
  kind: NetworkEventKind;
  host: string;
  port: number;
  method: string | null;
  path: string | null;
  allowed: boolean;
  /** The rule that decided, e.g. `allow:environment:*.example.com`, `deny:private-address:127.0.0.1`. */
  rule: string;
  status: number | null;
  bytesUp: number;
  bytesDown: number;
  durationMs: number;
  error?: string;
  /** 'firewall' events: the packets refused to this destination since the last such event. */
  packets?: number;
}

export type NetworkEventKind = 'http' | 'connect' | 'firewall';

export interface NetworkEventSink {
  record(e: NetworkEvent): void;
}

/** Bytes and connections through one environment's proxy since the runner started. */
export interface NetworkUsage {
  bytesUp: number;
  bytesDown: number;
  /** Connections accepted (cumulative). */
  connections: number;
  /** Connections open now. */
  open: number;
  /** Connections refused because `maxConnections` were open. */
  refused: number;
  /** The most connections open at once. */
  peak: number;
}

/** Resolves a name to addresses (dns.lookup's shape). Injectable so tests can make a name resolve anywhere. */
export type Resolver = (host: string) => Promise<string[]>;

/** What LocalRunner takes to give environments a network (without it they have none). */
export interface RunnerNetworkOptions {
  policies: PolicySource;
  events: NetworkEventSink;
  /** Name resolution for the proxy (default: the host's resolver, dns.lookup). */
  resolver?: Resolver | undefined;
  /**
   * TESTS AND BENCHMARKS ONLY: CIDRs the proxy may connect to although they are private,
   * loopback or link-local (say ['127.0.0.1/32'] for a local "outside" server). Never
   * taken from policy input.
   */
  allowPrivateAddresses?: string[] | undefined;
  /** Extra CAs (PEM) the proxy trusts when it terminates TLS and connects upstream itself (tests' local servers). */
  upstreamCa?: string | undefined;
  /**
   * Company CAs (PEM, one certificate each; company-ca.ts checked them): every environment
   * trusts them (its bundle, variables and system store: trust-layer.ts), and so does the
   * proxy's own TLS upstream.
   */
  companyCas?: readonly string[] | undefined;
  /** Trusted networks and the company's upstream proxy (company.ts), from `berth up`'s settings. */
  egressNetwork?: EgressNetworkConfig | undefined;
  /** IPv4 range the veth pairs' /31s come from (default 100.96.0.0/11, carrier-grade NAT space). */
  subnet?: string | undefined;
  /** Namespaces kept made ahead, so a start does not wait for ip and nft (default 2; 0: none). */
  warm?: number | undefined;
  /** How long the nft that reads an environment's refusals lives without any (default 30 s; see firewall-log.ts). */
  firewallIdleMs?: number | undefined;
}
