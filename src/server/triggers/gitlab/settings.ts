// The GitLab integration's shapes: where the GitLab is, what starts a task there, and the two
// secrets (the bot user's API token, the webhook's secret token). One GitLab per instance;
// every project and group webhook on it sends to /api/webhooks/gitlab with that secret token.
import { z } from 'zod';

const httpUrl = (what: string, example: string) => z.url({ protocol: /^https?$/, error: `${what} takes an http(s) URL such as ${example}` });

export const GitLabSettings = z.strictObject({
  /** The GitLab's web URL (`https://gitlab.example.com`). */
  url: httpUrl('url', 'https://gitlab.example.com'),
  /** Default: `${url}/api/v4`. */
  apiUrl: httpUrl('apiUrl', 'https://gitlab.example.com/api/v4').optional(),
  /** Adding this label to an issue starts a task. */
  label: z.string().trim().min(1).max(255).default('berth'),
  /** Assigning an issue to this user starts a task (the bot user, usually); none: assigning starts nothing. */
  botUsername: z.string().trim().regex(/^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,254}$/, 'a GitLab username').optional(),
  /** A note starting with this starts a task (on an issue) or continues one (on the agent's merge request). */
  command: z.string().trim().regex(/^\/[a-z][a-z0-9_-]{0,31}$/i, 'a slash command such as /berth').default('/berth'),
});
export type GitLabSettings = z.infer<typeof GitLabSettings>;

export const GitLabSecrets = z.strictObject({
  /** An API token (api scope) of the bot user: reads issues, asks who may start tasks, writes notes. */
  token: z.string().min(1).max(1024),
  /** The secret token set on every webhook; GitLab sends it as X-Gitlab-Token. */
  webhookToken: z.string().min(1).max(1024),
});
export type GitLabSecrets = z.infer<typeof GitLabSecrets>;

/** The settings with every default filled in. */
export interface GitLabConfig {
  url: string;
  apiUrl: string;
  label: string;
  botUsername: string | null;
  command: string;
  token: string;
  webhookToken: string;
}

export function gitlabConfig(settings: Record<string, unknown>, secrets: Record<string, string>): GitLabConfig | null {
  const s = GitLabSettings.safeParse(settings);
  const k = GitLabSecrets.safeParse(secrets);
  if (!s.success || !k.success) return null;
  const url = s.data.url.replace(/\/+$/, '');
  return {
    url,
    apiUrl: (s.data.apiUrl ?? `${url}/api/v4`).replace(/\/+$/, ''),
    label: s.data.label,
    botUsername: s.data.botUsername ?? null,
    command: s.data.command,
    token: k.data.token,
    webhookToken: k.data.webhookToken,
  };
}
