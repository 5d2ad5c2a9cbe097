// The runners API's shapes, declared once for the server, /openapi.json, the CLI and the web UI.
import { z } from 'zod';

/** What a runner says about itself in each heartbeat. */
export const RunnerReport = z.object({
  backend: z.string().describe('the isolation backend: crun, runc or runsc'),
  cgroups: z.enum(['v2', 'v1', 'hybrid']).describe("how the host mounts cgroups"),
  cpus: z.number().int().describe("the host's CPU cores"),
  memoryBytes: z.number().describe("the host's memory"),
  offeredMemoryBytes: z.number().optional().describe('the memory it offers to environments when not all of the host\'s (BERTH_RUNNER_MEMORY): placement never puts more environment memory limits on it'),
  environments: z.object({ running: z.number().int(), total: z.number().int().describe('every environment not deleted, running or stopped') }),
  tasks: z.object({ running: z.number().int(), concurrency: z.number().int().describe('tasks it works on at once; the rest wait queued') }),
  network: z.object({
    egressProxy: z.boolean().describe('environments get a network namespace whose only way out is the egress proxy'),
    nftables: z.boolean().describe('nft is installed (the namespace firewall needs it)'),
    trustedNetworks: z.array(z.string()).optional().describe('networks names a policy allows may resolve into (berth up --trusted-network, BERTH_EGRESS_TRUSTED_NETWORKS)'),
    upstreamProxy: z.string().nullable().optional().describe("the company proxy allowed requests go through, without credentials (BERTH_EGRESS_UPSTREAM_PROXY); null: none"),
    noProxy: z.array(z.string()).optional().describe('destinations reached directly instead (BERTH_EGRESS_UPSTREAM_NO_PROXY)'),
  }),
  diskQuota: z.boolean().describe('each environment writes to a disk image of its limit (BERTH_DISK_QUOTA=off: no)'),
  dataDisk: z.object({ freeBytes: z.number(), totalBytes: z.number() }).describe("the file system of the runner's data directory"),
  checkpoint: z
    .object({ available: z.boolean(), reason: z.string().optional().describe('why not, and what would make it work') })
    .optional()
    .describe('whether `berth env pause` can keep an environment\'s processes and memory here (CRIU under its runtime); absent from runners that do not say'),
  snapshots: z
    .object({ available: z.boolean(), reason: z.string().optional().describe('why not, and what would make it work') })
    .optional()
    .describe('whether `berth env snapshot`, `berth env fork` and prebuilds work here (the btrfs state store); absent from runners that do not say'),
  problems: z.array(z.string()).describe('what makes the runner degraded; empty when it is healthy'),
  heartbeatMs: z.number().int().describe('how often it reports'),
});
export type RunnerReport = z.infer<typeof RunnerReport>;

export const RUNNER_HEALTH = ['ok', 'degraded', 'offline'] as const;
export type RunnerHealth = (typeof RUNNER_HEALTH)[number];

export const Runner = RunnerReport.omit({ problems: true }).extend({
  id: z.string().describe('the id its tasks carry'),
  name: z.string(),
  host: z.string().describe('host name'),
  version: z.string().describe('Berth version'),
  health: z.object({
    status: z.enum(RUNNER_HEALTH).describe('offline: no heartbeat for three intervals, or stopped'),
    reasons: z.array(z.string()).describe('why it is not ok'),
  }),
  startedAt: z.string(),
  lastHeartbeatAt: z.string(),
  labels: z.record(z.string(), z.string()).describe('placement labels: environments and tasks that ask for labels go to a runner carrying them'),
  draining: z.boolean().describe('no new environments or tasks go to it; what runs there finishes (`berth runner drain`)'),
});
export type Runner = z.infer<typeof Runner>;

export const RunnerList = z.object({ items: z.array(Runner) });
export type RunnerList = z.infer<typeof RunnerList>;

/** A token runners on other hosts join with (`berth runner join --token`); the token itself is shown once, at creation. */
export const RunnerToken = z.object({
  id: z.string(),
  name: z.string().nullable(),
  labels: z.record(z.string(), z.string()).describe('labels every runner joining with it carries (its own --labels add to them; these win)'),
  createdBy: z.string(),
  createdAt: z.string(),
  lastUsedAt: z.string().nullable(),
  revokedAt: z.string().nullable(),
});
export type RunnerToken = z.infer<typeof RunnerToken>;
export const RunnerTokenList = z.object({ items: z.array(RunnerToken) });
export type RunnerTokenList = z.infer<typeof RunnerTokenList>;
export const CreateRunnerToken = z.strictObject({
  name: z.string().min(1).max(128).optional(),
  labels: z
    .record(z.string().regex(/^[a-z0-9][a-z0-9._/-]{0,62}$/, 'a label key is lower-case letters, digits and . _ / -'), z.string().max(128))
    .refine((l) => Object.keys(l).length <= 32, 'at most 32 labels')
    .optional(),
});
export type CreateRunnerToken = z.infer<typeof CreateRunnerToken>;
export const CreatedRunnerToken = RunnerToken.extend({ token: z.string().describe('shown this once: give it to `berth runner join --token`') });
export type CreatedRunnerToken = z.infer<typeof CreatedRunnerToken>;
