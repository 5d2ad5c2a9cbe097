// A campaign's change requests on their forges: their state read back (open, merged, closed;
// checks; reviews), and `campaign approve`, which merges plain-git changes (as `berth task
// approve` does) and marks GitHub/GitLab drafts ready for review.
//
// The reading is low-rate: every minute, at most what the campaign's forge rate allows in
// that minute, the longest unread first; and when someone looks at a campaign whose pull
// requests were last read over a minute ago. Whichever replica reads a campaign first takes
// it (campaigns.refreshed_at, a conditional update): one reading per campaign per period,
// however many replicas run. Every call to the forge (a read, an approval) takes a turn of
// the campaign's forge rate in the database (pacing.ts), shared with the scheduler's starts. A change request
// read as merged or closed no longer counts against maxOpenPrs (the scheduler counts
// pr_state 'open'), so the scheduler is woken to start what waited.
import { sql } from 'kysely';
import type { Logger } from 'pino';
import type { z } from 'zod';
import { parseRate, type ApproveBody, type ApproveResult } from '../../shared/api-campaigns.ts';
import { BerthError, conflict, notFound } from '../../shared/errors.ts';
import type { ChangeRequest } from '../../shared/tasks.ts';
import { detectKind, githubApiUrl, parseRepoUrl, reviewerFor, searchGitHubRepositories, type ChangeRequestReviewer, type ForgeAuth, type ForgeSettings } from '../../forges/index.ts';
import type { AuditLog } from '../audit/index.ts';
import type { Scope } from '../authz.ts';
import type { CampaignRow, CampaignTargetRow, Db } from '../db/index.ts';
import type { SecretService } from '../secrets/service.ts';
import type { TaskService } from '../tasks/index.ts';
import { forgeTurn } from './pacing.ts';

const REFRESH_EVERY_MS = 60_000;
/** A change request read longer ago than this is read again when someone looks at its campaign. */
const STALE_MS = 60_000;
/** Most change requests of one campaign read in one pass, whatever its rate. */
const MAX_PER_PASS = 100;

/** Change requests on a forge (not plain git) that the forge last said were open, or that were never read. */
const openOnForge = sql<boolean>`change_request is not null and change_request->>'kind' <> 'berth' and coalesce(pr_state, 'open') = 'open'`;

export class CampaignForge {
  readonly #db: Db;
  readonly #tasks: TaskService;
  readonly #secrets: SecretService;
  readonly #audit: AuditLog;
  readonly #log: Logger;
  readonly #exclusive: <T>(name: string, fn: () => Promise<T>) => Promise<T | undefined>;
  readonly #now: () => Date;
  readonly #everyMs: number;
  readonly #onFreed: () => void;
  /** Sleeps between two reads of one campaign (its forge rate); tests make it instant. */
  readonly #pace: (ms: number, signal: AbortSignal) => Promise<void>;
  readonly #closing = new AbortController();
  readonly #inFlight = new Map<string, Promise<number>>();
  #timer: NodeJS.Timeout | undefined;
  #pass: Promise<void> | null = null;

  constructor(o: {
    db: Db;
    tasks: TaskService;
    secrets: SecretService;
    audit: AuditLog;
    logger: Logger;
    exclusive?: <T>(name: string, fn: () => Promise<T>) => Promise<T | undefined>;
    now?: () => Date;
    everyMs?: number;
    /** Called when a change request was found merged or closed: the scheduler may start more. */
    onFreed?: () => void;
    pace?: (ms: number, signal: AbortSignal) => Promise<void>;
  }) {
    this.#db = o.db;
    this.#tasks = o.tasks;
    this.#secrets = o.secrets;
    this.#audit = o.audit;
    this.#log = o.logger;
    this.#exclusive = o.exclusive ?? ((_name, fn) => fn());
    this.#now = o.now ?? (() => new Date());
    this.#everyMs = o.everyMs ?? REFRESH_EVERY_MS;
    this.#onFreed = o.onFreed ?? (() => {});
    this.#pace = o.pace ?? sleep;
  }

  start(): void {
    this.#timer = setInterval(() => void this.pass().catch((err: unknown) => this.#log.error({ err }, 'campaigns: reading change requests failed')), this.#everyMs);
    this.#timer.unref();
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    this.#closing.abort();
    await this.#pass?.catch(() => {});
    await Promise.allSettled(this.#inFlight.values());
  }

  /** One refresh pass over every campaign with open change requests on a forge (one replica at a time). */
  async pass(): Promise<void> {
    if (this.#pass) return this.#pass;
    this.#pass = (async () => {
      try {
        await this.#exclusive('campaign-forge', async () => {
          const rows = await this.#db
            .selectFrom('campaigns')
            .select('id')
            .where((eb) => eb.exists(eb.selectFrom('campaign_targets').select('campaign_targets.id').whereRef('campaign_targets.campaign_id', '=', 'campaigns.id').where(openOnForge)))
            .orderBy('created_at')
            .execute();
          for (const { id } of rows) {
            if (this.#closing.signal.aborted) return;
            // Timers drift: a reading a little under a period ago (by another replica) still counts as this period's.
            if (!(await this.#take(id, this.#everyMs * 0.9))) continue;
            await this.refresh(id).catch((err: unknown) => this.#log.error({ err, campaign: id }, 'campaigns: reading change requests failed'));
          }
        });
      } finally {
        this.#pass = null;
      }
    })();
    return this.#pass;
  }

  /**
   * Reads the campaign's open change requests, the longest unread first, at most what its
   * forge rate allows in one refresh interval, spaced by that rate. Resolves to how many were read.
   */
  async refresh(campaignId: string, o: { staleMs?: number } = {}): Promise<number> {
    const running = this.#inFlight.get(campaignId);
    if (running) return running;
    const p = this.#refresh(campaignId, o.staleMs ?? 0).finally(() => this.#inFlight.delete(campaignId));
    this.#inFlight.set(campaignId, p);
    return p;
  }

  /**
   * When someone looks at a campaign: its change requests read over a minute ago are read again,
   * waited for up to `waitMs` (the rest go on in the background and show the next time).
   */
  async refreshIfStale(orgId: string, ref: string, waitMs = 2_000): Promise<void> {
    const c = await this.#db.selectFrom('campaigns').select('id').where('org_id', '=', orgId).where((eb) => eb.or([eb('id', '=', ref), eb('name', '=', ref)])).executeTakeFirst();
    if (!c) return;
    const stale = await this.#db
      .selectFrom('campaign_targets')
      .select('id')
      .where('campaign_id', '=', c.id)
      .where(openOnForge)
      .where((eb) => eb.or([eb('refreshed_at', 'is', null), eb('refreshed_at', '<', new Date(this.#now().getTime() - STALE_MS))]))
      .executeTakeFirst();
    if (!stale || !(await this.#take(c.id, STALE_MS))) return;
    const done = this.refresh(c.id, { staleMs: STALE_MS }).catch((err: unknown) => this.#log.warn({ err, campaign: c.id }, 'campaigns: reading change requests failed'));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([done, new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs)))]);
    clearTimeout(timer);
  }

  /** Takes the campaign's reading for this period: false when a replica took it less than `periodMs` ago. */
  async #take(campaignId: string, periodMs: number): Promise<boolean> {
    const now = this.#now();
    const taken = await this.#db
      .updateTable('campaigns')
      .set({ refreshed_at: now })
      .where('id', '=', campaignId)
      .where((eb) => eb.or([eb('refreshed_at', 'is', null), eb('refreshed_at', '<=', new Date(now.getTime() - periodMs))]))
      .executeTakeFirst();
    return Number(taken.numUpdatedRows) > 0;
  }

  async #refresh(campaignId: string, staleMs: number): Promise<number> {
    const c = await this.#db.selectFrom('campaigns').selectAll().where('id', '=', campaignId).executeTakeFirst();
    if (!c) return 0;
    const perSecond = parseRate(c.settings.forgeRate) ?? 1;
    const limit = Math.max(1, Math.min(MAX_PER_PASS, Math.floor((perSecond * this.#everyMs) / 1000)));
    let q = this.#db.selectFrom('campaign_targets').selectAll().where('campaign_id', '=', c.id).where(openOnForge);
    if (staleMs > 0) q = q.where((eb) => eb.or([eb('refreshed_at', 'is', null), eb('refreshed_at', '<', new Date(this.#now().getTime() - staleMs))]));
    const targets = await q.orderBy(sql`refreshed_at asc nulls first`).orderBy('seq').limit(limit).execute();
    const forges = new ForgeCache(this.#db, this.#secrets, c.org_id, c.settings.forge);
    let read = 0;
    let freed = false;
    for (const t of targets) {
      if (this.#closing.signal.aborted) break;
      const cr = t.change_request!;
      try {
        const reviewer = await forges.reviewer(t);
        if (!reviewer) throw new BerthError('invalid', `its change request is a ${cr.kind.replace('_', ' ')}, but its project's forge settings now say plain git`);
        // The turn right before the forge is asked: the calls, not the reading of settings, keep the rate.
        await this.#pace(await forgeTurn(this.#db, c, this.#now()), this.#closing.signal).catch(() => {});
        const s = await reviewer.status(cr);
        const now = this.#now();
        await this.#db
          .updateTable('campaign_targets')
          .set({ pr_state: s.state, pr_checks: s.checks, pr_review: s.review, refreshed_at: now, updated_at: now, ...(s.draft !== cr.draft && { change_request: JSON.stringify({ ...cr, draft: s.draft }) }) })
          .where('id', '=', t.id)
          .execute();
        read++;
        if (s.state !== 'open') freed = true;
      } catch (err) {
        // Read again at the next pass, not at once; a used-up rate limit ends this campaign's pass.
        await this.#db.updateTable('campaign_targets').set({ refreshed_at: this.#now() }).where('id', '=', t.id).execute();
        this.#log.warn({ err, campaign: c.id, target: t.id, repo: t.repo }, 'campaigns: could not read a change request');
        if (err instanceof BerthError && err.kind === 'rate_limited') break;
      }
    }
    if (freed) this.#onFreed();
    return read;
  }

  /**
   * The repositories a GitHub search finds (`--org-query`), asked of the GitHub of the org's
   * projects: the oldest project whose forge is GitHub with a token names the host and the token.
   */
  async searchRepos(scope: Scope, query: string): Promise<string[]> {
    const projects = await this.#db.selectFrom('projects').select(['id', 'name', 'repo_url', 'settings']).where('org_id', '=', scope.orgId).where('archived_at', 'is', null).where('repo_url', 'is not', null).orderBy('created_at').execute();
    const found = projects.find((p) => {
      const forge = p.settings.forge ?? {};
      if (!forge.tokenSecret) return false;
      const at = parseRepoUrl(p.repo_url!);
      return at.kind === 'http' && (forge.kind ?? detectKind(at)) === 'github';
    });
    if (!found) throw conflict("--org-query asks the GitHub of the org's projects, and no project has a GitHub forge with a token: make one (`berth project create … --forge github --token-secret NAME`), or give the list of repositories");
    const location = parseRepoUrl(found.repo_url!) as Extract<ReturnType<typeof parseRepoUrl>, { kind: 'http' }>;
    const settings = found.settings.forge!;
    const token = await this.#secrets.forgeSecret(scope.orgId, found.id, settings.tokenSecret!);
    if (token === null) throw new BerthError('invalid', `project ${found.name}'s forge settings name secret '${settings.tokenSecret}', which does not exist: \`berth secret set ${settings.tokenSecret}\``);
    const { urls, total } = await searchGitHubRepositories({ apiUrl: githubApiUrl(location, settings), token, query });
    if (!urls.length) throw conflict(`the GitHub search "${query}" (on ${location.host}, with project ${found.name}'s token) found no repository${total ? ' that is not archived' : ''}: try it on the GitHub search page first`);
    this.#log.info({ org: scope.orgId, query, found: urls.length, total }, 'campaigns: repositories from a GitHub search');
    return urls;
  }

  /**
   * Approves every succeeded target's change: a plain-git branch is merged into its base (as
   * `berth task approve`), a GitHub/GitLab draft is marked ready for review. With onlyGreen,
   * only changes whose last task passed its checks and whose forge checks are not failing;
   * the others are reported in `skipped` with the reason. Each approval is audited.
   */
  async approve(scope: Scope, ref: string, body: z.output<typeof ApproveBody>): Promise<ApproveResult> {
    const c = await this.#db.selectFrom('campaigns').selectAll().where('org_id', '=', scope.orgId).where((eb) => eb.or([eb('id', '=', ref), eb('name', '=', ref)])).executeTakeFirst();
    if (!c) throw notFound(`no campaign '${ref}': \`berth campaign list\` shows them`);
    const targets = await this.#db
      .selectFrom('campaign_targets')
      .leftJoin('tasks', 'tasks.id', 'campaign_targets.task_id')
      .selectAll('campaign_targets')
      .select(['tasks.checks_passed as task_checks'])
      .where('campaign_targets.campaign_id', '=', c.id)
      .where('campaign_targets.state', '=', 'succeeded')
      .where('campaign_targets.change_request', 'is not', null)
      .orderBy('campaign_targets.seq')
      .execute();
    const result: ApproveResult = { approved: [], skipped: [] };
    const forges = new ForgeCache(this.#db, this.#secrets, c.org_id, c.settings.forge);
    let rateLimited: string | null = null;
    for (const t of targets) {
      const cr = t.change_request!;
      const skip = (reason: string) => void result.skipped.push({ repo: t.repo, reason });
      if (rateLimited) {
        skip(rateLimited);
        continue;
      }
      if (cr.mergedSha || t.pr_state === 'merged') {
        skip(cr.mergedSha ? `already merged (${cr.mergedSha.slice(0, 12)})` : 'already merged on the forge');
        continue;
      }
      if (t.pr_state === 'closed') {
        skip('its pull request was closed without merging');
        continue;
      }
      const red = t.task_checks === false ? 'its checks failed' : t.task_checks === null ? 'no checks ran for it (the campaign has no --check)' : t.pr_checks === 'failing' ? "the forge's checks fail" : null;
      if (body.onlyGreen && red) {
        skip(`not green: ${red}`);
        continue;
      }
      try {
        if (cr.kind === 'berth') await this.#merge(scope, c, t, cr, red);
        else {
          const reviewer = await forges.reviewer(t);
          if (!reviewer) throw new BerthError('invalid', `its change request is a ${cr.kind.replace('_', ' ')}, but its project's forge settings say plain git`);
          // At the campaign's forge rate, as its starts and reads are.
          await this.#pace(await forgeTurn(this.#db, c, this.#now()), this.#closing.signal);
          const done = await reviewer.markReady(cr);
          const now = this.#now();
          await this.#db.updateTable('campaign_targets').set({ change_request: JSON.stringify({ ...cr, draft: false }), updated_at: now }).where('id', '=', t.id).execute();
          if (done === 'already') {
            skip(`already ready for review (not a draft): left as it is${cr.url ? ` (${cr.url})` : ''}`);
            continue;
          }
          await this.#audit.append({ orgId: c.org_id, actor: scope.actor, action: 'task.approve', target: t.task_id ?? t.first_task_id, details: { campaign: c.name, repo: t.repo, how: 'ready_for_review', url: cr.url, ...(red && { overridden: red }) } });
          result.approved.push({ repo: t.repo, how: 'ready_for_review' });
          continue;
        }
        result.approved.push({ repo: t.repo, how: 'merged' });
      } catch (err) {
        if (!(err instanceof BerthError) || err.kind === 'internal') this.#log.error({ err, campaign: c.id, target: t.id }, 'campaigns: could not approve a change');
        const reason = err instanceof BerthError && err.kind !== 'internal' ? err.message : 'an internal error (see the server log)';
        skip(reason);
        if (err instanceof BerthError && err.kind === 'rate_limited') rateLimited = `not tried: ${err.message}`;
      }
    }
    return result;
  }

  /** A plain-git change merged by TaskService.approve: the task that opened the branch holds its change request. */
  async #merge(scope: Scope, c: CampaignRow, t: CampaignTargetRow, cr: ChangeRequest, red: string | null): Promise<void> {
    const taskId = t.first_task_id ?? t.task_id;
    if (!taskId) throw new BerthError('conflict', 'no task of it holds the change');
    // Green or not was decided above from its last task (a rerun's commits are on the same branch).
    const { task } = await this.#tasks.approve(scope, taskId, { force: true });
    const mergedSha = task.changeRequest?.mergedSha;
    const now = this.#now();
    await this.#db
      .updateTable('campaign_targets')
      .set({ change_request: JSON.stringify({ ...cr, ...(mergedSha && { mergedSha }) }), pr_state: 'merged', refreshed_at: now, updated_at: now })
      .where('id', '=', t.id)
      .execute();
    await this.#audit.append({ orgId: c.org_id, actor: scope.actor, action: 'task.approve', target: taskId, details: { campaign: c.name, repo: t.repo, how: 'merged', branch: task.branch, mergedSha: mergedSha ?? null, ...(red && { overridden: red, forced: true }) } });
    this.#onFreed();
  }
}

/** Each project's forge settings and secrets, read once per pass. */
class ForgeCache {
  readonly #db: Db;
  readonly #secrets: SecretService;
  readonly #orgId: string;
  /** The campaign's forge for repositories without a project (their transient project's). */
  readonly #oneOff: ForgeSettings | undefined;
  readonly #projects = new Map<string, Promise<{ settings: ForgeSettings; auth: ForgeAuth }>>();

  constructor(db: Db, secrets: SecretService, orgId: string, oneOff: ForgeSettings | undefined) {
    this.#db = db;
    this.#secrets = secrets;
    this.#orgId = orgId;
    this.#oneOff = oneOff;
  }

  async reviewer(t: CampaignTargetRow): Promise<ChangeRequestReviewer | null> {
    const key = t.project_id ?? '';
    let p = this.#projects.get(key);
    if (!p) {
      p = this.#load(t.project_id);
      this.#projects.set(key, p);
    }
    const { settings, auth } = await p;
    return reviewerFor(t.repo, settings, auth);
  }

  async #load(projectId: string | null): Promise<{ settings: ForgeSettings; auth: ForgeAuth }> {
    const project = projectId ? await this.#db.selectFrom('projects').select('settings').where('id', '=', projectId).where('org_id', '=', this.#orgId).executeTakeFirst() : undefined;
    const settings: ForgeSettings = project?.settings.forge ?? (projectId ? undefined : this.#oneOff) ?? {};
    const secret = async (name: string) => {
      const value = await this.#secrets.forgeSecret(this.#orgId, projectId, name);
      if (value === null) throw new BerthError('invalid', `${projectId ? "the project's forge settings name" : "the campaign's forge settings name"} secret '${name}', which does not exist: \`berth secret set ${name}\``);
      return value;
    };
    const auth: ForgeAuth = settings.app ? { app: { appId: settings.app.appId, installationId: settings.app.installationId, privateKey: await secret(settings.app.privateKeySecret) } } : settings.tokenSecret ? { token: await secret(settings.tokenSecret) } : null;
    return { settings, auth };
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
