export { NetworkEventRecorder } from './recorder.ts';
export { NetworkEventRetention, retentionFrom, sweepNetworkEvents, DEFAULT_RETENTION_MS } from './retention.ts';
