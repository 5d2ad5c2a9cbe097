// The campaign API's shapes, declared once for the server, /openapi.json, the CLI and the web UI.
// A campaign is one change across many repositories: one task per repository, run at most
// `concurrency` at once, each pushing to the campaign's branch and opening one pull request.
import { z } from 'zod';
import { OrgRef } from './api.ts';
import { agentCommand, oneOffFields, TaskGoal, taskWorkFields } from './api-tasks.ts';

export const CampaignRef = OrgRef.extend({ id: z.string().min(1).max(100).describe('campaign name or id') });

export const CAMPAIGN_STATES = ['running', 'paused', 'cancelled', 'done'] as const;
export type CampaignState = (typeof CAMPAIGN_STATES)[number];

/** pending → starting → running → succeeded | failed | cancelled; a failure of the infrastructure goes back to pending while retries last. */
export const TARGET_STATES = ['pending', 'starting', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type TargetState = (typeof TARGET_STATES)[number];

/**
 * Why a target failed. `infrastructure`: before the agent began (its runner was lost, the
 * clone or the environment failed): retried up to maxRetries. The others are the work's own
 * and are not retried: `agent` (the agent failed or changed nothing), `check` (the checks
 * failed), `timeout`, `refused` (the task could not be made: a project archived, a repository
 * Berth may not reach).
 */
export const FAILURE_KINDS = ['infrastructure', 'agent', 'check', 'timeout', 'refused'] as const;
export type FailureKind = (typeof FAILURE_KINDS)[number];

export const MAX_CAMPAIGN_REPOS = 10_000;

/** `1/s`, `30/m`, `0.5/s`, `100/h`: task starts per unit of time (each start makes a few forge API calls). */
export function parseRate(s: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*\/\s*(s|sec|second|m|min|minute|h|hour)\s*$/i.exec(s);
  if (!m) return undefined;
  const n = Number(m[1]);
  const per = { s: 1, m: 60, h: 3600 }[m[2]!.toLowerCase()[0] as 's' | 'm' | 'h'];
  return n > 0 ? n / per : undefined;
}

export const CreateCampaignBody = z
  .strictObject({
    name: z.string().trim().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'a name of lower-case letters, digits, dot, dash and underscore (up to 63), starting with a letter or digit'),
    goal: TaskGoal,
    repos: z
      .array(z.string().max(4096))
      .min(1, 'give at least one repository')
      .max(MAX_CAMPAIGN_REPOS + 1000)
      .optional()
      .describe('one repository URL or path per line; blank lines and # comments are skipped; lines that name no repository are reported, not fatal'),
    orgQuery: z
      .string()
      .trim()
      .min(1)
      .max(256)
      .optional()
      .describe("instead of repos: a GitHub repository search (\"org:acme topic:service\"), asked of the GitHub of the org's projects (the oldest project whose forge is GitHub with a token); its first 1,000 results"),
    ...taskWorkFields,
    // A repository without a project gets a transient one from these (an admin's campaign only: a member's names projects' repositories).
    ...oneOffFields,
    concurrency: z.number().int().min(1).max(1000).default(20).describe('tasks of this campaign at once, across all runners'),
    maxOpenPrs: z.number().int().min(1).max(100_000).default(100).describe('never more open pull requests (or pushed branches not yet approved) than this'),
    forgeRate: z
      .string()
      .refine((s) => parseRate(s) !== undefined, 'a rate such as 1/s, 30/m or 100/h')
      .default('1/s')
      .describe('task starts per unit of time: each start makes a few forge API calls'),
    branchPrefix: z.string().regex(/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/, 'a branch prefix such as berth/campaign').max(100).default('berth/campaign'),
    draft: z.boolean().default(false).describe('open the pull requests as drafts'),
    maxRetries: z.number().int().min(0).max(10).default(2).describe('times a repository whose task failed for an infrastructure reason is tried again'),
  })
  .refine(agentCommand.given, agentCommand.error)
  .refine((b) => (b.repos === undefined) !== (b.orgQuery === undefined), { message: 'give the repositories one way: repos (a list) or orgQuery (a GitHub search)', path: ['repos'] });
export type CreateCampaignBody = z.input<typeof CreateCampaignBody>;

export const CampaignSettings = z.object({
  agent: z.enum(['builtin', 'command']).optional(),
  command: z.string().optional(),
  model: z.string().optional(),
  check: z.string().optional(),
  setup: z.array(z.string()).optional(),
  budget: taskWorkFields.budget,
  image: z.string().optional().describe('for repositories without a project: the image'),
  allowDomains: z.array(z.string()).optional().describe("for repositories without a project: domains added to the org's egress policy"),
  forge: oneOffFields.forge.describe('for repositories without a project: their forge and the org secret holding its token'),
  concurrency: z.number(),
  maxOpenPrs: z.number(),
  forgeRate: z.string(),
  branchPrefix: z.string(),
  draft: z.boolean(),
  maxRetries: z.number(),
});
export type CampaignSettings = z.infer<typeof CampaignSettings>;

/** A line of the repository list that names no repository Berth may use, and why. */
export const InvalidLine = z.object({ line: z.number(), text: z.string(), reason: z.string() });
export type InvalidLine = z.infer<typeof InvalidLine>;

export const TargetCounts = z.object(Object.fromEntries(TARGET_STATES.map((s) => [s, z.number()])) as Record<TargetState, z.ZodNumber>);
export type TargetCounts = z.infer<typeof TargetCounts>;

export const Campaign = z.object({
  id: z.string(),
  name: z.string(),
  goal: z.string(),
  state: z.enum(CAMPAIGN_STATES),
  settings: CampaignSettings,
  /** The branch every task of it pushes to, in each repository. */
  branch: z.string(),
  /** 1 for the first run; each `rerun` (and each `retry-failed`) adds one. */
  run: z.number(),
  createdBy: z.string(),
  createdAt: z.string(),
  finishedAt: z.string().nullable(),
  total: z.number(),
  counts: TargetCounts,
  /** The most tasks it had at once (never above concurrency). */
  peakRunning: z.number(),
  /** Repositories finished per minute over the last ten minutes (or since the start). */
  throughputPerMin: z.number().nullable(),
  /** Seconds until the rest are done at that pace; null when nothing has finished yet or nothing is left. */
  etaSeconds: z.number().nullable(),
  /** Why nothing more starts now, when something is left and nothing runs (the open-PR cap, a pause). */
  waitingFor: z.string().nullable(),
});
export type Campaign = z.infer<typeof Campaign>;

export const CampaignTarget = z.object({
  id: z.string(),
  repo: z.string(),
  project: z.string().nullable(),
  state: z.enum(TARGET_STATES),
  attempts: z.number(),
  taskId: z.string().nullable(),
  failure: z.enum(FAILURE_KINDS).nullable(),
  reason: z.string().nullable(),
  changeRequest: z
    .object({
      kind: z.enum(['pull_request', 'merge_request', 'berth']),
      url: z.string().nullable(),
      number: z.number().nullable(),
      draft: z.boolean(),
      /** open, merged or closed, as the forge last said (null: not asked yet, or plain git). */
      state: z.string().nullable(),
      checks: z.string().nullable().describe('passing, failing or pending, as the forge last said'),
      review: z.string().nullable().describe('approved, changes_requested or none'),
    })
    .nullable(),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
});
export type CampaignTarget = z.infer<typeof CampaignTarget>;

export const FailureGroup = z.object({ failure: z.enum(FAILURE_KINDS), reason: z.string(), count: z.number(), repos: z.array(z.string()).describe('the first few') });
export type FailureGroup = z.infer<typeof FailureGroup>;

export const CampaignDetail = Campaign.extend({
  changeRequests: z.array(CampaignTarget).describe('every target that pushed a branch, with its pull request'),
  failures: z.array(FailureGroup),
});
export type CampaignDetail = z.infer<typeof CampaignDetail>;

export const CreatedCampaign = z.object({ campaign: Campaign, invalid: z.array(InvalidLine).describe('lines that name no repository, with the reason; the rest were taken') });
export type CreatedCampaign = z.infer<typeof CreatedCampaign>;

export const ListTargetsQuery = z.strictObject({
  state: z.enum(TARGET_STATES).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(200),
  after: z.coerce.number().int().min(0).optional().describe('the seq of the last target of the previous page'),
});

export const ApproveBody = z.strictObject({ onlyGreen: z.boolean().default(true).describe('only changes whose task passed its checks (and whose pull request checks are not failing)') });
export const ApproveResult = z.object({
  approved: z.array(z.object({ repo: z.string(), how: z.enum(['merged', 'ready_for_review']) })),
  skipped: z.array(z.object({ repo: z.string(), reason: z.string() })),
});
export type ApproveResult = z.infer<typeof ApproveResult>;
