// The LLM gateway: how agents in environments reach models without holding a provider key.
export { LlmGateway, MAX_BODY_BYTES, type GatewayOptions } from './server.ts';
export { tableCost, type CostFn } from './cost.ts';
export type { GatewayCall, IssueOptions, IssuedToken } from './grants.ts';
export type { TokenCounts } from './protocols.ts';
export { upstreamsFromEnv, type Provider, type Upstream, type Upstreams } from './upstreams.ts';
export { GATEWAY_SOCKET_NAME, RELAY_PORT, gatewayEnv, relayCommand, relayReady } from './relay.ts';
