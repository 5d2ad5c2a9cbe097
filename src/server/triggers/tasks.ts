// Starting a task for a trigger: the project a repository belongs to, the scope a task is
// created in when nobody signed in asked for it, and the audit entry that says where it came
// from. Every source (GitHub, GitLab, Slack, schedules, generic webhooks) starts through here.
import { sql } from 'kysely';
import type { CreateTaskBody, Task, TaskTrigger } from '../../shared/api-tasks.ts';
import { conflict, notFound } from '../../shared/errors.ts';
import { FINAL_TASK_STATES } from '../../shared/tasks.ts';
import type { AuditLog } from '../audit/index.ts';
import type { Scope } from '../authz.ts';
import { isUniqueViolation, type Db, type ProjectRow, type TaskRow } from '../db/index.ts';
import type { ReplyTarget } from '../db/schema.ts';
import { assertNotArchived } from '../projects.ts';
import { changeRequestName, followUpGoal } from '../tasks/change-text.ts';
import type { TaskService } from '../tasks/index.ts';
import { BerthError } from '../../shared/errors.ts';
import { isDatabaseUnavailable } from '../db/index.ts';

/**
 * A repository URL reduced to what names it whatever way it was written: host and path,
 * lower case, without `.git`, a trailing slash, credentials or the scheme. `git@h:o/r.git`,
 * `ssh://git@h/o/r`, `https://h/o/r.git` and `https://h/O/R/` are one repository.
 */
export function repoKey(url: string): string {
  let s = url.trim().toLowerCase();
  const scp = /^[^/:@]+@([^/:]+):(.*)$/.exec(s);
  if (scp) s = `${scp[1]}/${scp[2]}`;
  else s = s.replace(/^[a-z+]+:\/\//, '').replace(/^[^/@]*@/, '');
  // A default port says nothing: https://h:443/o/r is https://h/o/r.
  s = s.replace(/^([^/]+):(?:443|22|80)\//, '$1/');
  return s.replace(/\/+$/, '').replace(/\.git$/, '').replace(/\/+$/, '');
}

/**
 * What to tell the sender when a task could not be started: the org or project refused it (no
 * model set up, an archived project, a quota), in words meant for people. Null for what is
 * not theirs to fix (our fault, the database not answering): rethrow it, the delivery is
 * recorded as failed and the log has the rest.
 */
export function refusalOf(err: unknown): string | null {
  if (!(err instanceof BerthError) || err.kind === 'internal' || isDatabaseUnavailable(err)) return null;
  return err.message;
}

export interface TriggerStart {
  project: ProjectRow;
  goal: string;
  trigger: TaskTrigger;
  /** Who or what: `github:LOGIN`, `slack:TEAM/USER`, `schedule:sch_…`, `webhook:whk_…`: on the task and in the audit entry. */
  triggeredBy: string;
  /**
   * What it is started for, unique (`github:DELIVERY`, `schedule:sch_…@SLOT`): starting again
   * for the same key (a delivery handled again after a crash) returns the task already made.
   */
  key: string;
  /** How the audit log and the task name who asked: `github:octocat`, `slack:U123`, `user:usr_…`, `schedule:sch_…`. */
  actor: string;
  /** The Berth user the task belongs to (a Slack user mapped by email), else null: the org's admins use it. */
  ownerId?: string | null | undefined;
  replyTo?: ReplyTarget | null | undefined;
  /** The task whose branch this one pushes to and whose change request it updates. */
  continuesTaskId?: string | null | undefined;
  /** More of the task (agent, command, check, budget…), as the API takes it. */
  task?: Omit<Partial<CreateTaskBody>, 'goal' | 'project' | 'repo' | 'trigger'> | undefined;
  /** Where it came from, for the audit entry: delivery id, sender, issue, Slack team and user, schedule id. */
  source: Record<string, unknown>;
}

/** A review or comment on a task's change request, asking for more on the same branch. */
export interface TriggerContinue {
  /** The task to continue: any task of the change request's chain (taskForChangeRequest finds the newest). */
  previous: string;
  /** What the review asks for; added to the previous goal. */
  instruction: string;
  trigger: TaskTrigger;
  triggeredBy: string;
  key: string;
  actor: string;
  /** Where its progress is told; default: where the previous task's was (the same issue comment). */
  replyTo?: ReplyTarget | null | undefined;
  /** Default: the previous task's owner. */
  ownerId?: string | null | undefined;
  source: Record<string, unknown>;
}

export class TriggeredTasks {
  readonly #db: Db;
  readonly #tasks: TaskService;
  readonly #audit: AuditLog;

  constructor(o: { db: Db; tasks: TaskService; audit: AuditLog }) {
    this.#db = o.db;
    this.#tasks = o.tasks;
    this.#audit = o.audit;
  }

  /** The live projects (of any org) whose repository is one of `urls` (as repoKey compares them). */
  async projectsFor(urls: readonly string[]): Promise<ProjectRow[]> {
    const keys = new Set(urls.filter(Boolean).map(repoKey));
    if (!keys.size) return [];
    // Projects are few next to tasks; comparing keys here keeps one rule for every URL form.
    const rows = await this.#db.selectFrom('projects').selectAll().where('archived_at', 'is', null).where('repo_url', 'is not', null).execute();
    return rows.filter((p) => keys.has(repoKey(p.repo_url!)));
  }

  /** A task for a trigger, queued, with the audit entry (`task.trigger`) that names its source. */
  async start(s: TriggerStart): Promise<Task> {
    const made = await this.#made(s.key);
    if (made) return made;
    const scope = await this.scopeFor(s.project.org_id, s.actor, s.ownerId ?? null);
    let task: Task;
    try {
      task = await this.#tasks.create(
        scope,
        { ...s.task, goal: s.goal, project: s.project.id },
        { trigger: s.trigger, triggeredBy: s.triggeredBy, key: s.key, ownerId: s.ownerId ?? null, replyTo: s.replyTo ?? null, continuesTaskId: s.continuesTaskId ?? null },
      );
    } catch (err) {
      // Another replica started it between the look and the insert: its task is the one.
      const raced = isUniqueViolation(err) ? await this.#made(s.key) : null;
      if (raced) return raced;
      throw err;
    }
    await this.#audit.append({ orgId: s.project.org_id, actor: s.actor, action: 'task.trigger', target: task.id, details: { trigger: s.trigger, triggeredBy: s.triggeredBy, key: s.key, project: s.project.name, ...s.source } });
    return task;
  }

  /**
   * The newest task of a change request's chain: the task of `projectIds` that opened pull
   * (or merge) request `number`, or the newest task that continues it (queued, running or
   * ended). Null when no task of these projects opened it.
   */
  async taskForChangeRequest(projectIds: readonly string[], number: number, kind: 'pull_request' | 'merge_request'): Promise<TaskRow | null> {
    if (!projectIds.length || !Number.isSafeInteger(number)) return null;
    const opened = await this.#db
      .selectFrom('tasks')
      .select(['id', 'continues_task_id'])
      .where('project_id', 'in', projectIds)
      .where(sql<boolean>`change_request->>'kind' = ${kind} and change_request->>'number' = ${String(number)}`)
      .orderBy('created_at', 'desc')
      .orderBy('id', 'desc')
      .executeTakeFirst();
    if (!opened) return null;
    const root = opened.continues_task_id ?? opened.id;
    const newest = await this.#db
      .selectFrom('tasks')
      .selectAll()
      .where((eb) => eb.or([eb('id', '=', root), eb('continues_task_id', '=', root)]))
      .orderBy('created_at', 'desc')
      .orderBy('id', 'desc')
      .executeTakeFirst();
    return newest ?? null;
  }

  /**
   * Continues a task whose change request got a review: a new task (one per key, audited as
   * any other) on the same project, with the same agent, command, model, check, setup and
   * budget, working on the change request's branch from its head and pushing new commits to it.
   * It continues the first task of the chain, whose branch and change request every
   * continuation shares. Refused (a Conflict, in words for a comment) while the chain's newest
   * task is still at work, and for a task that left no change request.
   */
  async continueTask(c: TriggerContinue): Promise<Task> {
    const made = await this.#made(c.key);
    if (made) return made;
    const previous = await this.#db.selectFrom('tasks').selectAll().where('id', '=', c.previous).executeTakeFirst();
    if (!previous) throw notFound(`no task '${c.previous}' to continue`);
    if (!FINAL_TASK_STATES.has(previous.state)) {
      throw conflict(`Berth is still working on this (task ${previous.id} is ${previous.state}): wait for it to finish, then ask again. Its progress: \`berth task logs ${previous.id} -f\``);
    }
    const root = previous.continues_task_id ? await this.#db.selectFrom('tasks').selectAll().where('id', '=', previous.continues_task_id).executeTakeFirst() : previous;
    if (!root?.branch || !root.change_request) throw conflict(`task ${previous.id} left no pull request or branch to add commits to: start a new task instead`);
    const project = previous.project_id ? await this.#db.selectFrom('projects').selectAll().where('id', '=', previous.project_id).executeTakeFirst() : undefined;
    if (!project) throw conflict(`task ${previous.id} belongs to no project: only a project's tasks can be continued by a trigger`);
    assertNotArchived(project, 'a continuation');
    const budget = previous.budget;
    return this.start({
      project,
      goal: followUpGoal(previous.goal, c.instruction),
      trigger: c.trigger,
      triggeredBy: c.triggeredBy,
      key: c.key,
      actor: c.actor,
      ownerId: c.ownerId === undefined ? previous.owner_id : c.ownerId,
      replyTo: c.replyTo ?? previous.reply_to,
      continuesTaskId: root.id,
      task: {
        baseBranch: root.branch,
        agent: previous.agent,
        ...(previous.command ? { command: previous.command } : {}),
        // A default model is the default of the day the continuation runs.
        ...(previous.model && !previous.model_default ? { model: previous.model } : {}),
        ...(previous.check_command ? { check: previous.check_command } : {}),
        ...(previous.setup_commands?.length ? { setup: previous.setup_commands } : {}),
        budget: { maxSteps: budget.maxSteps, maxTokens: budget.maxTokens, maxCostUsd: budget.maxCostUsd, timeout: budget.timeoutMs, maxCheckRetries: budget.maxCheckRetries },
      },
      source: { ...c.source, continues: root.id, changeRequest: changeRequestName(root.change_request) },
    });
  }

  async #made(key: string): Promise<Task | null> {
    const made = await this.#db.selectFrom('tasks').select(['id', 'org_id']).where('trigger_key', '=', key).executeTakeFirst();
    return made ? this.#tasks.show(made.org_id, made.id) : null;
  }

  /** On record that a trigger was refused (a sender without write access, a Slack user without a membership). */
  async refused(orgId: string, actor: string, reason: string, source: Record<string, unknown>): Promise<void> {
    await this.#audit.append({ orgId, actor, action: 'trigger.refused', target: null, details: { reason, ...source } });
  }

  /**
   * The scope a triggered task is created in: a member of its org named by `actor`; what it
   * makes belongs to `ownerId` (a Berth user), or to nobody (the org's admins use it).
   */
  async scopeFor(orgId: string, actor: string, ownerId: string | null): Promise<Scope> {
    const org = await this.#db.selectFrom('orgs').select('name').where('id', '=', orgId).executeTakeFirstOrThrow();
    return {
      orgId,
      orgName: org.name,
      role: 'member',
      actor,
      caller: { tokenId: actor, kind: 'org', userId: ownerId, orgId, role: 'member', instanceAdmin: false },
    };
  }
}
