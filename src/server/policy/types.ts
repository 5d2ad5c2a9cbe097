// The contract with the runner's egress proxy lives with the proxy.
export type { EgressPolicy, NetworkEvent, NetworkEventSink, PolicySource } from '../../runner/network/index.ts';
