// Runners: the hosts that run environments, each reporting itself every few seconds.
export { RunnerRegistry, type RunnerBeat } from './registry.ts';
export { RunnerHeartbeat, type HeartbeatOptions } from './heartbeat.ts';
export { RunnerPool, type PlacementRequest } from './pool.ts';
export { RunnerTokenService } from './tokens.ts';
export { JoinedRunners, type JoinedRunnersOptions } from './joined.ts';
export { RunnerSweeper, type RunnerSweepOptions } from './sweeper.ts';
export { runnerMemoryFrom, runnerOfflineAfterFrom, taskRetriesFrom } from './settings.ts';
