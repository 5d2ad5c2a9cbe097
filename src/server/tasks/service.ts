import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { mkdtemp, rm } from 'node:fs/promises';
import { sql } from 'kysely';
import type { CreateTaskBody, Task, TaskList, TaskTrigger } from '../../shared/api-tasks.ts';
import { conflict, invalid, notFound } from '../../shared/errors.ts';
import { newId } from '../../shared/ids.ts';
import { FINAL_TASK_STATES, type TaskBudget, type TaskState } from '../../shared/tasks.ts';
import { formatDuration, MAX_TIMEOUT_MS, parseDuration, parseSize } from '../../shared/units.ts';
import { forgeFor, mergeBranch, type ForgeSettings, type RepoAccess } from '../../forges/index.ts';
import { assertOwnRepository } from './own-repo.ts';
import { checkOneOff } from './one-off.ts';
import { assertNotArchived, liveProject } from '../projects.ts';
import type { Scope } from '../authz.ts';
import { assertTaskAccess, ownerIdOf, type Ownership } from '../ownership.ts';
import type { Db, ProjectRow, TaskRow } from '../db/index.ts';
import type { ReplyTarget } from '../db/schema.ts';
import { afterPageCursor, encodePageCursor, pageKey } from '../db/page.ts';
import type { SecretService } from '../secrets/service.ts';
import { Redactor } from '../../shared/redact.ts';
import type { TaskEvents } from './events.ts';

/** Throws when a built-in agent task created now would have no model; may look at the org's and project's settings. */
export type CheckModel = (model: string | undefined, where: { orgId: string; projectId: string | null }) => void | Promise<void>;

export const DEFAULT_BUDGET: TaskBudget = { maxSteps: 50, maxTokens: null, maxCostUsd: null, timeoutMs: 60 * 60_000, maxCheckRetries: 2 };

export interface TaskListOptions {
  state?: string | undefined;
  project?: string | undefined;
  trigger?: string | undefined;
  createdBy?: string | undefined;
  limit: number;
  cursor?: string | undefined;
}

/**
 * Where a task started by a trigger came from (src/server/triggers): its kind, the source
 * (delivery, user, schedule), whom it belongs to, where its progress is told, and the task
 * whose branch it continues.
 */
export interface TaskOrigin {
  trigger: TaskTrigger;
  triggeredBy: string;
  /** The Berth user it belongs to (a Slack user mapped by email), else null: the org's admins use it. */
  ownerId: string | null;
  replyTo?: ReplyTarget | null | undefined;
  continuesTaskId?: string | null | undefined;
  /** What it was started for (a delivery, a schedule slot): one task per key (triggers/tasks.ts). */
  key?: string | null | undefined;
  /** The branch it pushes to instead of its own (a campaign's). */
  workBranch?: string | null | undefined;
  /** The attempt it retries (a campaign's earlier one): its push, if it made one, is adopted. */
  retriesTaskId?: string | null | undefined;
}

/** What a running worker is told: a task to look at (new work, or a cancel). */
export interface TaskSignals {
  poke(): void;
  cancel(taskId: string): void;
}

/** The memory a task's environment is expected to take before its repository is read: its project's limit, else null (the default). */
function taskMemoryBytes(project: ProjectRow | undefined): number | null {
  const memory = project?.settings.work?.limits?.memory;
  return memory === undefined ? null : (parseSize(String(memory)) ?? null);
}

/** Every column a list shows: not the diff (up to 5 MB a task), which only its own route reads. */
const LIST_COLUMNS = [
  'tasks.id',
  'tasks.org_id',
  'tasks.project_id',
  'tasks.repo_url',
  'tasks.base_branch',
  'tasks.goal',
  'tasks.agent',
  'tasks.command',
  'tasks.model',
  'tasks.model_default',
  'tasks.model_provider',
  'tasks.model_source',
  'tasks.model_settings',
  'tasks.budget',
  'tasks.check_command',
  'tasks.setup_commands',
  'tasks.state',
  'tasks.state_reason',
  'tasks.step',
  'tasks.trigger',
  'tasks.triggered_by',
  'tasks.continues_task_id',
  'tasks.work_branch',
  'tasks.retries_task_id',
  'tasks.one_off',
  'tasks.reply_to',
  'tasks.replied_state',
  'tasks.trigger_key',
  'tasks.created_by',
  'tasks.owner_id',
  'tasks.runner_id',
  'tasks.lease',
  'tasks.runner_labels',
  'tasks.memory_bytes',
  'tasks.attempts',
  'tasks.environment_id',
  'tasks.branch',
  'tasks.base_sha',
  'tasks.head_sha',
  'tasks.change_request',
  'tasks.checks_passed',
  'tasks.summary',
  'tasks.input_tokens',
  'tasks.output_tokens',
  'tasks.cost_usd',
  'tasks.created_at',
  'tasks.updated_at',
  'tasks.started_at',
  'tasks.finished_at',
] as const;

/**
 * Tasks as the API sees them. Every change is written before anyone acts on it: a
 * created task is a queued row the worker claims, a cancel is a state the worker
 * notices and honours.
 */
export class TaskService {
  readonly #db: Db;
  readonly #events: TaskEvents;
  readonly #secrets: SecretService;
  readonly #signals: TaskSignals;
  /** Who may name which repository, and where host-side git may go. */
  readonly #repos: RepoAccess;
  /** Refuses a built-in agent task when no model is configured (the org's, the project's or the instance's): bad input changes nothing. */
  readonly #checkModel: CheckModel;

  constructor(opts: { db: Db; events: TaskEvents; secrets: SecretService; signals: TaskSignals; repos: RepoAccess; checkModel: CheckModel }) {
    this.#db = opts.db;
    this.#repos = opts.repos;
    this.#events = opts.events;
    this.#secrets = opts.secrets;
    this.#signals = opts.signals;
    this.#checkModel = opts.checkModel;
  }

  /** `origin`: a task a trigger starts (triggers/tasks.ts); callers of the API never give one. */
  async create(scope: Scope, body: CreateTaskBody, origin?: TaskOrigin): Promise<Task> {
    const b = body.budget ?? {};
    const timeout = b.timeout === undefined || b.timeout === null ? DEFAULT_BUDGET.timeoutMs : typeof b.timeout === 'number' ? b.timeout : (parseDuration(b.timeout) ?? 0);
    if (!timeout) throw invalid('a task needs a timeout: give a duration such as 30m', 'budget.timeout');
    // A timer cannot wait longer: past it the task would time out at once.
    if (timeout > MAX_TIMEOUT_MS) throw invalid(`a task's timeout must be at most ${formatDuration(MAX_TIMEOUT_MS)}, got ${typeof b.timeout === 'string' ? b.timeout : `${timeout} ms`}`, 'budget.timeout');
    let project: ProjectRow | undefined;
    let repo: string;
    if (body.project) {
      project = await liveProject(this.#db, scope.orgId, body.project);
      if (!project.repo_url) throw invalid(`project '${project.name}' has no repository: give it one with \`berth project create ${project.name} --repo URL\``, 'project');
      repo = project.repo_url;
    } else {
      repo = await this.#repos.name(body.repo!, scope.caller);
    }
    const oneOff = await checkOneOff(scope, this.#secrets, { image: body.image, allowDomains: body.allowDomains, forge: body.forge });
    const agent = body.agent ?? project?.settings.agent?.kind ?? 'builtin';
    const command = body.command ?? project?.settings.agent?.command ?? null;
    if (agent === 'command' && !command) throw invalid('agent "command" needs a command: pass --command', 'command');
    const model = body.model ?? project?.settings.agent?.model ?? null;
    if (agent === 'builtin') await this.#checkModel(model ?? undefined, { orgId: scope.orgId, projectId: project?.id ?? null });

    const budget: TaskBudget = {
      maxSteps: b.maxSteps ?? DEFAULT_BUDGET.maxSteps,
      maxTokens: b.maxTokens ?? null,
      maxCostUsd: b.maxCostUsd ?? null,
      timeoutMs: timeout,
      maxCheckRetries: b.maxCheckRetries ?? DEFAULT_BUDGET.maxCheckRetries,
    };
    const id = newId('task');
    const row = await this.#db
      .insertInto('tasks')
      .values({
        id,
        org_id: scope.orgId,
        project_id: project?.id ?? null,
        repo_url: repo,
        base_branch: body.baseBranch ?? project?.default_branch ?? null,
        goal: body.goal,
        agent,
        command: agent === 'command' ? command : null,
        model,
        // Who named it, for `task show` (models/service.ts has the order).
        model_source: body.model ? 'task' : model ? 'project' : null,
        budget: JSON.stringify(budget),
        check_command: body.check ?? null,
        setup_commands: body.setup?.length ? JSON.stringify(body.setup) : null,
        // Where it may run: the task's labels over its project's; the memory the project asks for is held free on the runner that claims it.
        runner_labels: JSON.stringify({ ...project?.settings.runnerLabels, ...body.runnerLabels }),
        memory_bytes: taskMemoryBytes(project),
        state: 'queued',
        trigger: origin?.trigger ?? body.trigger ?? 'api',
        created_by: scope.actor,
        // Its creator's (an org token's maker), and so is the environment it makes (ownership.ts).
        owner_id: origin ? origin.ownerId : ownerIdOf(scope),
        triggered_by: origin?.triggeredBy ?? null,
        reply_to: origin?.replyTo ? JSON.stringify(origin.replyTo) : null,
        continues_task_id: origin?.continuesTaskId ?? null,
        trigger_key: origin?.key ?? null,
        work_branch: origin?.workBranch ?? null,
        retries_task_id: origin?.retriesTaskId ?? null,
        one_off: oneOff ? JSON.stringify(oneOff) : null,
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    await this.#events.append(id, { type: 'state', state: 'queued' });
    this.#signals.poke();
    return this.#toApi(row, project?.name ?? null);
  }

  /** Runs the same task again as a new one. */
  async retry(scope: Scope, id: string): Promise<Task> {
    const row = await this.#getFor(scope, id, 'owner');
    // A one-off repository is named again by whoever retries: a path stays an instance administrator's.
    if (!row.project_id) await this.#repos.name(row.repo_url, scope.caller);
    else assertNotArchived(await this.#db.selectFrom('projects').select(['name', 'archived_at']).where('id', '=', row.project_id).executeTakeFirst(), 'a retry');
    // So is what its transient project widens or sends: an admin's, today.
    await checkOneOff(scope, this.#secrets, row.one_off ?? {});
    const fresh = newId('task');
    const copy = await this.#db
      .insertInto('tasks')
      .values({
        id: fresh,
        org_id: row.org_id,
        project_id: row.project_id,
        repo_url: row.repo_url,
        base_branch: row.base_branch,
        goal: row.goal,
        agent: row.agent,
        command: row.command,
        // A default model is the default of the day the retry runs.
        model: row.model_default ? null : row.model,
        model_source: row.model_default ? null : row.model_source,
        budget: JSON.stringify(row.budget),
        check_command: row.check_command,
        setup_commands: row.setup_commands ? JSON.stringify(row.setup_commands) : null,
        runner_labels: JSON.stringify(row.runner_labels),
        memory_bytes: row.memory_bytes,
        state: 'queued',
        trigger: row.trigger,
        // A retry of a triggered task tells the same issue or thread, and a continuation's
        // retry continues the same branch and pull request; a trigger key is the first's alone.
        triggered_by: row.triggered_by,
        reply_to: row.reply_to ? JSON.stringify(row.reply_to) : null,
        continues_task_id: row.continues_task_id,
        work_branch: row.work_branch,
        // Stopped after it pushed (a restart): the retry adopts that push instead of making another.
        retries_task_id: row.id,
        one_off: row.one_off ? JSON.stringify(row.one_off) : null,
        created_by: scope.actor,
        // Its creator's (an org token's maker), and so is the environment it makes (ownership.ts).
        owner_id: ownerIdOf(scope),
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    await this.#events.append(fresh, { type: 'log', level: 'info', message: `retry of ${row.id}` });
    await this.#events.append(fresh, { type: 'state', state: 'queued' });
    this.#signals.poke();
    return this.#toApi(copy, await this.#projectName(row.project_id));
  }

  async list(orgId: string, o: TaskListOptions): Promise<TaskList> {
    let q = this.#db.selectFrom('tasks').leftJoin('projects', 'projects.id', 'tasks.project_id').select(LIST_COLUMNS).select(['projects.name as project_name', pageKey('tasks')]).where('tasks.org_id', '=', orgId);
    if (o.state) q = q.where('tasks.state', '=', o.state as TaskState);
    if (o.project) q = q.where((eb) => eb.or([eb('projects.name', '=', o.project!), eb('projects.id', '=', o.project!)]));
    if (o.trigger) q = q.where('tasks.trigger', '=', o.trigger);
    if (o.createdBy) q = q.where('tasks.created_by', '=', o.createdBy);
    if (o.cursor) q = q.where(afterPageCursor('tasks', o.cursor));
    const rows = await q.orderBy('tasks.created_at', 'desc').orderBy('tasks.id', 'desc').limit(o.limit + 1).execute();
    const page = rows.slice(0, o.limit);
    const counts = await this.#db
      .selectFrom('tasks')
      .select(['state', sql<string>`count(*)`.as('n')])
      .where('org_id', '=', orgId)
      .where('state', 'in', ['queued', 'provisioning', 'running'])
      .groupBy('state')
      .execute();
    const last = page.at(-1);
    const people = await this.#people(page.map((r) => r.created_by));
    return {
      items: page.map((r) => this.#toApi(r, r.project_name, people)),
      nextCursor: rows.length > o.limit && last ? encodePageCursor(last.page_key, last.id) : null,
      counts: Object.fromEntries(counts.map((c) => [c.state, Number(c.n)])),
    };
  }

  async show(orgId: string, id: string): Promise<Task> {
    const row = await this.#get(orgId, id);
    return this.#toApi(row, await this.#projectName(row.project_id), await this.#people([row.created_by]));
  }

  /** Redacted (again) as it is read: a secret set after the task ran is hidden from viewers too. */
  async diff(orgId: string, id: string): Promise<string | null> {
    const row = await this.#get(orgId, id);
    if (row.diff === null || row.project_id === null) return row.diff;
    return new Redactor(await this.#secrets.forProject(orgId, row.project_id)).redact(row.diff);
  }

  /** Checks the task is the org's; the events themselves are read from TaskEvents. */
  async assertVisible(orgId: string, id: string): Promise<TaskRow> {
    return this.#get(orgId, id);
  }

  async cancel(scope: Scope, id: string): Promise<Task> {
    const row = await this.#getFor(scope, id, 'owner');
    if (FINAL_TASK_STATES.has(row.state)) throw conflict(`task ${id} already ended: it ${row.state === 'cancelled' ? 'was cancelled' : row.state.replace('_', ' ')}`);
    const updated = await this.#db
      .updateTable('tasks')
      .set({ state: 'cancelled', state_reason: `cancelled by ${scope.actor}`, finished_at: new Date(), updated_at: new Date() })
      .where('id', '=', id)
      .where('state', 'in', ['queued', 'provisioning', 'running'])
      .returningAll()
      .executeTakeFirst();
    if (!updated) return this.show(scope.orgId, id);
    await this.#events.append(id, { type: 'state', state: 'cancelled', reason: `cancelled by ${scope.actor}` });
    this.#signals.cancel(id);
    return this.#toApi(updated, await this.#projectName(updated.project_id));
  }

  /**
   * Plain git: merges the task's branch into its base branch and pushes it. Only a green
   * change: one whose checks passed and that is not a draft, unless `force` says to merge it
   * anyway; `forced` then says what was overridden, for the audit log.
   */
  async approve(scope: Scope, id: string, opts: { force?: boolean | undefined } = {}): Promise<{ task: Task; forced: string | null }> {
    const row = await this.#getFor(scope, id, 'owner');
    const cr = row.change_request;
    if (!cr || !row.branch || !row.base_branch) throw conflict(`task ${id} has no change to approve${FINAL_TASK_STATES.has(row.state) ? '' : ' yet: it is still ' + row.state}`);
    if (cr.kind !== 'berth') throw conflict(`task ${id}'s change is a ${cr.kind.replace('_', ' ')} on the forge: review and merge it there (${cr.url})`);
    if (cr.mergedSha) throw conflict(`task ${id} was already approved: ${row.branch} is merged into ${row.base_branch} as ${cr.mergedSha.slice(0, 12)}`);
    const project = row.project_id ? await this.#db.selectFrom('projects').selectAll().where('id', '=', row.project_id).executeTakeFirst() : undefined;
    await assertOwnRepository(this.#db, this.#repos, row, project);
    // After the repository check: a task that may not merge at all is refused (and recorded) as that.
    const red =
      row.checks_passed === false ? 'its checks failed'
      : row.checks_passed === null ? 'no checks ran for it'
      : cr.draft ? `its change is a draft (${row.state_reason ?? 'not green'})`
      : null;
    if (red && !opts.force) {
      throw conflict(`task ${id} is not green: ${red}. Nothing was merged. Look at \`berth task diff ${id}\` and \`berth task logs ${id}\`; to merge it anyway, \`berth task approve ${id} --force\` (on record in the audit log)`);
    }
    const reach = await this.#repos.reach(row.repo_url);
    const settings: ForgeSettings = project?.settings.forge ?? row.one_off?.forge ?? {};
    const token = settings.tokenSecret ? await this.#secrets.forgeSecret(row.org_id, row.project_id, settings.tokenSecret) : null;
    const deployKey = settings.deployKeySecret ? await this.#secrets.forgeSecret(row.org_id, row.project_id, settings.deployKeySecret) : null;
    const credentials = await forgeFor(row.repo_url, settings, token ? { token } : null, deployKey).gitCredentials();
    const workdir = await mkdtemp(join(tmpdir(), 'berth-approve-'));
    try {
      const { sha } = await mergeBranch({ url: row.repo_url, reach, base: row.base_branch, branch: row.branch, workdir, credentials, message: `Merge ${row.branch}: ${row.goal.split('\n')[0]!.slice(0, 72)}\n\nApproved by ${scope.actor} (Berth task ${row.id}).` });
      const merged = { ...cr, mergedSha: sha };
      const updated = await this.#db.updateTable('tasks').set({ change_request: JSON.stringify(merged), updated_at: new Date() }).where('id', '=', id).returningAll().executeTakeFirstOrThrow();
      await this.#events.append(id, { type: 'log', level: red ? 'warn' : 'info', message: `approved by ${scope.actor}${red ? ` although ${red} (forced)` : ''}: merged ${row.branch} into ${row.base_branch} (${sha.slice(0, 12)})` });
      return { task: this.#toApi(updated, project?.name ?? null), forced: red };
    } finally {
      await rm(workdir, { recursive: true, force: true });
    }
  }

  /**
   * The people behind `user:usr_…` creators, so that lists say who rather than an id. A
   * user since removed from the org is still named: the task's history is the org's.
   */
  async #people(createdBy: string[]): Promise<Map<string, { name: string; email: string }>> {
    const ids = [...new Set(createdBy.filter((c) => c.startsWith('user:')).map((c) => c.slice('user:'.length)))];
    if (!ids.length) return new Map();
    const rows = await this.#db.selectFrom('users').select(['id', 'name', 'email']).where('id', 'in', ids).execute();
    return new Map(rows.map((u) => [`user:${u.id}`, { name: u.name, email: u.email }]));
  }

  /**
   * A follow-up: a new task with the previous goal and the new instruction, on the same
   * project or repository, starting from the previous task's branch when it pushed one, with
   * its agent, model, check, setup and budget. The web UI's "Continue" makes the same task.
   */
  async followUp(scope: Scope, id: string, instruction: string, trigger: string): Promise<Task> {
    const row = await this.#getFor(scope, id, 'owner');
    if (!FINAL_TASK_STATES.has(row.state)) throw conflict(`task ${id} is still ${row.state}: wait for it to end (\`berth task logs ${id} -f\`) or cancel it, then continue`);
    const project = row.project_id ? await this.#db.selectFrom('projects').selectAll().where('id', '=', row.project_id).executeTakeFirst() : undefined;
    assertNotArchived(project, 'a follow-up');
    const goal = `${row.goal}\n\nFollow-up to ${row.id}${row.branch ? ` (its work is on branch ${row.branch})` : ''}:\n${instruction.trim()}`;
    const budget: TaskBudget = row.budget;
    return this.create(scope, {
      goal,
      ...(project ? { project: project.id } : { repo: row.repo_url }),
      // Its branch only if it was pushed (a change request says so); else where it started.
      ...(row.branch && row.change_request ? { baseBranch: row.branch } : row.base_branch ? { baseBranch: row.base_branch } : {}),
      agent: row.agent,
      ...(row.command ? { command: row.command } : {}),
      ...(row.model && !row.model_default ? { model: row.model } : {}),
      ...(row.check_command ? { check: row.check_command } : {}),
      ...(row.setup_commands?.length ? { setup: row.setup_commands } : {}),
      budget: { maxSteps: budget.maxSteps, maxTokens: budget.maxTokens, maxCostUsd: budget.maxCostUsd, timeout: budget.timeoutMs, maxCheckRetries: budget.maxCheckRetries },
      trigger: trigger as CreateTaskBody['trigger'],
    });
  }

  async #projectName(projectId: string | null): Promise<string | null> {
    if (!projectId) return null;
    return (await this.#db.selectFrom('projects').select('name').where('id', '=', projectId).executeTakeFirst())?.name ?? null;
  }

  /** The task, if the caller may do `need` with it (ownership.ts): what every method that acts on one reads through. */
  async #getFor(scope: Scope, id: string, need: Ownership): Promise<TaskRow> {
    const row = await this.#get(scope.orgId, id);
    await assertTaskAccess(this.#db, scope, row, need);
    return row;
  }

  async #get(orgId: string, id: string): Promise<TaskRow> {
    const row = await this.#db.selectFrom('tasks').selectAll().where('org_id', '=', orgId).where('id', '=', id).executeTakeFirst();
    if (!row) throw notFound(`no task '${id}': \`berth task list\` shows them`);
    return row;
  }

  #toApi(r: Omit<TaskRow, 'diff'>, project: string | null, people?: Map<string, { name: string; email: string }>): Task {
    const iso = (d: Date | string | null) => (d === null ? null : new Date(d).toISOString());
    return {
      id: r.id,
      goal: r.goal,
      project,
      repo: r.repo_url,
      baseBranch: r.base_branch,
      agent: r.agent,
      model: r.agent === 'command' ? null : r.model,
      modelIsDefault: r.agent === 'builtin' && r.model_default,
      modelProvider: r.model_provider,
      modelSource: r.agent === 'command' ? null : r.model_source,
      modelSettings: r.model_settings,
      state: r.state,
      stateReason: r.state_reason,
      step: r.step,
      trigger: r.trigger,
      triggeredBy: r.triggered_by,
      continues: r.continues_task_id,
      createdBy: r.created_by,
      ...(people ? { creator: people.get(r.created_by) ?? null } : {}),
      environmentId: r.environment_id,
      branch: r.branch,
      changeRequest: r.change_request,
      checksPassed: r.checks_passed,
      setup: r.setup_commands ?? [],
      oneOff: r.one_off,
      runnerLabels: r.runner_labels ?? {},
      runnerId: r.runner_id,
      attempts: r.attempts ?? 0,
      summary: r.summary,
      usage: { inputTokens: Number(r.input_tokens), outputTokens: Number(r.output_tokens), costUsd: r.cost_usd },
      budget: r.budget,
      createdAt: iso(r.created_at)!,
      startedAt: iso(r.started_at),
      finishedAt: iso(r.finished_at),
    };
  }
}
