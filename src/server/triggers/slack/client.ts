// The Slack app as Berth keeps it (settings and sealed secrets) and the Web API client made
// from it: Slack's own @slack/web-api, pointed at `apiUrl` (tests give a local Slack).
import { LogLevel, WebClient, type Logger as SlackLogger } from '@slack/web-api';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { Integration, IntegrationStore } from '../integrations.ts';

export const SlackSettings = z.strictObject({
  apiUrl: z.url({ protocol: /^https?$/ }).default('https://slack.com/api/').describe("Slack's Web API root"),
  org: z.string().min(1).max(100).optional().describe('the Berth org Slack tasks go to (default: the only org of the Slack user)'),
});
export type SlackSettings = z.infer<typeof SlackSettings>;

export const SlackSecrets = z.strictObject({
  signingSecret: z.string().min(8).max(200).describe("the app's signing secret (Basic Information → App Credentials)"),
  botToken: z.string().regex(/^xoxb-/, 'a bot token starts with xoxb-').max(500).describe('the Bot User OAuth Token (OAuth & Permissions)'),
});
export type SlackSecrets = z.infer<typeof SlackSecrets>;

export type SlackApp = Integration<SlackSettings, SlackSecrets>;

export async function slackApp(integrations: IntegrationStore): Promise<SlackApp | null> {
  return integrations.get<SlackSettings, SlackSecrets>('slack');
}

/**
 * A Web API client for the app's bot. Slack's own retries (ten over half an hour) are off:
 * a delivery or a reply that fails is tried again by Berth's queue and outbox, which outlive
 * this process. Its log goes to ours, at warn and above (it redacts tokens itself).
 */
export function slackClient(app: SlackApp, logger: Logger): WebClient {
  return new WebClient(app.secrets.botToken, {
    slackApiUrl: app.settings.apiUrl ?? 'https://slack.com/api/',
    retryConfig: { retries: 0 },
    timeout: 15_000,
    logger: pinoForSlack(logger.child({ source: 'slack' })),
  });
}

function pinoForSlack(log: Logger): SlackLogger {
  const text = (msg: unknown[]) => msg.map(String).join(' ').slice(0, 1000);
  return {
    debug: () => {},
    info: () => {},
    warn: (...msg) => log.warn(text(msg)),
    error: (...msg) => log.error(text(msg)),
    setLevel: () => {},
    getLevel: () => LogLevel.WARN,
    setName: () => {},
  };
}

/** A Web API error in a few words (`invalid_auth`, `channel_not_found`), never the request. */
export function slackError(err: unknown): string {
  const e = err as { code?: string; data?: { error?: string }; message?: string };
  return e.data?.error ?? e.code ?? e.message ?? String(err);
}
