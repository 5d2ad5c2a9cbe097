// The schedule API's shapes, declared once for the server, /openapi.json, the CLI and the web UI.
// A schedule is a cron rule read in a timezone that starts a task on a project, or stops or
// starts an environment (office hours). Each slot it fires is recorded with what came of it.
import { z } from 'zod';
import { OrgRef } from './api.ts';
import { agentCommand, CreateTaskBody, TaskGoal, taskWorkFields } from './api-tasks.ts';

export const SCHEDULE_KINDS = ['task', 'environment'] as const;
export type ScheduleKind = (typeof SCHEDULE_KINDS)[number];

export const ENVIRONMENT_ACTIONS = ['start', 'stop'] as const;
export type EnvironmentAction = (typeof ENVIRONMENT_ACTIONS)[number];

export const ScheduleRef = OrgRef.extend({ id: z.string().regex(/^sch_[0-9a-z]{12}$/, 'a schedule id such as sch_0123456789ab') });

const when = {
  cron: z.string().trim().min(1, 'give a cron rule such as "0 3 * * 1-5"').max(200).describe('five fields: minute hour day-of-month month day-of-week, e.g. `0 3 * * 1-5`'),
  timezone: z.string().trim().min(1).max(100).optional().describe('an IANA zone such as Europe/Berlin, in which the rule is read (default UTC)'),
  name: z.string().trim().min(1).max(100).optional(),
};

// What a task schedule starts: the task API's own fields (its checks, such as goal length).
const t = CreateTaskBody.shape;
export const CreateTaskScheduleBody = z.strictObject({
  kind: z.literal('task'),
  ...when,
  project: z.string().min(1).max(100).describe('project name or id'),
  goal: TaskGoal,
  baseBranch: t.baseBranch,
  ...taskWorkFields,
  runnerLabels: t.runnerLabels,
});

export const CreateEnvironmentScheduleBody = z.strictObject({
  kind: z.literal('environment'),
  ...when,
  environment: z.string().min(1).max(100).describe('environment name or id'),
  action: z.enum(ENVIRONMENT_ACTIONS),
});

export const CreateScheduleBody = z
  .discriminatedUnion('kind', [CreateTaskScheduleBody, CreateEnvironmentScheduleBody])
  .refine((b) => b.kind !== 'task' || agentCommand.given(b), agentCommand.error);
export type CreateScheduleBody = z.infer<typeof CreateScheduleBody>;

export const ListSchedulesQuery = z.strictObject({
  kind: z.enum(SCHEDULE_KINDS).optional(),
  environment: z.string().max(100).optional().describe('only the schedules of this environment (name or id)'),
  project: z.string().max(100).optional().describe('only the schedules of this project (name or id)'),
});
export type ListSchedulesQuery = z.infer<typeof ListSchedulesQuery>;

export const ScheduleFiring = z.object({
  /** The slot the rule named (what was due), not when it ran. */
  slot: z.string(),
  firedAt: z.string(),
  outcome: z.string().describe('`task task_… queued`, `environment stopped`, `failed: …`; a late firing says how many earlier slots it stood for'),
  taskId: z.string().nullable(),
  late: z.boolean().describe('fired well after its slot (the control plane was down or busy)'),
});
export type ScheduleFiring = z.infer<typeof ScheduleFiring>;

export const Schedule = z.object({
  id: z.string(),
  name: z.string().nullable(),
  kind: z.enum(SCHEDULE_KINDS),
  cron: z.string(),
  timezone: z.string(),
  paused: z.boolean(),
  project: z.string().nullable().describe('task schedules: the project name'),
  goal: z.string().nullable().describe('task schedules: the goal of each task'),
  task: z.record(z.string(), z.unknown()).nullable().describe('task schedules: the rest of the task (agent, command, check, budget…)'),
  environmentId: z.string().nullable(),
  environment: z.string().nullable().describe('environment schedules: the environment name'),
  action: z.enum(ENVIRONMENT_ACTIONS).nullable(),
  createdBy: z.string(),
  ownerId: z.string().nullable().describe('whose tasks it starts, whose environment it stops and starts: its creator'),
  createdAt: z.string(),
  nextAt: z.string().nullable().describe('the next slot; null when paused'),
  lastFiring: ScheduleFiring.nullable(),
});
export type Schedule = z.infer<typeof Schedule>;

export const ScheduleDetail = Schedule.extend({
  upcoming: z.array(z.string()).describe('the next three slots, paused or not'),
  firings: z.array(ScheduleFiring).describe('the latest firings, newest first'),
});
export type ScheduleDetail = z.infer<typeof ScheduleDetail>;

export const ScheduleList = z.object({ items: z.array(Schedule) });
export type ScheduleList = z.infer<typeof ScheduleList>;
