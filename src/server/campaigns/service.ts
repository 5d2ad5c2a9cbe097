// Campaigns: one change across many repositories. This file is what people ask of one (make,
// list, show, pause, resume, cancel, retry, rerun, export); scheduler.ts starts and settles
// its tasks. Org-scoped as everything else: a member may run a campaign over the repositories
// of the org's projects, an admin over any repository Berth may reach; its maker or an admin
// may steer it.
import { sql } from 'kysely';
import type { z } from 'zod';
import type { Campaign, CampaignDetail, CampaignSettings, CampaignTarget, CreatedCampaign, FailureGroup, InvalidLine, TargetCounts } from '../../shared/api-campaigns.ts';
import { CreateCampaignBody, ListTargetsQuery, TARGET_STATES } from '../../shared/api-campaigns.ts';
import { conflict, notFound } from '../../shared/errors.ts';
import { checkOneOff } from '../tasks/one-off.ts';
import type { SecretService } from '../secrets/service.ts';
import { newId } from '../../shared/ids.ts';
import { parseRepoUrl, type RepoAccess } from '../../forges/index.ts';
import { atLeast, forbidden, type Scope } from '../authz.ts';
import type { CampaignRow, CampaignTargetRow, Db } from '../db/index.ts';
import { ownerIdOf } from '../ownership.ts';
import type { TaskService } from '../tasks/index.ts';
import { repoKey } from '../triggers/tasks.ts';
import { parseRepoList } from './targets.ts';

/** What the scheduler is told: a campaign has work to look at now. */
export interface CampaignSignals {
  wake(): void;
}

const INSERT_BATCH = 500;

export class CampaignService {
  readonly #db: Db;
  readonly #tasks: TaskService;
  readonly #repos: RepoAccess;
  readonly #secrets: SecretService;
  readonly #now: () => Date;
  signals: CampaignSignals = { wake: () => {} };

  constructor(o: { db: Db; tasks: TaskService; repos: RepoAccess; secrets: SecretService; now?: () => Date }) {
    this.#db = o.db;
    this.#tasks = o.tasks;
    this.#repos = o.repos;
    this.#secrets = o.secrets;
    this.#now = o.now ?? (() => new Date());
  }

  /**
   * Makes a campaign: its row and one target per repository of the list, in one transaction.
   * A line that names no repository, or one the caller may not use, is reported and left out;
   * a list with none left is refused and nothing is made.
   */
  async create(scope: Scope, input: z.output<typeof CreateCampaignBody>): Promise<CreatedCampaign> {
    if (!atLeast(scope.role, 'member')) throw forbidden('only members and admins may run a campaign');
    const { repos: listed, invalid } = parseRepoList(input.repos ?? []);
    const projects = await this.#db.selectFrom('projects').select(['id', 'name', 'repo_url']).where('org_id', '=', scope.orgId).where('archived_at', 'is', null).where('repo_url', 'is not', null).execute();
    const byKey = new Map(projects.map((p) => [repoKey(p.repo_url!), p]));
    const admin = atLeast(scope.role, 'admin');
    // The transient project of a repository without one: only an admin's campaign has such repositories.
    const oneOff = await this.#checkOneOff(scope, input);
    const targets: { line: number; repo: string; key: string; projectId: string | null }[] = [];
    // The address rules are a host's (a DNS lookup each): asked once per host, not once per line
    // of a 10,000-line list; each line's own form is still checked (parseRepoUrl).
    const hosts = new Map<string, Promise<unknown>>();
    const named = async (repo: string): Promise<string> => {
      const at = parseRepoUrl(repo);
      const host = at.kind === 'local' ? null : `${at.kind}:${at.host}`;
      if (host === null) return this.#repos.name(repo, scope.caller);
      let checked = hosts.get(host);
      if (!checked) hosts.set(host, (checked = this.#repos.name(repo, scope.caller)));
      await checked;
      return repo.trim();
    };
    for (const r of listed) {
      const project = byKey.get(r.key);
      if (project) {
        targets.push({ ...r, repo: project.repo_url!, projectId: project.id });
        continue;
      }
      if (!admin) {
        invalid.push({ line: r.line, text: r.repo.slice(0, 200), reason: 'no project of this org uses this repository: a member may run a campaign over projects\' repositories only; make a project for it or ask an admin' });
        continue;
      }
      try {
        targets.push({ ...r, repo: await named(r.repo), projectId: null });
      } catch (err) {
        invalid.push({ line: r.line, text: r.repo.slice(0, 200), reason: err instanceof Error ? err.message : String(err) });
      }
    }
    invalid.sort((a, b) => a.line - b.line);
    if (!targets.length) {
      const first = invalid[0];
      throw conflict(`no repository of the list can be used${first ? `: line ${first.line}: ${first.reason}` : ''}`);
    }
    const settings: CampaignSettings = {
      ...(input.agent && { agent: input.agent }),
      ...(input.command && { command: input.command }),
      ...(input.model && { model: input.model }),
      ...(input.check && { check: input.check }),
      ...(input.setup?.length && { setup: input.setup }),
      ...(input.budget && { budget: input.budget }),
      ...oneOff,
      concurrency: input.concurrency,
      maxOpenPrs: input.maxOpenPrs,
      forgeRate: input.forgeRate,
      branchPrefix: input.branchPrefix,
      draft: input.draft,
      maxRetries: input.maxRetries,
    };
    const id = newId('cmp');
    const taken = await this.#db.selectFrom('campaigns').select('id').where('org_id', '=', scope.orgId).where('name', '=', input.name).executeTakeFirst();
    if (taken) throw conflict(`a campaign named '${input.name}' exists (${taken.id}): choose another name, or \`berth campaign rerun ${input.name}\` to run it again`);
    await this.#db.transaction().execute(async (tx) => {
      await tx
        .insertInto('campaigns')
        .values({ id, org_id: scope.orgId, name: input.name, goal: input.goal, state: 'running', settings: JSON.stringify(settings), created_by: scope.actor, owner_id: ownerIdOf(scope) })
        .execute();
      for (let i = 0; i < targets.length; i += INSERT_BATCH) {
        await tx
          .insertInto('campaign_targets')
          .values(targets.slice(i, i + INSERT_BATCH).map((t, j) => ({ id: newId('tgt'), campaign_id: id, seq: i + j + 1, repo: t.repo, repo_key: t.key, project_id: t.projectId, state: 'pending' as const })))
          .execute();
      }
    });
    this.signals.wake();
    return { campaign: await this.#view(await this.#get(scope.orgId, id)), invalid };
  }

  /** The settings a repository without a project gets (checked again as each of its tasks is made). */
  async #checkOneOff(scope: Scope, input: z.output<typeof CreateCampaignBody>): Promise<Pick<CampaignSettings, 'image' | 'allowDomains' | 'forge'>> {
    const given = (['image', 'allowDomains', 'forge'] as const).filter((k) => input[k] !== undefined);
    if (!given.length) return {};
    if (!atLeast(scope.role, 'admin')) {
      throw forbidden(`${given.join(', ')} ${given.length > 1 ? 'set up' : 'sets up'} repositories without a project, which only an admin's campaign may name: a member's campaign runs over projects' repositories, with their projects' settings`);
    }
    return (await checkOneOff(scope, this.#secrets, input)) ?? {};
  }

  async list(scope: Scope): Promise<Campaign[]> {
    const rows = await this.#db.selectFrom('campaigns').selectAll().where('org_id', '=', scope.orgId).orderBy('created_at', 'desc').orderBy('id', 'desc').limit(500).execute();
    return Promise.all(rows.map((r) => this.#view(r)));
  }

  async show(scope: Scope, ref: string): Promise<CampaignDetail> {
    const row = await this.#get(scope.orgId, ref);
    const view = await this.#view(row);
    const names = await this.#projectNames(row.id);
    const pushed = await this.#db.selectFrom('campaign_targets').selectAll().where('campaign_id', '=', row.id).where('change_request', 'is not', null).orderBy('seq').execute();
    const failed = await this.#db
      .selectFrom('campaign_targets')
      .select(['failure', 'reason', 'repo'])
      .where('campaign_id', '=', row.id)
      .where('state', '=', 'failed')
      .orderBy('seq')
      .execute();
    const groups = new Map<string, FailureGroup>();
    for (const f of failed) {
      const reason = reasonKey(f.reason ?? '');
      const k = `${f.failure}\u0000${reason}`;
      const g = groups.get(k) ?? { failure: f.failure ?? 'agent', reason, count: 0, repos: [] };
      g.count++;
      if (g.repos.length < 5) g.repos.push(f.repo);
      groups.set(k, g);
    }
    return { ...view, changeRequests: pushed.map((t) => targetView(t, names)), failures: [...groups.values()].sort((a, b) => b.count - a.count) };
  }

  async targets(scope: Scope, ref: string, q: z.output<typeof ListTargetsQuery>): Promise<{ items: CampaignTarget[]; next: number | null }> {
    const row = await this.#get(scope.orgId, ref);
    let query = this.#db.selectFrom('campaign_targets').selectAll().where('campaign_id', '=', row.id);
    if (q.state) query = query.where('state', '=', q.state);
    if (q.after !== undefined) query = query.where('seq', '>', q.after);
    const rows = await query.orderBy('seq').limit(q.limit + 1).execute();
    const page = rows.slice(0, q.limit);
    const names = await this.#projectNames(row.id);
    return { items: page.map((t) => targetView(t, names)), next: rows.length > q.limit ? page.at(-1)!.seq : null };
  }

  /** Every target, for `campaign export` (CSV or JSON). */
  async allTargets(scope: Scope, ref: string): Promise<{ campaign: Campaign; targets: CampaignTarget[] }> {
    const row = await this.#get(scope.orgId, ref);
    const names = await this.#projectNames(row.id);
    const rows = await this.#db.selectFrom('campaign_targets').selectAll().where('campaign_id', '=', row.id).orderBy('seq').execute();
    return { campaign: await this.#view(row), targets: rows.map((t) => targetView(t, names)) };
  }

  /** No new task starts; those under way finish. */
  async pause(scope: Scope, ref: string): Promise<Campaign> {
    return this.#transition(scope, ref, 'pause', ['running'], 'paused');
  }

  async resume(scope: Scope, ref: string): Promise<Campaign> {
    return this.#transition(scope, ref, 'resume', ['paused'], 'running');
  }

  /** Stops it: what has not started never will, and its tasks under way are cancelled. */
  async cancel(scope: Scope, ref: string): Promise<Campaign> {
    const row = await this.#get(scope.orgId, ref);
    this.#mayManage(scope, row, 'cancel');
    if (row.state === 'cancelled') throw conflict(`campaign '${row.name}' is already cancelled`);
    const now = this.#now();
    await this.#db.transaction().execute(async (tx) => {
      await tx.updateTable('campaigns').set({ state: 'cancelled', finished_at: now, updated_at: now }).where('id', '=', row.id).execute();
      await tx.updateTable('campaign_targets').set({ state: 'cancelled', reason: `cancelled by ${scope.actor}`, finished_at: now, updated_at: now }).where('campaign_id', '=', row.id).where('state', '=', 'pending').execute();
    });
    // Targets at work are settled by the scheduler once their tasks say cancelled.
    const working = await this.#db.selectFrom('campaign_targets').select('task_id').where('campaign_id', '=', row.id).where('state', 'in', ['starting', 'running']).where('task_id', 'is not', null).execute();
    for (const { task_id } of working) await this.#tasks.cancel(scope, task_id!).catch(() => {});
    this.signals.wake();
    return this.#view(await this.#get(scope.orgId, row.id));
  }

  /**
   * The targets that failed go back to the queue, with fresh retries. As a new run: a task's
   * key is campaign:ID:TARGET:RUN:ATTEMPT, and the attempts start again from one, so within
   * the same run the scheduler would find the failed tasks of the attempts before by their keys.
   */
  async retryFailed(scope: Scope, ref: string): Promise<Campaign> {
    const row = await this.#get(scope.orgId, ref);
    this.#mayManage(scope, row, 'retry');
    if (row.state === 'cancelled') throw conflict(`campaign '${row.name}' was cancelled: \`berth campaign rerun ${row.name}\` runs it again`);
    const now = this.#now();
    const done = await this.#db.transaction().execute(async (tx) => {
      const r = await tx
        .updateTable('campaign_targets')
        .set({ state: 'pending', attempts: 0, failure: null, reason: null, task_id: null, finished_at: null, updated_at: now })
        .where('campaign_id', '=', row.id)
        .where('state', '=', 'failed')
        .executeTakeFirst();
      if (Number(r.numUpdatedRows)) await tx.updateTable('campaigns').set({ state: row.state === 'paused' ? 'paused' : 'running', run: sql`run + 1`, finished_at: null, updated_at: now }).where('id', '=', row.id).execute();
      return Number(r.numUpdatedRows);
    });
    if (!done) throw conflict(`campaign '${row.name}' has no failed repository to retry`);
    this.signals.wake();
    return this.#view(await this.#get(scope.orgId, row.id));
  }

  /**
   * Runs it again over every repository: one that has its branch (and pull request) from an
   * earlier run gets new commits on that branch, never a second pull request.
   */
  async rerun(scope: Scope, ref: string): Promise<Campaign> {
    const row = await this.#get(scope.orgId, ref);
    this.#mayManage(scope, row, 'rerun');
    const working = await this.#db.selectFrom('campaign_targets').select('id').where('campaign_id', '=', row.id).where('state', 'in', ['starting', 'running']).executeTakeFirst();
    if (working || (row.state === 'running' && (await this.#db.selectFrom('campaign_targets').select('id').where('campaign_id', '=', row.id).where('state', '=', 'pending').executeTakeFirst()))) {
      throw conflict(`campaign '${row.name}' is still at work: wait for it to finish (or cancel it), then run it again`);
    }
    const now = this.#now();
    await this.#db.transaction().execute(async (tx) => {
      await tx.updateTable('campaigns').set({ state: 'running', run: row.run + 1, finished_at: null, updated_at: now }).where('id', '=', row.id).execute();
      await tx.updateTable('campaign_targets').set({ state: 'pending', attempts: 0, failure: null, reason: null, task_id: null, started_at: null, finished_at: null, updated_at: now }).where('campaign_id', '=', row.id).execute();
    });
    this.signals.wake();
    return this.#view(await this.#get(scope.orgId, row.id));
  }

  async #transition(scope: Scope, ref: string, verb: 'pause' | 'resume', from: CampaignRow['state'][], to: CampaignRow['state']): Promise<Campaign> {
    const row = await this.#get(scope.orgId, ref);
    this.#mayManage(scope, row, verb);
    const moved = await this.#db.updateTable('campaigns').set({ state: to, updated_at: this.#now() }).where('id', '=', row.id).where('state', 'in', from).executeTakeFirst();
    if (!Number(moved.numUpdatedRows)) throw conflict(`campaign '${row.name}' is ${row.state}: only a ${from.join(' or ')} one can be ${verb === 'pause' ? 'paused' : 'resumed'}`);
    this.signals.wake();
    return this.#view(await this.#get(scope.orgId, row.id));
  }

  #mayManage(scope: Scope, row: CampaignRow, verb: string): void {
    if (atLeast(scope.role, 'admin') || (atLeast(scope.role, 'member') && row.owner_id !== null && row.owner_id === ownerIdOf(scope))) return;
    throw forbidden(`only campaign '${row.name}''s maker or an admin may ${verb} it`);
  }

  async get(orgId: string, ref: string): Promise<CampaignRow> {
    return this.#get(orgId, ref);
  }

  async #get(orgId: string, ref: string): Promise<CampaignRow> {
    const row = await this.#db
      .selectFrom('campaigns')
      .selectAll()
      .where('org_id', '=', orgId)
      .where((eb) => eb.or([eb('id', '=', ref), eb('name', '=', ref)]))
      .executeTakeFirst();
    if (!row) throw notFound(`no campaign '${ref}': \`berth campaign list\` shows them`);
    return row;
  }

  async #projectNames(campaignId: string): Promise<Map<string, string>> {
    const rows = await this.#db
      .selectFrom('projects')
      .select(['id', 'name'])
      .where('id', 'in', this.#db.selectFrom('campaign_targets').select('project_id').where('campaign_id', '=', campaignId).where('project_id', 'is not', null))
      .execute();
    return new Map(rows.map((r) => [r.id, r.name]));
  }

  async #view(row: CampaignRow): Promise<Campaign> {
    const counted = await this.#db.selectFrom('campaign_targets').select(['state', sql<string>`count(*)`.as('n')]).where('campaign_id', '=', row.id).groupBy('state').execute();
    const counts = Object.fromEntries(TARGET_STATES.map((s) => [s, 0])) as TargetCounts;
    for (const c of counted) counts[c.state] = Number(c.n);
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    // The pace of the last ten minutes (or since it began): finished targets per minute.
    const now = this.#now().getTime();
    const since = Math.max(row.created_at.getTime(), now - 10 * 60_000);
    const recent = await this.#db
      .selectFrom('campaign_targets')
      .select(sql<string>`count(*)`.as('n'))
      .where('campaign_id', '=', row.id)
      .where('finished_at', '>=', new Date(since))
      .where('state', 'in', ['succeeded', 'failed'])
      .executeTakeFirstOrThrow();
    const minutes = Math.max((now - since) / 60_000, 1 / 60);
    const throughput = Number(recent.n) ? Number(recent.n) / minutes : null;
    const left = counts.pending + counts.starting + counts.running;
    let waitingFor: string | null = null;
    if (row.state === 'paused' && counts.pending) waitingFor = `paused: \`berth campaign resume ${row.name}\` goes on`;
    else if (row.state === 'running' && counts.pending) {
      const open = await this.#db
        .selectFrom('campaign_targets')
        .select(sql<string>`count(*)`.as('n'))
        .where('campaign_id', '=', row.id)
        .where('change_request', 'is not', null)
        .where(sql<boolean>`coalesce(pr_state, 'open') = 'open'`)
        .executeTakeFirstOrThrow();
      if (Number(open.n) >= row.settings.maxOpenPrs) {
        waitingFor = `${open.n} pull requests or branches are open, the most it may have (--max-open-prs ${row.settings.maxOpenPrs}): \`berth campaign approve ${row.name}\` (or merging or closing them) lets the rest start`;
      }
    }
    return {
      id: row.id,
      name: row.name,
      goal: row.goal,
      state: row.state,
      settings: row.settings,
      branch: campaignBranch(row),
      run: row.run,
      createdBy: row.created_by,
      createdAt: row.created_at.toISOString(),
      finishedAt: row.finished_at?.toISOString() ?? null,
      total,
      counts,
      peakRunning: row.peak_running,
      throughputPerMin: throughput === null ? null : Math.round(throughput * 10) / 10,
      etaSeconds: throughput && left && row.state === 'running' ? Math.round((left / throughput) * 60) : null,
      waitingFor,
    };
  }
}

/** The branch a campaign's tasks push to in each repository. */
export function campaignBranch(row: Pick<CampaignRow, 'name' | 'settings'>): string {
  return `${row.settings.branchPrefix}/${row.name}`;
}

export function targetView(t: CampaignTargetRow, projects: Map<string, string>): CampaignTarget {
  return {
    id: t.id,
    repo: t.repo,
    project: t.project_id ? (projects.get(t.project_id) ?? null) : null,
    state: t.state,
    attempts: t.attempts,
    taskId: t.task_id,
    failure: t.failure,
    reason: t.reason,
    changeRequest: t.change_request
      ? { kind: t.change_request.kind, url: t.change_request.url, number: t.change_request.number, draft: t.change_request.draft, state: t.pr_state, checks: t.pr_checks, review: t.pr_review }
      : null,
    startedAt: t.started_at?.toISOString() ?? null,
    finishedAt: t.finished_at?.toISOString() ?? null,
  };
}

/** A reason with what differs per repository (ids, commits, paths of temp dirs) taken out, so alike failures group. */
export function reasonKey(reason: string): string {
  return reason
    .split('\n')[0]!
    .replace(/\b(task|env|tgt|cmp)_[0-9a-z]{12}\b/g, '$1_…')
    .replace(/\b[0-9a-f]{12,40}\b/g, '…')
    .slice(0, 300);
}

export type { InvalidLine };
