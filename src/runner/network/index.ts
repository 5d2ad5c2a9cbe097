// The environment network: a namespace per environment whose only way out is the
// runner's egress proxy, which applies the environment's policy and records every request.
export type { EgressPolicy, PolicySource, NetworkEvent, NetworkEventSink, NetworkUsage, Resolver, RunnerNetworkOptions } from './types.ts';
export { NetworkManager, CA_BUNDLE_PATH, type PreparedNetwork } from './manager.ts';
export { NetworkEventStore } from './event-store.ts';
export { EgressProxy, defaultResolver, type EgressProxyOptions } from './proxy.ts';
export { decide, checkAddress, domainMatches, normalizeHost, type Decision, type EgressRequest } from './request-filter.ts';
export { resolveDestination, privateAllowanceOf, type Destination, type DestinationResolver, type PrivateAllowance } from './destination.ts';
export { PRESETS, PRESET_NAMES, isPreset, type PresetName } from './presets.ts';
export { DENY_ALL } from './policy.ts';
export { loadCompanyCas, writeHostTrust, type CompanyCa, type HostTrust } from './company-ca.ts';
export { egressNetworkConfigFrom, summarizeEgressNetwork, bypassesUpstream, isTrusted, NO_COMPANY_NETWORK, COMPANY_ENV, type EgressNetworkConfig, type EgressNetworkSummary, type UpstreamProxy } from './company.ts';
