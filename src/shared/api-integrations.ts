// The instance's integrations (GitHub App, GitLab, Slack app): what the API takes and shows.
import { z } from 'zod';

export const IntegrationKindParam = z.object({ kind: z.enum(['github', 'gitlab', 'slack']) });

export const SetIntegrationBody = z.strictObject({
  settings: z.record(z.string(), z.unknown()).describe("the kind's settings (see `berth integration KIND --help`); they replace the old ones"),
  secrets: z
    .record(z.string().max(100), z.string().max(64 * 1024))
    .default({})
    .describe('secret values (private key, webhook secret, tokens); one left out keeps its old value; never shown again'),
});

export const IntegrationStatus = z.object({
  kind: z.enum(['github', 'gitlab', 'slack']),
  configured: z.boolean(),
  settings: z.record(z.string(), z.unknown()).nullable(),
  secretsSet: z.array(z.string()).describe('which secrets are set; never their values'),
  updatedBy: z.string().nullable(),
  updatedAt: z.string().nullable(),
  webhookUrl: z.string().describe('where the service sends its webhooks'),
  webhookUrls: z.array(z.string()).describe('every request URL the service is given (Slack: slash commands and events)'),
});
export type IntegrationStatus = z.infer<typeof IntegrationStatus>;

export const IntegrationList = z.object({ items: z.array(IntegrationStatus) });
export type IntegrationList = z.infer<typeof IntegrationList>;
