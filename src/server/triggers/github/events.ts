// What a GitHub delivery asks of Berth, read from its payload alone (no API call): start a
// task on an issue (labelled, assigned to the App's bot, or a `/berth …` comment), continue
// the task whose pull request a review or comment is on, or nothing. Payloads are hostile:
// each event's shape is checked with zod, every string bounded, and only the fields used are
// kept (what is stored with the delivery until it is handled).
import type { EmitterWebhookEvent } from '@octokit/webhooks';
import { z } from 'zod';

/** GitHub caps comment and issue bodies at 65,536 characters; a little slack for its counting. */
const Text = z.string().max(70_000);
const Url = z.string().max(2_000);
const Login = z.string().min(1).max(100);
const Action = z.string().max(50);

const User = z.object({ login: Login, type: z.string().max(30).optional() });
const Repository = z.object({
  name: z.string().min(1).max(100),
  full_name: z.string().min(3).max(200),
  owner: z.object({ login: Login }),
  html_url: Url,
  clone_url: Url.optional(),
  ssh_url: Url.optional(),
});
const Installation = z.object({ id: z.number().int().positive() });
const Issue = z.object({
  number: z.number().int().positive(),
  title: z.string().max(1_024),
  body: Text.nullable().optional(),
  html_url: Url,
  // Present (an object) when the issue is a pull request.
  pull_request: z.object({ html_url: Url.optional() }).nullable().optional(),
});
const Comment = z.object({
  id: z.number().int().positive(),
  body: Text,
  user: User.nullable(),
  html_url: Url.optional(),
  performed_via_github_app: z.object({ id: z.number() }).nullable().optional(),
  // A review comment's place in the diff.
  path: z.string().max(1_000).optional(),
  line: z.number().int().nullable().optional(),
});
const Review = z.object({ id: z.number().int().positive(), body: Text.nullable().optional(), state: z.string().max(40), html_url: Url.optional() });
const PullRequest = z.object({ number: z.number().int().positive(), title: z.string().max(1_024), html_url: Url, head: z.object({ ref: z.string().max(300) }) });

const Base = z.object({ action: Action, repository: Repository, sender: User, installation: Installation.optional() });

/** The events that can start or continue a task, and the part of each Berth reads. */
export const PAYLOADS = {
  issues: Base.extend({ issue: Issue, label: z.object({ name: z.string().max(100) }).optional(), assignee: User.nullable().optional() }),
  issue_comment: Base.extend({ issue: Issue, comment: Comment }),
  pull_request_review: Base.extend({ review: Review, pull_request: PullRequest }),
  pull_request_review_comment: Base.extend({ comment: Comment, pull_request: PullRequest }),
} as const;
export type GitHubEvent = keyof typeof PAYLOADS;
export type Payload<E extends GitHubEvent = GitHubEvent> = z.infer<(typeof PAYLOADS)[E]>;

// Every payload GitHub documents for these events (octokit's types) fits these shapes: tsc checks it.
type Documented<E extends GitHubEvent> = EmitterWebhookEvent<E>['payload'];
type Fits<E extends GitHubEvent> = Documented<E> extends z.input<(typeof PAYLOADS)[E]> ? true : [E, 'does not fit the shape read'];
const FITS: { [E in GitHubEvent]: Fits<E> } = { issues: true, issue_comment: true, pull_request_review: true, pull_request_review_comment: true };
void FITS;

export const isKnownEvent = (event: string): event is GitHubEvent => Object.hasOwn(PAYLOADS, event);

/** A push: it starts no task, but one to a project's default branch queues its prebuild (push.ts). */
export const PushPayload = z.object({
  ref: z.string().max(500),
  after: z.string().regex(/^[0-9a-f]{40,64}$/),
  deleted: z.boolean().optional(),
  repository: Repository.pick({ full_name: true, html_url: true, clone_url: true, ssh_url: true }),
  installation: Installation.optional(),
});
export type PushPayload = z.infer<typeof PushPayload>;

/**
 * The payload as Berth keeps it: the fields it reads (for an event it handles), else only the
 * action. Null when a handled event's payload is not what GitHub sends.
 */
export function readPayload(event: string, raw: unknown): { payload: Payload | PushPayload | { action?: string }; error?: undefined } | { payload?: undefined; error: string } {
  if (event === 'push') {
    const parsed = PushPayload.safeParse(raw);
    return parsed.success ? { payload: parsed.data } : { error: `not a GitHub push payload: ${parsed.error.issues.slice(0, 3).map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}` };
  }
  if (!isKnownEvent(event)) {
    const action = raw && typeof raw === 'object' && typeof (raw as { action?: unknown }).action === 'string' ? String((raw as { action: string }).action).slice(0, 50) : undefined;
    return { payload: action ? { action } : {} };
  }
  const parsed = PAYLOADS[event].safeParse(raw);
  if (!parsed.success) return { error: `not a GitHub ${event} payload: ${parsed.error.issues.slice(0, 3).map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}` };
  return { payload: parsed.data };
}

/** What the App knows of itself and how it is asked for work. */
export interface AskRules {
  appId: string;
  /** Lower case; null while it is not known (assignment then starts nothing). */
  botLogin: string | null;
  label: string;
  command: string;
  /** Lower case. */
  allowedBots: ReadonlySet<string>;
}

/** Where a delivery came from (every ask carries it). */
export interface Origin {
  sender: string;
  owner: string;
  repo: string;
  fullName: string;
  /** The URLs a project may have been given for the repository. */
  urls: string[];
  installationId: number | null;
}

export type Ask =
  /** Start a task on an issue or a pull request (on one a Berth task opened, the handler continues that task). */
  | { kind: 'issue'; origin: Origin; number: number; pullRequest: boolean; title: string; htmlUrl: string; instruction: string; why: 'labeled' | 'assigned' | 'command' }
  /** Continue the task whose pull request this is (a review asking for changes, a command on it). */
  | { kind: 'review'; origin: Origin; number: number; htmlUrl: string; instruction: string; why: 'changes requested' | 'command'; reviewId?: number }
  | { kind: 'ignore'; why: string };

const ignore = (why: string): Ask => ({ kind: 'ignore', why });

/**
 * The instruction after the command (`/berth fix the typo` → `fix the typo`), when a text
 * starts with it; null when it does not.
 */
export function commandIn(text: string | null | undefined, command: string): string | null {
  if (!text) return null;
  const escaped = command.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const m = new RegExp(`^\\s*${escaped}(?=\\s|$)`, 'i').exec(text);
  return m ? text.slice(m[0].length).trim() : null;
}

/** What a delivery asks; `ignore` with the reason for everything else. */
export function askOf(event: string, payload: Payload, rules: AskRules): Ask {
  const sender = payload.sender;
  const login = sender.login.toLowerCase();
  const origin: Origin = {
    sender: sender.login,
    owner: payload.repository.owner.login,
    repo: payload.repository.name,
    fullName: payload.repository.full_name,
    urls: [payload.repository.clone_url, payload.repository.html_url, payload.repository.ssh_url].filter((u): u is string => !!u),
    installationId: payload.installation?.id ?? null,
  };
  const viaApp = 'comment' in payload ? payload.comment.performed_via_github_app?.id : undefined;
  // The App's own comments (its progress comment) must never start anything: no loops.
  if ((rules.botLogin && login === rules.botLogin) || viaApp === Number(rules.appId)) return ignore("the App's own action");
  if (sender.type === 'Bot' && !rules.allowedBots.has(login)) return ignore(`${sender.login} is a bot that is not allowed to start tasks`);

  switch (event as GitHubEvent) {
    case 'issues': {
      const p = payload as Payload<'issues'>;
      const issue = { number: p.issue.number, pullRequest: !!p.issue.pull_request, title: p.issue.title, htmlUrl: p.issue.html_url };
      if (p.action === 'labeled') {
        if (p.label?.name.toLowerCase() !== rules.label.toLowerCase()) return ignore(`label ${p.label?.name ?? '(none)'} is not ${rules.label}`);
        return { kind: 'issue', origin, ...issue, instruction: '', why: 'labeled' };
      }
      if (p.action === 'assigned') {
        if (!rules.botLogin) return ignore("assigned, but the App's bot user is not known: set botLogin");
        if (p.assignee?.login.toLowerCase() !== rules.botLogin) return ignore(`assigned to ${p.assignee?.login ?? 'nobody'}, not ${rules.botLogin}`);
        return { kind: 'issue', origin, ...issue, instruction: '', why: 'assigned' };
      }
      return ignore(`issues ${p.action}`);
    }
    case 'issue_comment': {
      const p = payload as Payload<'issue_comment'>;
      if (p.action !== 'created') return ignore(`issue_comment ${p.action}`);
      const instruction = commandIn(p.comment.body, rules.command);
      if (instruction === null) return ignore(`a comment that does not start with ${rules.command}`);
      // On a pull request it may be Berth's own: the handler then continues that task instead.
      return { kind: 'issue', origin, number: p.issue.number, pullRequest: !!p.issue.pull_request, title: p.issue.title, htmlUrl: p.issue.html_url, instruction, why: 'command' };
    }
    case 'pull_request_review': {
      const p = payload as Payload<'pull_request_review'>;
      if (p.action !== 'submitted') return ignore(`pull_request_review ${p.action}`);
      const state = p.review.state.toLowerCase();
      const instruction = commandIn(p.review.body, rules.command);
      // Its line comments say what to change; the handler reads them (reviewId).
      if (state === 'changes_requested') return { kind: 'review', origin, number: p.pull_request.number, htmlUrl: p.pull_request.html_url, instruction: instruction ?? (p.review.body ?? '').trim(), why: 'changes requested', reviewId: p.review.id };
      if (instruction !== null) return { kind: 'review', origin, number: p.pull_request.number, htmlUrl: p.pull_request.html_url, instruction, why: 'command' };
      return ignore(`a review (${state}) that asks for no changes`);
    }
    case 'pull_request_review_comment': {
      const p = payload as Payload<'pull_request_review_comment'>;
      if (p.action !== 'created') return ignore(`pull_request_review_comment ${p.action}`);
      const instruction = commandIn(p.comment.body, rules.command);
      if (instruction === null) return ignore(`a review comment that does not start with ${rules.command}`);
      const where = p.comment.path ? `On \`${p.comment.path}\`${p.comment.line ? ` line ${p.comment.line}` : ''}: ` : '';
      return { kind: 'review', origin, number: p.pull_request.number, htmlUrl: p.pull_request.html_url, instruction: `${where}${instruction}`, why: 'command' };
    }
    default:
      return ignore(`event ${event}`);
  }
}
