// A push to a project's default branch (GitHub or GitLab) queues the project's prebuild, so
// the next tasks start from the new head. Pushes start no task. A project may turn it off
// (settings.prebuild.onPush false); a branch deleted by the push queues nothing.
import type { DeliveryOutcome, TriggerDeps } from './index.ts';
import { prebuildSettingsOf } from '../prebuilds/settings.ts';

export interface PushSeen {
  ref: string;
  deleted?: boolean | undefined;
  /** The URLs a project may have been given for the repository. */
  urls: string[];
  fullName: string;
}

export async function prebuildOnPush(deps: TriggerDeps, source: 'github' | 'gitlab', raw: unknown): Promise<DeliveryOutcome> {
  const push = pushOf(source, raw);
  if (!push) return { outcome: `ignored: not a ${source} push payload` };
  if (!deps.prebuilds) return { outcome: 'ignored: this control plane makes no prebuilds' };
  if (push.deleted) return { outcome: `ignored: ${push.ref} was deleted` };
  const projects = (await deps.triggered.projectsFor(push.urls)).filter((p) => push.ref === `refs/heads/${p.default_branch}` && prebuildSettingsOf(p.settings).onPush);
  if (!projects.length) return { outcome: `ignored: no project of ${push.fullName} prebuilds on a push to ${push.ref.replace(/^refs\/heads\//, '')}` };
  const queued: string[] = [];
  for (const p of projects) queued.push((await deps.prebuilds.queueFor(p, 'push', source)).id);
  deps.logger.info({ source, repository: push.fullName, prebuilds: queued }, 'push: prebuilds queued');
  return { outcome: `prebuild queued: ${queued.join(', ')}` };
}

/** The fields read, from what the delivery kept (github/events.ts PushPayload, gitlab/payloads.ts PushHook). */
function pushOf(source: 'github' | 'gitlab', raw: unknown): PushSeen | null {
  if (!raw || typeof raw !== 'object') return null;
  const p = raw as Record<string, any>;
  if (typeof p.ref !== 'string') return null;
  if (source === 'github') {
    const r = p.repository ?? {};
    return { ref: p.ref, deleted: p.deleted === true, fullName: String(r.full_name ?? ''), urls: [r.clone_url, r.html_url, r.ssh_url].filter((u): u is string => typeof u === 'string' && u.length > 0) };
  }
  const r = p.project ?? {};
  const zero = typeof p.after === 'string' && /^0+$/.test(p.after);
  return { ref: p.ref, deleted: zero, fullName: String(r.path_with_namespace ?? ''), urls: [r.git_http_url, r.web_url, r.git_ssh_url].filter((u): u is string => typeof u === 'string' && u.length > 0) };
}
