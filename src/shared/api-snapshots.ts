// Snapshots (`berth env snapshot`, `berth snapshot …`), forks (`berth env fork`) and
// environments made from a snapshot (`berth env create --from`).
import { z } from 'zod';
import { CreateEnvironmentBody, Environment, NAME_PATTERN, Person } from './api.ts';

export const SNAPSHOT_KINDS = ['manual', 'fork', 'prebuild'] as const;
export const SNAPSHOT_STATES = ['creating', 'ready', 'failed', 'deleting'] as const;
/** Environments one fork makes at most. */
export const MAX_FORK_COUNT = 100;

const name = z.string().regex(NAME_PATTERN, 'use lower-case letters, digits and dashes (at most 63), starting with a letter or digit');

export const Snapshot = z.object({
  id: z.string(),
  name: z.string(),
  kind: z.enum(SNAPSHOT_KINDS).describe('manual (`berth env snapshot`), fork (made by `berth env fork`) or prebuild (a project\'s)'),
  state: z.enum(SNAPSHOT_STATES),
  stateReason: z.string().nullable(),
  environmentId: z.string().nullable().describe('the environment it froze (it may since have been removed)'),
  environmentName: z.string().nullable(),
  projectId: z.string().nullable(),
  runnerId: z.string().describe('the runner it lives on: environments made from it go there'),
  runnerName: z.string().nullable(),
  image: z.string(),
  imageDigest: z.string().nullable(),
  bytes: z.number().nullable().describe('bytes it references (shared with the environments made from it, so not what it adds to the disk)'),
  copied: z.boolean().describe('its files were copied (an environment kept outside the runner\'s state store) rather than frozen in place'),
  pausedMs: z.number().nullable().describe('how long a running environment was paused for it'),
  createdBy: Person.nullable(),
  createdAt: z.string(),
  environments: z.number().describe('environments made from it that still exist (they keep their files when it is removed)'),
  inUseBy: z.array(z.string()).describe('what keeps it from being removed: a project\'s current prebuild, environments being made from it'),
});
export type Snapshot = z.infer<typeof Snapshot>;

export const SnapshotList = z.object({ items: z.array(Snapshot) });
export type SnapshotList = z.infer<typeof SnapshotList>;

export const SnapshotRef = z.object({ org: z.string(), snapshot: z.string().min(1).max(100) });

export const ListSnapshotsQuery = z.strictObject({
  kind: z.enum(SNAPSHOT_KINDS).optional(),
  project: z.string().min(1).max(100).optional().describe('only this project\'s (name or id)'),
});

export const CreateSnapshotBody = z.strictObject({
  name: name.optional().describe('a name to tell it by (default: the environment\'s name and the time)'),
});
export type CreateSnapshotBody = z.infer<typeof CreateSnapshotBody>;

export const ForkEnvironmentBody = z.strictObject({
  count: z.number().int().min(1).max(MAX_FORK_COUNT).default(1).describe(`how many environments (at most ${MAX_FORK_COUNT})`),
  name: name.optional().describe('the new environments\' name, numbered -1, -2 … (default: the source\'s name with -fork-N)'),
});
export type ForkEnvironmentBody = z.input<typeof ForkEnvironmentBody>;

export const ForkResult = z.object({ snapshot: Snapshot, environments: z.array(Environment) });
export type ForkResult = z.infer<typeof ForkResult>;

/** An environment made from a snapshot (`berth env create --from`): a create's body without the image, which is the snapshot's. */
export const CreateFromSnapshotBody = CreateEnvironmentBody.omit({ image: true, runnerLabels: true });
export type CreateFromSnapshotBody = z.infer<typeof CreateFromSnapshotBody>;
