// The campaign scheduler: starts each running campaign's tasks, at most `concurrency` at
// once, never past `maxOpenPrs` open pull requests, hosted repositories no faster than the
// forge rate; settles each target when its task ends (an infrastructure failure goes back to
// the queue while retries last). One replica runs it at a time (db/singleton.ts).
//
// Nothing is lost or made twice when a control plane is killed: a target is marked starting,
// with its attempt, before its task is made, and the task carries the key
// campaign:CAMPAIGN:TARGET:RUN:ATTEMPT (unique), so the next pass finds the task it made, or
// makes it, never a second. An attempt killed after its push is retried by a task that names
// it (tasks.retries_task_id) and adopts that push (tasks/pipeline.ts): no second commit.
//
// It runs when told (a campaign's task ended: the tasks channel, index.ts; a person changed a
// campaign) and every 5 s as a safety net.
import { sql } from 'kysely';
import type { Logger } from 'pino';
import type { FailureKind } from '../../shared/api-campaigns.ts';
import type { CreateTaskBody } from '../../shared/api-tasks.ts';
import { BerthError } from '../../shared/errors.ts';
import { FINAL_TASK_STATES, type TaskState } from '../../shared/tasks.ts';
import { parseRepoUrl } from '../../forges/index.ts';
import type { AuditLog } from '../audit/index.ts';
import { atLeast, type Scope } from '../authz.ts';
import { isUniqueViolation, type CampaignRow, type CampaignTargetRow, type Db, type Role, type TaskRow } from '../db/index.ts';
import type { TaskService } from '../tasks/index.ts';
import { RepeatingPass } from '../repeating-pass.ts';
import { forgeTurnIfDue } from './pacing.ts';
import { campaignBranch } from './service.ts';

/** A safety net: a campaign's task that ends wakes the scheduler (the tasks channel: index.ts), and so does every change people make. */
const POLL_MS = 5_000;

export class CampaignScheduler {
  readonly #db: Db;
  readonly #tasks: TaskService;
  readonly #audit: AuditLog;
  readonly #log: Logger;
  readonly #exclusive: <T>(name: string, fn: () => Promise<T>) => Promise<T | undefined>;
  readonly #now: () => Date;
  readonly #loop: RepeatingPass;

  constructor(o: { db: Db; tasks: TaskService; audit: AuditLog; logger: Logger; exclusive?: <T>(name: string, fn: () => Promise<T>) => Promise<T | undefined>; now?: () => Date; pollMs?: number }) {
    this.#db = o.db;
    this.#tasks = o.tasks;
    this.#audit = o.audit;
    this.#log = o.logger;
    this.#exclusive = o.exclusive ?? ((_name, fn) => fn());
    this.#now = o.now ?? (() => new Date());
    this.#loop = new RepeatingPass({ run: () => this.#exclusive('campaigns', () => this.#passAll()), intervalMs: o.pollMs ?? POLL_MS, onError: (err) => this.#log.error({ err }, 'campaigns: a pass failed') });
  }

  start(): void {
    this.#loop.start();
  }

  wake(): void {
    this.#loop.wake();
  }

  /** One pass over every campaign at work, after the one under way (if any); what tests await. */
  pass(): Promise<void> {
    return this.#loop.run();
  }

  close(): Promise<void> {
    return this.#loop.close();
  }

  async #passAll(): Promise<void> {
    // Running ones, and any other with targets still at work (a paused or cancelled one's tasks end).
    const rows = await this.#db
      .selectFrom('campaigns')
      .selectAll()
      .where((eb) =>
        eb.or([
          eb('state', '=', 'running'),
          eb.exists(eb.selectFrom('campaign_targets').select('id').whereRef('campaign_targets.campaign_id', '=', 'campaigns.id').where('campaign_targets.state', 'in', ['starting', 'running'])),
        ]),
      )
      .orderBy('created_at')
      .execute();
    for (const c of rows) {
      if (this.#loop.closed) return;
      try {
        await this.#settle(c);
        if (c.state === 'cancelled') await this.#tidyCancelled(c);
        if (c.state === 'running') await this.#startSome(c);
        await this.#finishIfDone(c);
      } catch (err) {
        this.#log.error({ err, campaign: c.id }, 'campaigns: a campaign pass failed');
      }
    }
  }

  /** Targets whose task ended take its outcome; one marked starting whose task was never made gets it now. */
  async #settle(c: CampaignRow): Promise<void> {
    const orphans = await this.#db.selectFrom('campaign_targets').selectAll().where('campaign_id', '=', c.id).where('state', '=', 'starting').execute();
    for (const t of orphans) await this.#startTask(c, t);
    const ended = await this.#db
      .selectFrom('campaign_targets')
      .innerJoin('tasks', 'tasks.id', 'campaign_targets.task_id')
      .selectAll('campaign_targets')
      .select(['tasks.state as task_state', 'tasks.step as task_step', 'tasks.state_reason as task_reason', 'tasks.checks_passed as task_checks', 'tasks.change_request as task_cr', 'tasks.continues_task_id as task_continues', 'tasks.branch as task_branch'])
      .where('campaign_targets.campaign_id', '=', c.id)
      .where('campaign_targets.state', '=', 'running')
      .where('tasks.state', 'in', [...FINAL_TASK_STATES])
      .execute();
    for (const t of ended) {
      const now = this.#now();
      const state = t.task_state as TaskState;
      // What the task pushed (a failed check's change goes out too, as a draft) is the
      // repository's change: a rerun continues it and the open-PR cap counts it.
      const cr = t.task_cr as TaskRow['change_request'];
      const pushed = cr ? { change_request: JSON.stringify(cr), first_task_id: t.first_task_id ?? t.task_continues ?? t.task_id, pr_state: t.pr_state ?? 'open', ...(cr.kind === 'berth' && { pr_checks: checksWord(t.task_checks) }) } : {};
      if (state === 'succeeded') {
        await this.#db
          .updateTable('campaign_targets')
          // An earlier attempt's note ("attempt 1 failed …") is not why it ended; the attempts count stays.
          .set({ state: 'succeeded', reason: null, finished_at: now, updated_at: now, ...pushed })
          .where('id', '=', t.id)
          .where('state', '=', 'running')
          .execute();
        continue;
      }
      if (state === 'cancelled') {
        await this.#db.updateTable('campaign_targets').set({ state: 'cancelled', reason: t.task_reason, finished_at: now, updated_at: now }).where('id', '=', t.id).where('state', '=', 'running').execute();
        continue;
      }
      const failure = failureOf(state, t.task_step, t.task_checks, t.task_reason);
      const retry = failure === 'infrastructure' && t.attempts <= c.settings.maxRetries && c.state !== 'cancelled';
      await this.#db
        .updateTable('campaign_targets')
        .set(retry ? { state: 'pending', reason: `attempt ${t.attempts} failed (${t.task_reason ?? state}); tried again`, updated_at: now, ...pushed } : { state: 'failed', failure, reason: t.task_reason ?? state, finished_at: now, updated_at: now, ...pushed })
        .where('id', '=', t.id)
        .where('state', '=', 'running')
        .execute();
    }
  }

  /**
   * A cancelled campaign's stragglers: a target claimed, or put back for a retry, by a pass
   * that began before the cancel is cancelled, and a task such a pass made is cancelled.
   */
  async #tidyCancelled(c: CampaignRow): Promise<void> {
    const now = this.#now();
    await this.#db.updateTable('campaign_targets').set({ state: 'cancelled', reason: 'the campaign was cancelled', finished_at: now, updated_at: now }).where('campaign_id', '=', c.id).where('state', '=', 'pending').execute();
    const live = await this.#db
      .selectFrom('campaign_targets')
      .innerJoin('tasks', 'tasks.id', 'campaign_targets.task_id')
      .select('tasks.id')
      .where('campaign_targets.campaign_id', '=', c.id)
      .where('campaign_targets.state', '=', 'running')
      .where('tasks.state', 'in', ['queued', 'provisioning', 'running'])
      .execute();
    if (!live.length) return;
    const scope = await this.#scope(c);
    for (const { id } of live) await this.#tasks.cancel(scope, id).catch((err: unknown) => this.#log.warn({ err, campaign: c.id, task: id }, 'campaigns: could not cancel a task'));
  }

  /** Starts what the campaign's limits allow, in the list's order. */
  async #startSome(c: CampaignRow): Promise<void> {
    const counts = await this.#db
      .selectFrom('campaign_targets')
      .select([
        sql<string>`count(*) filter (where state in ('starting', 'running'))`.as('working'),
        sql<string>`count(*) filter (where change_request is not null and coalesce(pr_state, 'open') = 'open')`.as('open'),
        sql<string>`count(*) filter (where state in ('starting', 'running') and first_task_id is null)`.as('opening'),
      ])
      .where('campaign_id', '=', c.id)
      .executeTakeFirstOrThrow();
    let working = Number(counts.working);
    let mayOpen = c.settings.maxOpenPrs - Number(counts.open) - Number(counts.opening);
    const free = c.settings.concurrency - working;
    if (free <= 0) return;
    const pending = await this.#db.selectFrom('campaign_targets').selectAll().where('campaign_id', '=', c.id).where('state', '=', 'pending').orderBy('seq').limit(free + 50).execute();
    let started = 0;
    for (const t of pending) {
      if (started >= free) break;
      const continues = t.first_task_id !== null && t.change_request !== null && (t.pr_state ?? 'open') === 'open';
      // Each new branch may become a pull request: the cap counts them before they are opened.
      if (!continues && mayOpen <= 0) break;
      const hosted = parseRepoUrl(t.repo).kind !== 'local';
      const now = this.#now().getTime();
      if (hosted) {
        // Approvals and reads of change requests take turns at the same rate (pacing.ts).
        const due = await forgeTurnIfDue(this.#db, c, new Date(now));
        if (due) {
          setTimeout(() => this.wake(), Math.max(1, due.getTime() - now)).unref();
          break;
        }
      }
      const claimed = await this.#db
        .updateTable('campaign_targets')
        .set({ state: 'starting', attempts: sql`attempts + 1`, task_id: null, failure: null, started_at: new Date(now), finished_at: null, updated_at: new Date(now) })
        .where('id', '=', t.id)
        .where('state', '=', 'pending')
        // Paused or cancelled since this pass read it: nothing more starts. Run again (its
        // tasks' keys name the run): the next pass starts it, with the new run's keys.
        .where((eb) => eb.exists(eb.selectFrom('campaigns').select('id').where('id', '=', c.id).where('state', '=', 'running').where('run', '=', c.run)))
        .returningAll()
        .executeTakeFirst();
      if (!claimed) continue;
      started++;
      working++;
      if (!continues) mayOpen--;
      await this.#startTask(c, claimed);
    }
    if (started) await this.#db.updateTable('campaigns').set({ peak_running: sql`greatest(peak_running, ${working})`, updated_at: this.#now() }).where('id', '=', c.id).execute();
  }

  /** The task of a target marked starting: found by its key when a killed pass made it already, else made. */
  async #startTask(c: CampaignRow, t: CampaignTargetRow): Promise<void> {
    const key = taskKey(c, t, t.attempts);
    let taskId = (await this.#db.selectFrom('tasks').select('id').where('trigger_key', '=', key).executeTakeFirst())?.id;
    if (!taskId && c.state === 'cancelled') {
      // Claimed just before the cancel, its task never made: it never will be.
      const now = this.#now();
      await this.#db.updateTable('campaign_targets').set({ state: 'cancelled', reason: 'the campaign was cancelled', finished_at: now, updated_at: now }).where('id', '=', t.id).where('state', '=', 'starting').execute();
      return;
    }
    if (!taskId) {
      try {
        taskId = await this.#makeTask(c, t, key);
      } catch (err) {
        const raced = isUniqueViolation(err) ? (await this.#db.selectFrom('tasks').select('id').where('trigger_key', '=', key).executeTakeFirst())?.id : undefined;
        if (raced) taskId = raced;
        else {
          const refused = err instanceof BerthError && err.kind !== 'internal';
          if (!refused) this.#log.error({ err, campaign: c.id, target: t.id }, 'campaigns: could not start a task');
          const reason = refused ? err.message : 'its task could not be made (an internal error: see the server log)';
          const retry = !refused && t.attempts <= c.settings.maxRetries;
          const now = this.#now();
          await this.#db
            .updateTable('campaign_targets')
            .set(retry ? { state: 'pending', reason, updated_at: now } : { state: 'failed', failure: refused ? 'refused' : 'infrastructure', reason, finished_at: now, updated_at: now })
            .where('id', '=', t.id)
            .execute();
          return;
        }
      }
    }
    await this.#db.updateTable('campaign_targets').set({ state: 'running', task_id: taskId, updated_at: this.#now() }).where('id', '=', t.id).where('state', '=', 'starting').execute();
  }

  async #makeTask(c: CampaignRow, t: CampaignTargetRow, key: string): Promise<string> {
    const scope = await this.#scope(c);
    const s = c.settings;
    // The attempt before, in this run: a push it made before it was stopped is adopted, not made twice.
    const previous = t.attempts > 1 ? await this.#db.selectFrom('tasks').select('id').where('trigger_key', '=', taskKey(c, t, t.attempts - 1)).executeTakeFirst() : undefined;
    // A repository whose branch (and change request) an earlier run opened gets new commits on it.
    const root = t.first_task_id && t.change_request && (t.pr_state ?? 'open') === 'open' ? await this.#db.selectFrom('tasks').select(['id', 'branch']).where('id', '=', t.first_task_id).executeTakeFirst() : undefined;
    const body: CreateTaskBody = {
      goal: c.goal,
      ...(t.project_id ? { project: t.project_id } : { repo: t.repo }),
      ...(s.agent && { agent: s.agent }),
      ...(s.command && { command: s.command }),
      ...(s.model && { model: s.model }),
      ...(s.check && { check: s.check }),
      ...(s.setup?.length && { setup: s.setup }),
      ...(s.budget && { budget: s.budget }),
      ...(root?.branch && { baseBranch: root.branch }),
      // A repository without a project: the campaign's settings are its transient project's.
      ...(!t.project_id && s.image !== undefined && { image: s.image }),
      ...(!t.project_id && s.allowDomains !== undefined && { allowDomains: s.allowDomains }),
      ...(!t.project_id && s.forge !== undefined && { forge: s.forge }),
    };
    const task = await this.#tasks.create(scope, body, {
      trigger: 'campaign',
      triggeredBy: `campaign:${c.id}`,
      key,
      ownerId: c.owner_id,
      continuesTaskId: root?.branch ? root.id : null,
      workBranch: root?.branch ? null : campaignBranch(c),
      retriesTaskId: previous?.id ?? null,
    });
    await this.#audit.append({ orgId: c.org_id, actor: `campaign:${c.id}`, action: 'task.trigger', target: task.id, details: { trigger: 'campaign', campaign: c.name, repo: t.repo, attempt: t.attempts, run: c.run, ...(root?.branch && { continues: root.id }) } });
    return task.id;
  }

  /** The rights of its maker as they are now: one who left the org, or became a viewer, starts nothing more. */
  async #scope(c: CampaignRow): Promise<Scope> {
    const org = await this.#db.selectFrom('orgs').select('name').where('id', '=', c.org_id).executeTakeFirstOrThrow();
    let role: Role | null = null;
    let userId: string | null = null;
    let instanceAdmin = false;
    if (c.owner_id) {
      const member = await this.#db.selectFrom('memberships').innerJoin('users', 'users.id', 'memberships.user_id').select(['memberships.role', 'users.instance_admin']).where('memberships.org_id', '=', c.org_id).where('memberships.user_id', '=', c.owner_id).executeTakeFirst();
      if (member) {
        role = member.role;
        userId = c.owner_id;
        instanceAdmin = member.instance_admin;
      } else {
        const token = await this.#db.selectFrom('tokens').select(['role', 'org_id', 'revoked_at', 'expires_at']).where('id', '=', c.owner_id).executeTakeFirst();
        if (token && token.org_id === c.org_id && token.role && !token.revoked_at && (!token.expires_at || new Date(token.expires_at) > this.#now())) role = token.role;
      }
    }
    if (!role || !atLeast(role, 'member')) throw new BerthError('forbidden', `its maker ${c.created_by} may no longer start tasks in this org: an admin can rerun it as theirs`);
    // Its tasks are its maker's (created_by names them, as a task they started would): the
    // repository checks at clone and push ask what that person may do today.
    return { orgId: c.org_id, orgName: org.name, role, actor: c.created_by, caller: { tokenId: `campaign:${c.id}`, kind: 'org', userId, orgId: c.org_id, role, instanceAdmin } };
  }

  async #finishIfDone(c: CampaignRow): Promise<void> {
    if (c.state !== 'running') return;
    // One row answers it: without the limit every pass read the id of each target not done yet (all 1,000 at first).
    const left = await this.#db.selectFrom('campaign_targets').select('id').where('campaign_id', '=', c.id).where('state', 'in', ['pending', 'starting', 'running']).limit(1).executeTakeFirst();
    if (left) return;
    const now = this.#now();
    const done = await this.#db.updateTable('campaigns').set({ state: 'done', finished_at: now, updated_at: now }).where('id', '=', c.id).where('state', '=', 'running').executeTakeFirst();
    if (!Number(done.numUpdatedRows)) return;
    const counts = await this.#db.selectFrom('campaign_targets').select(['state', sql<string>`count(*)`.as('n')]).where('campaign_id', '=', c.id).groupBy('state').execute();
    await this.#audit.append({ orgId: c.org_id, actor: `campaign:${c.id}`, action: 'campaign.done', target: c.id, details: { name: c.name, run: c.run, ...Object.fromEntries(counts.map((r) => [r.state, Number(r.n)])) } });
  }
}

/** A target's task's key for one attempt: unique, so a killed pass never makes it twice. */
function taskKey(c: CampaignRow, t: CampaignTargetRow, attempt: number): string {
  return `campaign:${c.id}:${t.id}:${c.run}:${attempt}`;
}

/** A plain-git change has no forge to ask: its checks are Berth's own check's, in the forge's words. */
function checksWord(passed: boolean | null): string | null {
  return passed === null ? null : passed ? 'passing' : 'failing';
}

/**
 * Why a task failed, by the step it had reached: before the agent began (provisioning,
 * cloning) or while pushing it is the infrastructure's (retried); setup and checks are the
 * repository's commands; the rest the agent's.
 */
export function failureOf(state: TaskState, step: string | null, checksPassed: boolean | null, reason: string | null = null): FailureKind {
  if (state === 'timed_out') return 'timeout';
  // Its control plane (and the runner in it) was killed under it, at whatever step: the reason
  // TaskWorker.recover (tasks/worker.ts) gives. Nothing was pushed before step push; from
  // there the retry adopts the push when the branch still ends at the commit the attempt
  // recorded (tasks/pipeline.ts), and never forces one over it.
  if (reason?.startsWith('the runner stopped while the task was at step')) return 'infrastructure';
  if (checksPassed === false) return 'check';
  switch (step) {
    case null:
    case 'provisioning':
    case 'cloning':
    case 'push':
    case 'pull_request':
      return 'infrastructure';
    case 'setup':
    case 'checks':
      return 'check';
    default:
      return 'agent';
  }
}
