// Tasks: a goal and a repository handed to an agent, run in an environment, ending in a pull request.
export { TaskService, DEFAULT_BUDGET } from './service.ts';
export { TaskEvents } from './events.ts';
export { TaskWorker } from './worker.ts';
export { RunnerWorkers, type RunnerWorkersOptions } from './runner-workers.ts';
export type { PipelineDeps } from './pipeline.ts';
export { readRepoSpec, mergeSpec, fromBerthYaml, fromDevContainer, ProjectWorkSettings, type WorkSpec } from './repo-config.ts';
export { resolveProjectSpec, type ResolvedProjectSpec } from './project-spec.ts';
export { sandboxGateway, type CommandAgentGateway } from './gateway.ts';
