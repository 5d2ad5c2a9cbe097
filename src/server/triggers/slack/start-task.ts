// A slash command or a mention, once on record: who asked (the Slack user's confirmed email
// → a Berth user → a membership of the org), which project, and the task, or a private
// message to the asker saying what is missing and how to get it.
import { createHash } from 'node:crypto';
import type { WebClient } from '@slack/web-api';
import { atLeast } from '../../authz.ts';
import type { ProjectRow, Role } from '../../db/index.ts';
import type { DeliveryOutcome, PendingDelivery } from '../deliveries.ts';
import { refusalOf, type TriggerDeps } from '../index.ts';
import { slackApp, slackClient, slackError, type SlackApp } from './client.ts';
import type { SlackRequest } from './payloads.ts';
import { askedFor, plainText, USAGE } from './request-text.ts';

/** The Berth user a Slack user is, or why none is. */
type Person = { userId: string; email: string; memberships: { orgId: string; orgName: string; role: Role }[] } | { refused: string; email: string | null; silent?: boolean };

/** Who the bot is (auth.test), kept a while per token: mentions of it are taken out of the goal. */
const BOT_CACHE_MS = 10 * 60_000;

export class SlackTaskStarter {
  readonly #deps: TriggerDeps;
  readonly #bots = new Map<string, { at: number; team: string; user: string }>();

  constructor(deps: TriggerDeps) {
    this.#deps = deps;
  }

  async handle(d: PendingDelivery): Promise<DeliveryOutcome> {
    const req = d.payload as SlackRequest;
    const app = await slackApp(this.#deps.integrations);
    if (!app) return { outcome: 'ignored: the Slack app is no longer set up' };
    const slack = slackClient(app, this.#deps.logger);
    const bot = await this.#bot(app, slack);
    if (bot.team !== req.team) return { outcome: `ignored: workspace ${req.team} is not the Slack app's (${bot.team})` };

    const asked = askedFor(plainText(req.text, bot.user));
    if (!asked.goal) {
      await this.#tell(slack, req, `Tell me what to do. ${USAGE}`);
      return { outcome: 'ignored: no goal' };
    }
    const source = { team: req.team, user: req.user, channel: req.channel, via: req.kind === 'command' ? 'slash command' : 'mention' };
    const slackActor = `slack:${req.team}/${req.user}`;
    const person = await this.#person(slack, req.user, app.settings.org);
    const org = await this.#org(app, person);

    if ('refused' in person || !org.id) {
      const reason = 'refused' in person ? person.refused : org.problem!;
      const auditOrg = org.id ?? (await this.#onlyOrg());
      if (auditOrg) await this.#deps.triggered.refused(auditOrg, 'refused' in person ? slackActor : `user:${person.userId}`, reason, { ...source, email: person.email });
      if (!('refused' in person && person.silent)) await this.#tell(slack, req, reason);
      return { outcome: `ignored: ${reason}`.slice(0, 500), orgId: auditOrg };
    }
    const role = person.memberships.find((m) => m.orgId === org.id)?.role;
    if (!role || !atLeast(role, 'member')) {
      const reason = `${person.email} is ${role ? `only a ${role}` : 'not a member'} of the Berth org ${org.name}, and starting a task takes a member. Ask one of its admins to run \`berth member add ${person.email} --role member --org ${org.name}\`.`;
      await this.#deps.triggered.refused(org.id, `user:${person.userId}`, reason, { ...source, email: person.email });
      await this.#tell(slack, req, reason);
      return { outcome: `ignored: ${person.email} has no membership of ${org.name} that may start tasks`, orgId: org.id };
    }

    const picked = await this.#project(org.id, org.name, asked);
    if ('problem' in picked) {
      await this.#tell(slack, req, picked.problem);
      return { outcome: `ignored: ${picked.problem}`.slice(0, 500), orgId: org.id };
    }
    try {
      const task = await this.#deps.triggered.start({
        project: picked.project,
        goal: picked.goal,
        trigger: 'slack',
        triggeredBy: slackActor,
        key: `slack:${req.requestId}`,
        // The Berth user is who asked (their rights, their task); the audit entry names the Slack user too.
        actor: `user:${person.userId}`,
        ownerId: person.userId,
        replyTo: { kind: 'slack', team: req.team, channel: req.channel, threadTs: req.threadTs, user: req.user },
        source,
      });
      return { outcome: `task ${task.id} queued`, orgId: org.id, taskId: task.id };
    } catch (err) {
      const refusal = refusalOf(err);
      if (refusal === null) throw err;
      await this.#tell(slack, req, `I could not start that task: ${refusal}`);
      return { outcome: `refused: ${refusal}`.slice(0, 500), orgId: org.id };
    }
  }

  /** Said to the asker alone (in the mention's thread): refusals and what to do about them. */
  async #tell(slack: WebClient, req: SlackRequest, text: string): Promise<void> {
    try {
      await slack.chat.postEphemeral({ channel: req.channel, user: req.user, text, ...(req.threadTs ? { thread_ts: req.threadTs } : {}) });
    } catch (err) {
      // The outcome is on record either way; a message that cannot be posted (the app not in the channel) is not worth a retry.
      this.#deps.logger.warn({ error: slackError(err), channel: req.channel }, 'slack: could not tell a user why nothing was started');
    }
  }

  async #bot(app: SlackApp, slack: WebClient): Promise<{ team: string; user: string }> {
    const key = createHash('sha256').update(app.secrets.botToken).update(app.settings.apiUrl ?? '').digest('hex');
    const hit = this.#bots.get(key);
    if (hit && Date.now() - hit.at < BOT_CACHE_MS) return hit;
    const me = await slack.auth.test();
    const bot = { at: Date.now(), team: me.team_id ?? '', user: me.user_id ?? '' };
    this.#bots.set(key, bot);
    return bot;
  }

  /** The Berth user whose email is the Slack user's, confirmed by Slack; a bot or a deactivated account is nobody. */
  async #person(slack: WebClient, slackUser: string, orgName: string | undefined): Promise<Person> {
    let user;
    try {
      user = (await slack.users.info({ user: slackUser })).user;
    } catch (err) {
      const error = slackError(err);
      const scopes = error === 'missing_scope' ? ' (the Slack app needs the users:read and users:read.email scopes: tell your Berth administrator)' : '';
      return { refused: `I could not read your Slack profile (${error})${scopes}, so I cannot tell who you are in Berth.`, email: null };
    }
    if (!user || user.is_bot || user.is_app_user || user.deleted) return { refused: 'bots and deactivated accounts cannot start tasks', email: null, silent: true };
    const email = user.profile?.email?.toLowerCase() ?? null;
    if (!email) return { refused: 'Your Slack profile shows me no email address (the Slack app needs the users:read.email scope), so I cannot tell who you are in Berth.', email: null };
    if (user.is_email_confirmed !== true) return { refused: `Your Slack email ${email} is not confirmed: confirm it in Slack, then ask again.`, email };
    const found = await this.#deps.db.selectFrom('users').select('id').where('email', '=', email).where('disabled_at', 'is', null).executeTakeFirst();
    if (!found) {
      const org = orgName ? `the Berth org ${orgName}` : 'your Berth org';
      return { refused: `No Berth user has your email ${email}. Ask an admin of ${org} to add you: \`berth member add ${email} --role member${orgName ? ` --org ${orgName}` : ''}\`.`, email };
    }
    const memberships = await this.#deps.db
      .selectFrom('memberships')
      .innerJoin('orgs', 'orgs.id', 'memberships.org_id')
      .select(['memberships.org_id as orgId', 'orgs.name as orgName', 'memberships.role'])
      .where('memberships.user_id', '=', found.id)
      .execute();
    return { userId: found.id, email, memberships };
  }

  /** The org Slack tasks go to: the app's (an instance setting), else the asker's only one. */
  async #org(app: SlackApp, person: Person): Promise<{ id: string | null; name: string; problem?: string }> {
    if (app.settings.org) {
      const row = await this.#deps.db.selectFrom('orgs').select(['id', 'name']).where('name', '=', app.settings.org).executeTakeFirst();
      if (row) return row;
      this.#deps.logger.warn({ org: app.settings.org }, 'slack: the Slack app names an org that does not exist: `berth integration slack --org NAME` sets another');
      return { id: null, name: app.settings.org, problem: `The Berth org ${app.settings.org} that this Slack app starts tasks in does not exist: tell your Berth administrator.` };
    }
    if ('refused' in person) return { id: null, name: '' };
    const usable = person.memberships.filter((m) => atLeast(m.role, 'member'));
    if (usable.length === 1) return { id: usable[0]!.orgId, name: usable[0]!.orgName };
    // Only a viewer somewhere: that org, where the membership check says what is missing.
    if (!usable.length && person.memberships.length) return { id: person.memberships[0]!.orgId, name: person.memberships[0]!.orgName };
    if (!person.memberships.length) return { id: null, name: '', problem: `${person.email} is a Berth user but a member of no org. Ask an org admin to add you: \`berth member add ${person.email} --role member --org ORG\`.` };
    const names = usable.map((m) => m.orgName).join(', ');
    return { id: null, name: '', problem: `You can start tasks in several Berth orgs (${names}) and this Slack app names none: ask your Berth administrator to choose one with \`berth integration slack --org NAME\`.` };
  }

  /** Where a refusal is audited when no org was chosen: the instance's only org, if it has one. */
  async #onlyOrg(): Promise<string | null> {
    const rows = await this.#deps.db.selectFrom('orgs').select('id').limit(2).execute();
    return rows.length === 1 ? rows[0]!.id : null;
  }

  async #project(orgId: string, orgName: string, asked: ReturnType<typeof askedFor>): Promise<{ project: ProjectRow; goal: string } | { problem: string }> {
    const projects = await this.#deps.db.selectFrom('projects').selectAll().where('org_id', '=', orgId).where('archived_at', 'is', null).orderBy('name').execute();
    const named = asked.named && projects.find((p) => p.name === asked.named!.project);
    if (named) return { project: named, goal: asked.named!.goal };
    if (projects.length === 1) return { project: projects[0]!, goal: asked.goal };
    if (!projects.length) return { problem: `The Berth org ${orgName} has no project yet: an admin makes one with \`berth project create NAME --repo URL\`.` };
    const list = projects.slice(0, 20).map((p) => `\`${p.name}\``).join(', ');
    const which = asked.named ? `There is no project \`${asked.named.project}\` in ${orgName}` : `${orgName} has ${projects.length} projects`;
    return { problem: `${which}: say which, as in \`/berth <goal> in <project>\`. Projects: ${list}${projects.length > 20 ? ', …' : ''}.` };
  }
}
