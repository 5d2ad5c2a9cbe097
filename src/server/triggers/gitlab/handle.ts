// A GitLab delivery, after GitLab has its answer: what it asks (ask.ts), which Berth project
// the repository is, whether the sender may (Developer or more), then a task, or a note on
// the issue saying why not. A note on a merge request the agent opened continues that task
// on its branch. Everything said back goes on the issue or merge request it came from. A push
// queues the prebuild of the projects it pushed the default branch of (../push.ts), as GitHub's does.
import { z } from 'zod';
import type { ProjectRow } from '../../db/index.ts';
import { refusalOf, type DeliveryHandler, type TriggerDeps } from '../index.ts';
import { prebuildOnPush } from '../push.ts';
import { AccessLevels, DEVELOPER } from './access.ts';
import { GitLabApi } from './api.ts';
import { askOf, type Ask } from './ask.ts';
import { issueGoal } from './goal.ts';
import { GitLabHook } from './payloads.ts';
import type { GitLabReplyTarget } from './replier.ts';
import { gitlabConfig, type GitLabConfig } from './settings.ts';

/** A delivery as webhook.ts put it on record: the checked event and its ids. */
const Delivery = z.intersection(GitLabHook, z.object({ delivery: z.object({ eventUuid: z.string(), idempotencyKey: z.string().nullable() }) }));

/** The bot user is asked of GitLab once in this long (its notes start nothing). */
const BOT_KEEP_MS = 10 * 60_000;

export function gitlabDeliveries(deps: TriggerDeps): DeliveryHandler {
  const access = new AccessLevels({ now: deps.now });
  let bot: { key: string; at: number; user: { id: number; username: string } } | null = null;

  async function botOf(api: GitLabApi, config: GitLabConfig): Promise<{ id: number; username: string }> {
    const key = `${config.apiUrl} ${config.token}`;
    if (bot && bot.key === key && Date.now() - bot.at < BOT_KEEP_MS) return bot.user;
    const user = await api.currentUser();
    bot = { key, at: Date.now(), user };
    return user;
  }

  return async (d) => {
    const parsed = Delivery.safeParse(d.payload);
    if (!parsed.success) return { outcome: 'ignored: not an event Berth reads' };
    const delivered = parsed.data;
    const integration = await deps.integrations.get('gitlab');
    const config = integration && gitlabConfig(integration.settings, integration.secrets);
    if (!config) return { outcome: 'ignored: the GitLab integration was removed' };
    if (delivered.object_kind === 'push') return prebuildOnPush(deps, 'gitlab', delivered);
    // Named again, narrowed to an issue or a note, for the functions below.
    const hook = delivered;

    const asked = askOf(hook, config);
    if (typeof asked === 'string') return { outcome: `ignored: ${asked}` };
    // Named again, narrowed, for the functions below.
    const ask: Ask = asked;
    const settings: GitLabConfig = config;
    const api = new GitLabApi(config);
    const me = await botOf(api, config);
    if (hook.user.id === me.id || hook.user.username.toLowerCase() === config.botUsername?.toLowerCase()) return { outcome: 'ignored: Berth\'s own' };

    const gl = hook.project;
    const sender = hook.user.username;
    const actor = `gitlab:${sender}`;
    const say = (body: string) => api.createNote(gl.id, ask.on, body);
    const source = {
      delivery: hook.delivery.eventUuid,
      gitlab: config.url,
      repository: gl.path_with_namespace,
      ...(ask.on.type === 'issue' ? { issue: ask.on.iid } : { mergeRequest: ask.on.iid }),
      ...(ask.noteId ? { note: ask.noteId } : {}),
      sender,
      why: ask.why,
    };

    const projects = await deps.triggered.projectsFor([gl.git_http_url ?? '', gl.web_url, gl.git_ssh_url ?? '']);
    if (projects.length === 0) {
      await say(`@${sender} Berth has no project for this repository, so it cannot start a task here. A Berth administrator can add one: \`berth project create NAME --repo ${gl.git_http_url ?? gl.web_url}\`.`);
      return { outcome: `ignored: no project uses ${gl.path_with_namespace}` };
    }
    if (projects.length > 1 && ask.on.type === 'issue') {
      // Never which ones: they may belong to other orgs.
      await say(`@${sender} More than one Berth project uses this repository, so Berth cannot tell which one the task belongs to. A Berth administrator can archive the ones not in use.`);
      return { outcome: `ignored: ${projects.length} projects use ${gl.path_with_namespace}` };
    }

    if (ask.on.type === 'merge_request') return continueOn(ask as Extract<Ask, { on: { type: 'merge_request' } }>, projects);

    const project = projects[0]!;
    if (!(await mayStart(project))) return { outcome: `refused: @${sender} has less than the Developer role on ${gl.path_with_namespace}`, orgId: project.org_id };

    const [issue, notes] = await Promise.all([api.issue(gl.id, ask.on.iid), api.notes(gl.id, ask.on)]);
    const goal = issueGoal({ path: gl.path_with_namespace, issue, notes, instruction: ask.instruction, askedBy: sender, skipNote: (n) => n.id === ask.noteId || n.author.id === me.id });
    const replyTo: GitLabReplyTarget = { kind: 'gitlab', apiUrl: config.apiUrl, projectId: gl.id, path: gl.path_with_namespace, issueIid: ask.on.iid };
    try {
      const task = await deps.triggered.start({ project, goal, trigger: 'gitlab', triggeredBy: actor, key: `gitlab:${hook.delivery.eventUuid}`, actor, replyTo, source });
      return { outcome: `task ${task.id} queued`, orgId: project.org_id, taskId: task.id };
    } catch (err) {
      return cannotStart(err, project);
    }

    /** Whether the sender has the Developer role or more; if not, told so politely and on record. */
    async function mayStart(p: ProjectRow): Promise<boolean> {
      if ((await access.level(api, gl.id, hook.user.id)) >= DEVELOPER) return true;
      await deps.triggered.refused(p.org_id, actor, 'the GitLab user has less than the Developer role on the project', source);
      await say(`Thanks @${sender}! Only members with the Developer role or higher on this project can ask Berth to work on it. A maintainer can ${ask.on.type === 'issue' ? `add the \`${settings.label}\` label or comment \`${settings.command} …\`` : `comment \`${settings.command} …\``} instead.`);
      return false;
    }

    /** A `/berth …` note on a merge request: continues the task that opened it. */
    async function continueOn(a: Extract<Ask, { on: { type: 'merge_request' } }>, candidates: ProjectRow[]) {
      const previous = await deps.triggered.taskForChangeRequest(candidates.map((p) => p.id), a.on.iid, 'merge_request');
      if (!previous) {
        await say(`@${sender} Berth did not open this merge request, so there is no task to continue. To start one, comment \`${settings.command} …\` on an issue.`);
        return { outcome: `ignored: !${a.on.iid} is no merge request a task of ${gl.path_with_namespace} opened` };
      }
      const p = candidates.find((c) => c.id === previous.project_id)!;
      if (!(await mayStart(p))) return { outcome: `refused: @${sender} has less than the Developer role on ${gl.path_with_namespace}`, orgId: p.org_id };
      if (!a.instruction) {
        await say(`@${sender} Say what to change: \`${settings.command} <what to change>\`.`);
        return { outcome: 'ignored: a command without an instruction', orgId: p.org_id };
      }
      // Told where the first task's progress is, if that was here; else on this merge request.
      const here: GitLabReplyTarget = { kind: 'gitlab', apiUrl: settings.apiUrl, projectId: gl.id, path: gl.path_with_namespace, mergeRequestIid: a.on.iid };
      try {
        const task = await deps.triggered.continueTask({ previous: previous.id, instruction: a.instruction, trigger: 'gitlab', triggeredBy: actor, key: `gitlab:${hook.delivery.eventUuid}`, actor, replyTo: previous.reply_to?.kind === 'gitlab' ? undefined : here, source });
        return { outcome: `task ${task.id} queued (continues ${previous.id})`, orgId: p.org_id, taskId: task.id };
      } catch (err) {
        return cannotStart(err, p);
      }
    }

    /** A task Berth refused to make (a conflict, a bad setting): said on GitLab in Berth's words. */
    async function cannotStart(err: unknown, p: ProjectRow) {
      const refusal = refusalOf(err);
      if (refusal === null) throw err;
      await say(`@${sender} Berth could not start a task: ${refusal}`);
      return { outcome: `refused: ${refusal}`, orgId: p.org_id };
    }
  };
}
