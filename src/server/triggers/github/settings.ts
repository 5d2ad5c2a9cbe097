// The instance's GitHub App as an administrator sets it up (`berth integration github`), and
// the same with every default resolved: where GitHub and its API are, which label, assignee
// and comment command start a task.
import { z } from 'zod';
import type { Integration } from '../integrations.ts';

export const GitHubAppSettings = z.strictObject({
  appId: z.string().trim().regex(/^\d{1,20}$/, "the App ID from the App's settings page on GitHub (a number)"),
  url: z.url({ protocol: /^https?$/ }).optional().describe('web URL of GitHub or a GitHub Enterprise Server; default https://github.com'),
  apiUrl: z.url({ protocol: /^https?$/ }).optional().describe('its REST API; default https://api.github.com, or URL/api/v3 on an Enterprise Server'),
  label: z.string().trim().min(1).max(50).optional().describe("the label that starts a task on an issue; default 'berth'"),
  botLogin: z.string().trim().min(1).max(100).optional().describe("the App's bot user (assigning an issue to it starts a task); default SLUG[bot], asked of GitHub"),
  command: z
    .string()
    .trim()
    .regex(/^\/[A-Za-z0-9_-]{1,30}$/, 'a slash and a word, e.g. /berth')
    .optional()
    .describe("the comment command; default '/berth'"),
  allowedBots: z.array(z.string().trim().min(1).max(100)).max(50).optional().describe('bot users (e.g. a CI bot) whose labels and comments may start tasks; other bots are ignored'),
});
export type GitHubAppSettings = z.infer<typeof GitHubAppSettings>;

export const GitHubAppSecrets = z.strictObject({
  privateKey: z.string().max(16 * 1024).regex(/-----BEGIN [A-Z ]*PRIVATE KEY-----/, 'the PEM file GitHub gave when the private key was generated'),
  webhookSecret: z.string().min(8, 'at least 8 characters: the secret set on the App as its webhook secret').max(1024),
});
export type GitHubAppSecrets = z.infer<typeof GitHubAppSecrets>;

/** The App with every default resolved. */
export interface GitHubAppConfig {
  appId: string;
  url: string;
  apiUrl: string;
  label: string;
  /** Null until learnt from GitHub (SLUG[bot]) when not set. */
  botLogin: string | null;
  command: string;
  allowedBots: ReadonlySet<string>;
  privateKey: string;
  webhookSecret: string;
}

export const DEFAULT_LABEL = 'berth';
export const DEFAULT_COMMAND = '/berth';

/** Where a GitHub's REST API is: api.github.com for github.com, else /api/v3 on the same host. */
export function apiUrlOf(webUrl: string): string {
  const u = new URL(webUrl);
  return u.host === 'github.com' || u.host === 'www.github.com' ? 'https://api.github.com' : `${u.origin}${u.pathname.replace(/\/+$/, '')}/api/v3`;
}

export function resolveConfig(i: Integration<GitHubAppSettings, GitHubAppSecrets>): GitHubAppConfig {
  const s = i.settings;
  const url = (s.url ?? 'https://github.com').replace(/\/+$/, '');
  return {
    appId: s.appId,
    url,
    apiUrl: (s.apiUrl ?? apiUrlOf(url)).replace(/\/+$/, ''),
    label: s.label ?? DEFAULT_LABEL,
    botLogin: s.botLogin ?? null,
    command: s.command ?? DEFAULT_COMMAND,
    allowedBots: new Set((s.allowedBots ?? []).map((b) => b.toLowerCase())),
    privateKey: i.secrets.privateKey,
    webhookSecret: i.secrets.webhookSecret,
  };
}
