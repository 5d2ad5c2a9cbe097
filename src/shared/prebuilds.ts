// Prebuilds: a project's repository cloned at its default branch's head, set up, and frozen
// into a snapshot tasks start from. What the API, the CLI and the server agree on.
import { z } from 'zod';

export const PREBUILD_STATES = ['queued', 'building', 'ready', 'failed', 'expired'] as const;
export const DEFAULT_PREBUILD_KEEP = 3;

/** A project's prebuild settings (projects.settings.prebuild). */
export const PrebuildSettings = z.strictObject({
  schedule: z.string().min(1).max(200).optional().describe("a cron rule (five fields, like '0 3 * * *') that queues a prebuild"),
  timezone: z.string().min(1).max(100).optional().describe('the IANA zone the schedule is read in; UTC by default'),
  keep: z.number().int().min(1).max(100).optional().describe(`ready prebuilds kept; older ones expire (default ${DEFAULT_PREBUILD_KEEP})`),
  maxAge: z.string().regex(/^(\d+(\.\d+)?(ms|s|m|h|d))+$/, 'a duration like 7d or 12h').optional().describe('ready prebuilds older than this expire (the newest is always kept)'),
  onPush: z.boolean().optional().describe('a push to the default branch (GitHub, GitLab webhooks) queues one; true by default'),
});
export type PrebuildSettings = z.infer<typeof PrebuildSettings> & {
  /** When the schedule was set: slots before it are not made up. Written by the server. */
  since?: string | undefined;
};

export interface Prebuild {
  id: string;
  project: string;
  state: (typeof PREBUILD_STATES)[number];
  trigger: 'manual' | 'schedule' | 'push';
  branch: string | null;
  commit: string | null;
  specKey: string | null;
  snapshotId: string | null;
  snapshotBytes: number | null;
  runnerId: string | null;
  stateReason: string | null;
  /** The last lines of its setup's output. */
  log: string[];
  createdBy: string;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

/** One project's warm pool now, as `berth project show` tells it. */
export const WarmPoolStatus = z
  .object({
    wanted: z.number(),
    ready: z.number().describe('started and claimable now'),
    starting: z.number().describe('being made or started'),
    prebuildId: z.string().nullable().describe('the prebuild they are made from (its newest ready one); null when it has none yet'),
    retiring: z.number().describe('of an older prebuild, broken or one too many: being removed, never claimed'),
    lastError: z.string().nullable().describe('why the last refill failed, until one succeeds'),
  })
  .describe('its warm pool now');
export type WarmPoolStatus = z.infer<typeof WarmPoolStatus>;
