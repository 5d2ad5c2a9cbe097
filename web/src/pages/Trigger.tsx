// Where a task came from, in words: the badge the task list shows for tasks no person
// started in Berth, and the "Started by …" line of the task page.
import type { Task } from '../api.ts';
import { Link } from '../router.tsx';

/** How each source outside Berth is named to people; web, cli and api are people in Berth, named as they are. */
const SOURCE: Record<string, string> = { github: 'GitHub', gitlab: 'GitLab', slack: 'Slack', schedule: 'Schedule', webhook: 'Webhook', campaign: 'Campaign' };

export const triggerLabel = (trigger: string) => (Object.hasOwn(SOURCE, trigger) ? SOURCE[trigger]! : trigger);
/** `github:octocat`, `schedule:sch_…`: an actor or origin outside Berth. */
export const isOutside = (who: string) => Object.hasOwn(SOURCE, who.split(':', 1)[0]!);

/** A task's trigger in a list: plain for people, a badge for GitHub, GitLab, Slack, schedules and webhooks. */
export function TriggerBadge({ task }: { task: Pick<Task, 'trigger' | 'triggeredBy'> }) {
  if (!Object.hasOwn(SOURCE, task.trigger)) return <>{task.trigger}</>;
  const by = task.triggeredBy ? originWords(task.triggeredBy) : undefined;
  return <span className={`badge trigger trigger-${task.trigger}`} title={by ? `Started by ${by}` : undefined}>{triggerLabel(task.trigger)}</span>;
}

/**
 * `github:octocat` → "GitHub: octocat", `slack:T1/U2` → "Slack: U2 (team T1)",
 * `schedule:sch_…` → "Schedule sch_…"; an unknown form as it is.
 */
export function originWords(triggeredBy: string): string {
  const at = triggeredBy.indexOf(':');
  if (at < 0) return triggeredBy;
  const [kind, who] = [triggeredBy.slice(0, at), triggeredBy.slice(at + 1)];
  if (kind === 'schedule' || kind === 'webhook' || kind === 'campaign') return `${SOURCE[kind]} ${who}`;
  if (kind === 'slack' && who.includes('/')) {
    const [team, user] = who.split('/', 2);
    return `Slack: ${user} (team ${team})`;
  }
  return Object.hasOwn(SOURCE, kind) ? `${SOURCE[kind]}: ${who}` : triggeredBy;
}

/**
 * Where a schedule or generic webhook is listed in Settings (its row's anchor), so the
 * task page can link to what started it.
 */
export function settingsAnchor(triggeredBy: string): string | undefined {
  const m = /^(schedule|webhook):([A-Za-z0-9_]+)$/.exec(triggeredBy);
  return m ? `/settings#${m[1]}-${m[2]}` : undefined;
}

/** A campaign's page, for a task it started (`campaign:cmp_…`). */
export function campaignPage(triggeredBy: string): string | undefined {
  const m = /^campaign:([A-Za-z0-9_]+)$/.exec(triggeredBy);
  return m ? `/campaigns/${m[1]}` : undefined;
}

/** The task page's line for a task a trigger started: "Started by GitHub: octocat", a schedule or webhook linked to its row in Settings, a campaign to its page. */
export function TriggerOrigin({ triggeredBy }: { triggeredBy: string }) {
  const words = originWords(triggeredBy);
  const anchor = campaignPage(triggeredBy) ?? settingsAnchor(triggeredBy);
  return <>Started by {anchor ? <Link to={anchor}>{words}</Link> : words}</>;
}
