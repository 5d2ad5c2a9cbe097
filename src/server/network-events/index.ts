export { NetworkEventRecorder } from './recorder.ts';
export { NetworkEventRetention, retentionFrom, sweepNetworkEvents, DEFAULT_RETENTION_MS } from './retention.ts';
export { DenialStorms, stormSettingsFrom, DEFAULT_STORM_SETTINGS, type DenialObserver, type Storm, type StormSettings } from './storms.ts';
