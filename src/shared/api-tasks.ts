// The task API's shapes, declared once for the server, /openapi.json and the CLI.
import { z } from 'zod';
import { duration, OrgRef } from './api.ts';
import { TASK_STATES } from './tasks.ts';
import { parseDuration } from './units.ts';

export const TaskRef = OrgRef.extend({ id: z.string().regex(/^task_[0-9a-z]{12}$/, 'a task id such as task_0123456789ab') });

export const TaskBudgetInput = z.strictObject({
  maxSteps: z.number().int().min(1).max(10_000).optional().describe('model round trips (default 50)'),
  maxTokens: z.number().int().min(1).nullable().optional().describe('input + output tokens over all model calls'),
  maxCostUsd: z.number().positive().nullable().optional(),
  timeout: duration.optional().describe('wall time for the whole task (default 60m)'),
  maxCheckRetries: z.number().int().min(0).max(20).optional().describe('times failing checks send the agent back (default 2)'),
});

export const CreateTaskBody = z
  .strictObject({
    goal: z.string().trim().min(1, 'say what the agent should do').max(64 * 1024),
    project: z.string().min(1).max(100).optional().describe('project name or id'),
    repo: z.string().min(1).max(2048).optional().describe('repository URL or absolute path, for a one-off task without a project'),
    baseBranch: z.string().regex(/^[A-Za-z0-9._/-]{1,200}$/, 'a branch name').optional(),
    agent: z.enum(['builtin', 'command']).optional(),
    command: z.string().min(1).max(64 * 1024).optional().describe('with agent "command": the command that does the work, run inside the environment'),
    model: z.string().min(1).max(200).optional(),
    check: z.string().min(1).max(10_000).optional().describe('the command that says whether the work is done; overrides the project and repository'),
    budget: TaskBudgetInput.optional(),
    trigger: z.enum(['api', 'cli', 'web', 'schedule']).optional(),
  })
  .refine((b) => Boolean(b.project) !== Boolean(b.repo), { message: 'give either project or repo', path: ['project'] })
  .refine((b) => b.agent !== 'command' || b.command, { message: 'agent "command" needs a command', path: ['command'] })
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
  state: z.enum(TASK_STATES as [string, ...string[]]),
  stateReason: z.string().nullable(),
  step: z.string().nullable(),
  trigger: z.string(),
  createdBy: z.string(),
  environmentId: z.string().nullable(),
  branch: z.string().nullable(),
  changeRequest: ChangeRequestSchema.nullable(),
  checksPassed: z.boolean().nullable(),
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
  limit: z.coerce.number().int().min(1).max(200).default(50),
  cursor: z.string().max(200).optional(),
});

export const TaskEventSchema = z.object({ seq: z.number(), at: z.string(), data: z.record(z.string(), z.unknown()) });

export const TaskEventsQuery = z.strictObject({
  after: z.coerce.number().int().min(0).default(0).describe('events with a larger seq (Last-Event-ID works too)'),
  follow: z.enum(['0', '1', 'true', 'false']).optional().describe('keep the stream open and send new events as server-sent events'),
  before: z.coerce.number().int().min(1).optional().describe('events with a smaller seq: with tail, the page before the earliest one shown (not for the stream)'),
  tail: z.coerce.number().int().min(1).max(10_000).optional().describe('only the last N events (still in order): a long transcript\'s end first (not for the stream)'),
});
