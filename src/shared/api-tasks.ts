// The task API's shapes, declared once for the server, /openapi.json and the CLI.
import { z } from 'zod';
import { duration, OrgRef, RunnerLabels } from './api.ts';
import { MODEL_PROVIDERS, MODEL_SCOPES, MODEL_SOURCES } from './api-models.ts';
import { TASK_STATES } from './tasks.ts';
import { parseDuration } from './units.ts';

/**
 * Where tasks come from: people (the web UI, the CLI, the API) and the triggers that start
 * them where the work is (src/server/triggers): a GitHub or GitLab issue or comment, a Slack
 * message, a schedule, a generic webhook.
 */
export const TASK_TRIGGERS = ['web', 'cli', 'api', 'github', 'gitlab', 'slack', 'schedule', 'webhook', 'campaign'] as const;
export type TaskTrigger = (typeof TASK_TRIGGERS)[number];

export const TaskRef = OrgRef.extend({ id: z.string().regex(/^task_[0-9a-z]{12}$/, 'a task id such as task_0123456789ab') });

export const TaskBudgetInput = z.strictObject({
  maxSteps: z.number().int().min(1).max(10_000).optional().describe('model round trips (default 50)'),
  maxTokens: z.number().int().min(1).nullable().optional().describe('input + output tokens over all model calls'),
  maxCostUsd: z.number().positive().nullable().optional(),
  timeout: duration.optional().describe('wall time for the whole task (default 60m)'),
  maxCheckRetries: z.number().int().min(0).max(20).optional().describe('times failing checks send the agent back (default 2)'),
});

/** What the agent is to do. */
export const TaskGoal = z.string().trim().min(1, 'say what the agent should do').max(64 * 1024);

/**
 * How a task's agent works and is checked, the same in every body that starts tasks: a task,
 * a task schedule, a campaign. Each spreads these into its own object (where they stand there
 * decides which error a body with several wrong fields gets) and adds `agentCommand`.
 */
export const taskWorkFields = {
  agent: z.enum(['builtin', 'command']).optional(),
  command: z.string().min(1).max(64 * 1024).optional().describe('with agent "command": the command that does the work, run inside the environment'),
  model: z.string().min(1).max(200).optional(),
  check: z.string().min(1).max(10_000).optional().describe('the command that says whether the work is done; overrides the project and repository'),
  setup: z.array(z.string().trim().min(1, 'a setup command cannot be empty').max(10_000)).max(100).optional().describe("commands run after the repository's and the project's setup, in order"),
  budget: TaskBudgetInput.optional(),
};

/**
 * What a project's settings give its tasks, given instead to a one-off task (a repository
 * without a project: a transient project), and to a campaign for its repositories without one.
 */
export const oneOffFields = {
  image: z.string().trim().min(1).max(4096).optional().describe("the environment's image (a name or registry reference), over the repository's berth.yaml or devcontainer.json, as a project's image setting would be"),
  allowDomains: z
    .array(z.string().max(300))
    .min(1)
    .max(1000)
    .optional()
    .describe("domains the environment may reach besides the org's policy (admins only: it widens the policy)"),
  forge: z
    .strictObject({
      kind: z.enum(['github', 'gitlab', 'git']).optional().describe('default: from the URL (github.com, gitlab.com or a host with "gitlab"; else plain git)'),
      apiUrl: z.url({ protocol: /^https?$/, error: 'apiUrl needs an http(s) URL such as https://github.example.com/api/v3' }).optional().describe('GitHub Enterprise or a self-hosted GitLab'),
      tokenSecret: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'a secret name such as GITHUB_TOKEN').optional().describe('the org secret holding the token to clone, push and open the pull request with'),
    })
    .optional()
    .describe("the repository's forge, as a project's forge settings say it (admins only: its token is sent to the repository's host)"),
};

/** The forge part of oneOffFields, as stored and shown. */
export type OneOffForge = NonNullable<z.infer<typeof oneOffFields.forge>>;

/** The check that goes with taskWorkFields: the agent "command" needs its command. */
export const agentCommand = {
  given: (b: { agent?: string | undefined; command?: string | undefined }): boolean => b.agent !== 'command' || Boolean(b.command),
  error: { message: 'agent "command" needs a command', path: ['command'] },
};

export const CreateTaskBody = z
  .strictObject({
    goal: TaskGoal,
    project: z.string().min(1).max(100).optional().describe('project name or id'),
    repo: z.string().min(1).max(2048).optional().describe('repository URL or absolute path, for a one-off task without a project'),
    baseBranch: z.string().regex(/^[A-Za-z0-9._/-]{1,200}$/, 'a branch name').optional(),
    ...taskWorkFields,
    ...oneOffFields,
    runnerLabels: RunnerLabels.optional().describe("labels the runner that runs it must carry (`{\"gpu\": \"true\"}`), added to its project's"),
    trigger: z.enum(['api', 'cli', 'web', 'schedule']).optional(),
  })
  .refine((b) => Boolean(b.project) !== Boolean(b.repo), { message: 'give either project or repo', path: ['project'] })
  .refine((b) => !b.project || (b.image === undefined && b.allowDomains === undefined && b.forge === undefined), {
    message: "image, allowDomains and forge are a one-off task's (with repo): a project's tasks take them from its settings (`berth project update`)",
    path: ['project'],
  })
  .refine(agentCommand.given, agentCommand.error)
  .refine((b) => b.budget?.timeout === undefined || b.budget.timeout === null || typeof b.budget.timeout === 'number' || parseDuration(b.budget.timeout) !== undefined, {
    message: 'timeout needs a duration such as 30m',
    path: ['budget', 'timeout'],
  });
export type CreateTaskBody = z.infer<typeof CreateTaskBody>;

const ChangeRequestSchema = z.object({
  kind: z.enum(['pull_request', 'merge_request', 'berth']),
  url: z.string().nullable(),
  number: z.number().nullable(),
  draft: z.boolean(),
  mergedSha: z.string().optional(),
});

export const Task = z.object({
  id: z.string(),
  goal: z.string(),
  project: z.string().nullable(),
  repo: z.string(),
  baseBranch: z.string().nullable(),
  agent: z.enum(['builtin', 'command']),
  model: z.string().nullable().describe("the built-in agent's model; null until a task that named none starts with the runner's default"),
  modelIsDefault: z.boolean().describe("the model is the runner's default (BERTH_MODEL), chosen when the task started"),
  modelProvider: z.enum(MODEL_PROVIDERS).nullable().describe('the protocol its model calls used, written when the task started'),
  modelSource: z.enum(MODEL_SOURCES).nullable().describe('who named the model: the task (--model), its project, the org or the instance (BERTH_MODEL)'),
  modelSettings: z.enum(MODEL_SCOPES).nullable().describe("whose provider, base URL and key the task used: its project's or the org's model settings, or the instance's (berth up's environment)"),
  state: z.enum(TASK_STATES as [string, ...string[]]),
  stateReason: z.string().nullable(),
  step: z.string().nullable(),
  trigger: z.string(),
  triggeredBy: z.string().nullable().describe('who or what outside Berth started it: `github:LOGIN`, `gitlab:USERNAME`, `slack:TEAM/USER`, `schedule:sch_…`, `webhook:whk_…`'),
  continues: z.string().nullable().describe('the task whose branch it pushes to and whose change request it updates'),
  createdBy: z.string(),
  creator: z
    .object({ name: z.string(), email: z.string() })
    .nullable()
    .optional()
    .describe('the person createdBy names (`user:…`), in task lists and `show`; null for a token, a task or a schedule'),
  environmentId: z.string().nullable(),
  branch: z.string().nullable(),
  changeRequest: ChangeRequestSchema.nullable(),
  checksPassed: z.boolean().nullable(),
  setup: z.array(z.string()).describe("setup commands given with the task (run after the repository's and the project's)"),
  oneOff: z
    .object({ image: z.string().optional(), allowDomains: z.array(z.string()).optional(), forge: oneOffFields.forge })
    .nullable()
    .describe("a one-off task's own image, extra egress domains and forge (its transient project); null when it has none"),
  runnerLabels: z.record(z.string(), z.string()).describe("labels the runner that runs it must carry: the task's and its project's"),
  runnerId: z.string().nullable().describe('the runner that claimed it last; null while it waits in the queue'),
  attempts: z.number().int().describe('times it was started over because its runner went offline under it'),
  summary: z.string().nullable(),
  usage: z.object({ inputTokens: z.number(), outputTokens: z.number(), costUsd: z.number() }),
  budget: z.object({ maxSteps: z.number(), maxTokens: z.number().nullable(), maxCostUsd: z.number().nullable(), timeoutMs: z.number(), maxCheckRetries: z.number() }),
  createdAt: z.string(),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
});
export type Task = z.infer<typeof Task>;

export const TaskList = z.object({ items: z.array(Task), nextCursor: z.string().nullable(), counts: z.record(z.string(), z.number()) });
export type TaskList = z.infer<typeof TaskList>;

export const ListTasksQuery = z.strictObject({
  state: z.enum(TASK_STATES as [string, ...string[]]).optional(),
  project: z.string().max(100).optional(),
  trigger: z.string().max(20).optional(),
  createdBy: z.string().max(200).optional(),
  mine: z.enum(['0', '1', 'true', 'false']).optional().describe("only the caller's own tasks (createdBy is then the caller)"),
  limit: z.coerce.number().int().min(1).max(200).default(50),
  cursor: z.string().max(200).optional(),
});

export const ApproveTaskBody = z
  .strictObject({
    force: z.boolean().optional().describe('merge although the checks failed, did not run or the change is a draft; on record as task.approve_forced'),
  })
  .nullish()
  .describe('optional: no body approves a green change only');

export const ContinueTaskBody = z.strictObject({
  instruction: z.string().trim().min(1, 'say what the agent should do next').max(64 * 1024),
  trigger: z.enum(['api', 'cli', 'web']).optional(),
});

export const TaskEventSchema = z.object({ seq: z.number(), at: z.string(), data: z.record(z.string(), z.unknown()) });

export const TaskEventsQuery = z.strictObject({
  after: z.coerce.number().int().min(0).default(0).describe('events with a larger seq (Last-Event-ID works too)'),
  follow: z.enum(['0', '1', 'true', 'false']).optional().describe('keep the stream open and send new events as server-sent events'),
  before: z.coerce.number().int().min(1).optional().describe('events with a smaller seq: with tail, the page before the earliest one shown (not for the stream)'),
  tail: z.coerce.number().int().min(1).max(10_000).optional().describe('only the last N events (still in order): a long transcript\'s end first (not for the stream)'),
});
