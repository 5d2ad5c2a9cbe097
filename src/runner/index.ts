// The runner: makes and runs environments on this host.
export { LocalRunner } from './runner.ts';
export type { Runner, RunnerImages, RunnerCapacity, BuildImageRequest, EnvironmentSpec, CommandOptions, EnvironmentUsage, ContainerStatus } from './port.ts';
export type { ResolvedUser } from './users.ts';
export type { RunningCommand, ExitStatus } from './exec.ts';
export { TIMEOUT_EXIT_CODE } from './exec.ts';
export { ImageBuilder, type BuildSpec } from './images/index.ts';
export { ImageStore, DEFAULT_IMAGE, isRegistryReference, parseMirrors, type ImageRecord, type ImageProgress, type RegistryCredential, type RegistryMirrors } from './images/index.ts';
export { tarEntries } from './images/tar-entries.ts';
export { checkStateFile, DEFAULT_STATE_ENTRIES } from './state-tar.ts';
export { pauseEnvironment, runsHere, type Paused } from './freeze.ts';
export { OfflineStore, STORED_MARKER } from './store-backup.ts';
export { packCheckout } from './images/checkout-tar.ts';
export { cgroupLayout } from './cgroups.ts';
export { probeHost, type HostProbe } from './health.ts';
export { probeCheckpoint, type CheckpointSupport } from './checkpoint.ts';
export { LlmGateway, upstreamsFromEnv, GATEWAY_SOCKET_NAME, gatewayEnv, relayCommand, relayReady, type GatewayCall, type Upstreams } from './gateway/index.ts';
