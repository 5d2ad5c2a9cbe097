// A GitHub delivery, after GitHub has its answer: what it asks (events.ts), the project whose
// repository it is, whether the sender may (write access, asked of GitHub), and then a task on
// the issue, the continuation of the task whose pull request was reviewed, or a comment that
// says why not. Handling a delivery again (after a crash) finds its task already made.
import { BerthError } from '../../../shared/errors.ts';
import type { ProjectRow } from '../../db/index.ts';
import { refusalOf, type DeliveryHandler, type DeliveryOutcome, type PendingDelivery, type TriggerDeps } from '../index.ts';
import type { GitHubApps } from './apps.ts';
import type { RepoApi } from './client.ts';
import { askOf, isKnownEvent, readPayload, type Ask, type Payload } from './events.ts';
import { clip, issueGoal } from './goal.ts';
import { prebuildOnPush } from '../push.ts';
import type { WriteAccess } from './permissions.ts';
import type { GitHubReplyTarget } from './replier.ts';
import type { GitHubAppConfig } from './settings.ts';

/** A review's instruction is added to the goal it continues; goals are at most 64 KiB. */
const MAX_INSTRUCTION_BYTES = 16 * 1024;

type IssueAsk = Extract<Ask, { kind: 'issue' }>;
type ReviewAsk = Extract<Ask, { kind: 'review' }>;

export function githubDeliveries(deps: TriggerDeps, apps: GitHubApps, access: WriteAccess): DeliveryHandler {
  const handle = async (d: PendingDelivery): Promise<DeliveryOutcome> => {
    const config = await apps.current();
    if (!config) return { outcome: 'ignored: the GitHub App is no longer set up' };
    if (d.event === 'push') return prebuildOnPush(deps, 'github', d.payload);
    if (!isKnownEvent(d.event)) return { outcome: `ignored: Berth does not act on ${d.event} events` };
    const read = readPayload(d.event, d.payload);
    if (read.error !== undefined) return { outcome: `ignored: ${read.error}` };
    const payload = read.payload as Payload;
    const botLogin = await apps.botLogin(config, d.event === 'issues' && payload.action === 'assigned');
    const ask = askOf(d.event, payload, { appId: config.appId, botLogin, label: config.label, command: config.command, allowedBots: config.allowedBots });
    if (ask.kind === 'ignore') return { outcome: `ignored: ${ask.why}` };
    if (!ask.origin.installationId) return { outcome: 'ignored: the payload names no installation: only the GitHub App\'s own webhook starts tasks' };
    const api = apps.client(config).repo(ask.origin.installationId, ask.origin.owner, ask.origin.repo);
    const work = new Delivery(deps, config, access, api, d, botLogin);
    return ask.kind === 'issue' ? work.issue(ask) : work.review(ask);
  };
  return async (d) => {
    const outcome = await handle(d);
    // What came of it, for whoever reads the log after GitHub's Recent Deliveries said 202.
    deps.logger.info({ delivery: d.deliveryId, event: d.event, outcome: outcome.outcome, task: outcome.taskId ?? undefined }, 'github: delivery handled');
    return outcome;
  };
}

class Delivery {
  readonly #deps: TriggerDeps;
  readonly #config: GitHubAppConfig;
  readonly #access: WriteAccess;
  readonly #api: RepoApi;
  readonly #d: PendingDelivery;
  readonly #botLogin: string | null;

  constructor(deps: TriggerDeps, config: GitHubAppConfig, access: WriteAccess, api: RepoApi, d: PendingDelivery, botLogin: string | null) {
    this.#deps = deps;
    this.#config = config;
    this.#access = access;
    this.#api = api;
    this.#d = d;
    this.#botLogin = botLogin;
  }

  /** Start a task on an issue, or on a pull request: continuing Berth's own if it opened it. */
  async issue(ask: IssueAsk): Promise<DeliveryOutcome> {
    const projects = await this.#deps.triggered.projectsFor(ask.origin.urls);
    if (ask.pullRequest) {
      const previous = await this.#deps.triggered.taskForChangeRequest(projects.map((p) => p.id), ask.number, 'pull_request');
      if (previous) return this.#continue({ kind: 'review', origin: ask.origin, number: ask.number, htmlUrl: ask.htmlUrl, instruction: ask.instruction, why: 'command' }, previous);
    }
    if (!(await this.#mayStart(ask))) return this.#refuse(ask, projects);
    if (projects.length === 0) {
      await this.#api.comment(
        ask.number,
        `No Berth project uses ${ask.origin.fullName}, so Berth cannot work on this yet. An admin of a Berth org sets one up with \`berth project create NAME --repo ${ask.origin.urls[0] ?? ask.origin.fullName}\` (with the GitHub App or a token as its forge credentials), then ${this.#howToAsk()} again.`,
      );
      return { outcome: `ignored: no Berth project uses ${ask.origin.fullName}` };
    }
    if (projects.length > 1) {
      await this.#api.comment(ask.number, `${projects.length} Berth projects use ${ask.origin.fullName}, so Berth cannot tell which one should work on this. Ask your Berth administrators to keep one project for this repository, then ${this.#howToAsk()} again.`);
      return { outcome: `ignored: ${projects.length} projects use ${ask.origin.fullName}` };
    }
    const project = projects[0]!;
    const issue = await this.#api.issue(ask.number);
    const comments = (await this.#api.comments(ask.number, issue.commentCount)).filter((c) => c.appId !== Number(this.#config.appId) && c.user.toLowerCase() !== this.#botLogin);
    const goal = issueGoal({ instruction: clip(ask.instruction, MAX_INSTRUCTION_BYTES), fullName: ask.origin.fullName, issue, comments });
    const source = this.#source(ask.origin, ask.number, ask.why);
    try {
      const task = await this.#deps.triggered.start({
        project,
        goal,
        trigger: 'github',
        triggeredBy: `github:${ask.origin.sender}`,
        key: `github:${this.#d.deliveryId}`,
        actor: `github:${ask.origin.sender}`,
        replyTo: this.#target(ask.number, ask.pullRequest),
        source,
      });
      return { outcome: `task ${task.id} queued`, orgId: project.org_id, taskId: task.id };
    } catch (err) {
      // The org or project refused it (no model set up, an archived project): said where it was asked.
      const refusal = refusalOf(err);
      if (refusal === null) throw err;
      await this.#api.comment(ask.number, `@${ask.origin.sender} Berth could not start a task: ${refusal}`);
      await this.#deps.triggered.refused(project.org_id, `github:${ask.origin.sender}`, refusal, source);
      return { outcome: `refused: ${refusal}`, orgId: project.org_id };
    }
  }

  /** A review or command on a pull request: continues the task that opened it, if Berth did. */
  async review(ask: ReviewAsk): Promise<DeliveryOutcome> {
    const projects = await this.#deps.triggered.projectsFor(ask.origin.urls);
    const previous = await this.#deps.triggered.taskForChangeRequest(projects.map((p) => p.id), ask.number, 'pull_request');
    if (!previous) return { outcome: `ignored: ${ask.origin.fullName}#${ask.number} is not a pull request a Berth task opened` };
    return this.#continue(ask, previous);
  }

  async #continue(ask: ReviewAsk, previous: { id: string; org_id: string; reply_to: unknown }): Promise<DeliveryOutcome> {
    if (!(await this.#mayStart(ask))) return this.#refuse(ask, [{ org_id: previous.org_id }]);
    const instruction = clip(await this.#reviewText(ask), MAX_INSTRUCTION_BYTES) || `Address the review on pull request #${ask.number} (${ask.htmlUrl}).`;
    try {
      const task = await this.#deps.triggered.continueTask({
        previous: previous.id,
        instruction,
        trigger: 'github',
        triggeredBy: `github:${ask.origin.sender}`,
        key: `github:${this.#d.deliveryId}`,
        actor: `github:${ask.origin.sender}`,
        // The comment the task it continues keeps, if it has one; else one on the pull request.
        replyTo: previous.reply_to ? undefined : this.#target(ask.number, true),
        source: this.#source(ask.origin, ask.number, ask.why),
      });
      return { outcome: `task ${task.id} queued (continues ${previous.id})`, orgId: previous.org_id, taskId: task.id };
    } catch (e) {
      // Still working, or nothing to add commits to: said on the pull request, nothing started.
      if (!(e instanceof BerthError) || !['conflict', 'not_found', 'invalid'].includes(e.kind)) throw e;
      await this.#api.comment(ask.number, `@${ask.origin.sender} ${e.message}`);
      return { outcome: `ignored: ${e.message}`, orgId: previous.org_id };
    }
  }

  /** What a review asks: its body, then its line comments, each with its place in the diff. */
  async #reviewText(ask: ReviewAsk): Promise<string> {
    if (!ask.reviewId) return ask.instruction.trim();
    const comments = await this.#api.reviewComments(ask.number, ask.reviewId);
    const lines = comments.map((c) => `- \`${c.path}\`${c.line ? ` line ${c.line}` : ''} (@${c.user}): ${c.body.trim()}`);
    return [ask.instruction.trim() || 'The review asks for changes.', ...(lines.length ? ['', 'Review comments (from the pull request, written by its reviewers):', ...lines] : [])].join('\n').trim();
  }

  /** Write access, asked of GitHub (cached a minute); an allowed bot is taken at its word. */
  async #mayStart(ask: IssueAsk | ReviewAsk): Promise<boolean> {
    if (this.#config.allowedBots.has(ask.origin.sender.toLowerCase())) return true;
    return this.#access.canWrite(this.#api, this.#config.apiUrl, ask.origin.sender);
  }

  async #refuse(ask: IssueAsk | ReviewAsk, projects: readonly Pick<ProjectRow, 'org_id'>[]): Promise<DeliveryOutcome> {
    const reason = `${ask.origin.sender} has no write access to ${ask.origin.fullName}`;
    await this.#api.comment(ask.number, `Sorry @${ask.origin.sender}, only people with write access to ${ask.origin.fullName} can start Berth tasks here. A maintainer can ${this.#howToAsk()} for you.`);
    // On record in each org whose project uses the repository (none: nobody to tell).
    const orgs = [...new Set(projects.map((p) => p.org_id))];
    for (const orgId of orgs) await this.#deps.triggered.refused(orgId, `github:${ask.origin.sender}`, reason, this.#source(ask.origin, ask.number, ask.why));
    return { outcome: `refused: ${reason}`, orgId: orgs.length === 1 ? orgs[0] : null };
  }

  #howToAsk(): string {
    return `label the issue \`${this.#config.label}\` or comment \`${this.#config.command} <what to do>\``;
  }

  #target(issue: number, pullRequest: boolean): GitHubReplyTarget {
    return { kind: 'github', apiUrl: this.#config.apiUrl, owner: this.#api.owner, repo: this.#api.repo, issue, pullRequest, installationId: this.#api.installationId };
  }

  #source(origin: IssueAsk['origin'], issue: number, why: string): Record<string, unknown> {
    return { delivery: this.#d.deliveryId, event: this.#d.event, sender: origin.sender, issue, repository: origin.fullName, why };
  }
}
