// Prebuilds: a project's repository cloned at its default branch's head, set up and frozen
// into a snapshot its tasks start from (issue #16). Warm pools keep environments made from one.
export { PrebuildService, systemScope, type PrebuildRow } from './service.ts';
export { PrebuildBuilder, type PrebuildBuilderDeps } from './builder.ts';
export type { WarmPools } from './types.ts';
