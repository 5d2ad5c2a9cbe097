// Starting a task for a trigger: the project a repository belongs to, the scope a task is
// created in when nobody signed in asked for it, and the audit entry that says where it came
// from. Every source (GitHub, GitLab, Slack, schedules, generic webhooks) starts through here.
import type { CreateTaskBody, Task, TaskTrigger } from '../../shared/api-tasks.ts';
import type { AuditLog } from '../audit/index.ts';
import type { Scope } from '../authz.ts';
import type { Db, ProjectRow } from '../db/index.ts';
import type { ReplyTarget } from '../db/schema.ts';
import type { TaskService } from '../tasks/index.ts';

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
    const made = await this.#db.selectFrom('tasks').select('id').where('trigger_key', '=', s.key).executeTakeFirst();
    if (made) return this.#tasks.show(s.project.org_id, made.id);
    const scope = await this.scopeFor(s.project.org_id, s.actor, s.ownerId ?? null);
    const task = await this.#tasks.create(
      scope,
      { ...s.task, goal: s.goal, project: s.project.id },
      { trigger: s.trigger, triggeredBy: s.triggeredBy, key: s.key, ownerId: s.ownerId ?? null, replyTo: s.replyTo ?? null, continuesTaskId: s.continuesTaskId ?? null },
    );
    await this.#audit.append({ orgId: s.project.org_id, actor: s.actor, action: 'task.trigger', target: task.id, details: { trigger: s.trigger, triggeredBy: s.triggeredBy, key: s.key, project: s.project.name, ...s.source } });
    return task;
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
