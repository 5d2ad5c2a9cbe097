// An environment's export (`berth env export`): a tar whose first entry is manifest.json
// and whose second is state.tar, the environment's own layer as its runner made it. The
// manifest says what to make of it and how to check it before anything is made.
import { z } from 'zod';
import { NAME_PATTERN } from './api.ts';

export const ARCHIVE_FORMAT = 'berth-environment';
export const ARCHIVE_VERSION = 1;
export const MANIFEST_ENTRY = 'manifest.json';
export const STATE_ENTRY = 'state.tar';
/** The largest manifest an import reads. */
export const MAX_MANIFEST_BYTES = 64 * 1024;
/** Headroom of a state's tar over its environment's disk limit (headers, padding). */
export const STATE_OVERHEAD_BYTES = 256 * 1024 * 1024;

export const EnvironmentManifest = z.strictObject({
  format: z.literal(ARCHIVE_FORMAT),
  version: z.literal(ARCHIVE_VERSION),
  createdAt: z.string().max(64),
  environment: z.strictObject({
    id: z.string().max(64),
    name: z.string().regex(NAME_PATTERN),
    user: z.string().max(256).nullable(),
  }),
  image: z.strictObject({ ref: z.string().min(1).max(4096), digest: z.string().regex(/^sha256:[0-9a-f]{64}$/) }),
  limits: z.strictObject({
    cpus: z.number().positive(),
    memoryBytes: z.number().int().positive(),
    diskBytes: z.number().int().positive(),
    pidsLimit: z.number().int().positive(),
    idleTimeoutMs: z.number().int().positive().nullable(),
    maxLifetimeMs: z.number().int().positive().nullable(),
  }),
  state: z.strictObject({ file: z.literal(STATE_ENTRY), bytes: z.number().int().min(0), sha256: z.string().regex(/^[0-9a-f]{64}$/) }),
});
export type EnvironmentManifest = z.infer<typeof EnvironmentManifest>;

export const ImportEnvironmentQuery = z.strictObject({
  name: z.string().regex(NAME_PATTERN, 'use lower-case letters, digits and dashes (at most 63), starting with a letter or digit').optional().describe("the new environment's name (default: the exported one's)"),
  runnerLabels: z.string().max(4096).optional().describe('labels the runner it goes to must carry, as a JSON object (`{"gpu":"true"}`)'),
});
