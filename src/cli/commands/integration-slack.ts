import type { Command } from 'commander';
import type { IntegrationStatus } from '../../shared/api-integrations.ts';
import type { ApiClient } from '../client.ts';
import { emit } from '../output.ts';
import { secretFromFile } from './integration.ts';

/** `berth integration slack`: sets up the Slack app that starts tasks from `/berth` and mentions. */
export function slackIntegration(integration: Command, client: () => ApiClient): void {
  integration
    .command('slack')
    .description('set up the Slack app: `/berth <goal> [in <project>]` and @mentions start tasks for the Berth user with the same confirmed email')
    .option('--signing-secret-file <file>', "file holding the app's signing secret (Basic Information → App Credentials)")
    .option('--bot-token-file <file>', 'file holding the Bot User OAuth Token, xoxb-… (OAuth & Permissions)')
    // The program's own --org: here it names the org Slack tasks go to, not the org to act in.
    .option('--org <name>', 'the Berth org Slack tasks go to (default: the only org of the Slack user)')
    .option('--api-url <url>', "Slack's Web API root (default https://slack.com/api/)")
    .option('--json', 'print JSON')
    .action(async (o: { signingSecretFile?: string; botTokenFile?: string; apiUrl?: string; json?: boolean }, cmd: Command) => {
      const org = (cmd.optsWithGlobals() as { org?: string }).org;
      const settings = { ...(o.apiUrl ? { apiUrl: o.apiUrl } : {}), ...(org ? { org } : {}) };
      const secrets = { signingSecret: secretFromFile('--signing-secret-file', o.signingSecretFile), botToken: secretFromFile('--bot-token-file', o.botTokenFile) };
      const given = Object.fromEntries(Object.entries(secrets).filter((e): e is [string, string] => e[1] !== undefined));
      const status = await client().request<IntegrationStatus>('PUT', '/api/integrations/slack', { settings, secrets: given });
      emit(o, status, () =>
        [
          `slack integration set up (secrets set: ${status.secretsSet.join(', ') || 'none'}; tasks go to ${org ? `the org ${org}` : "the Slack user's only org"}).`,
          `Slash command /berth, Request URL:           ${status.webhookUrl}/commands`,
          `Event Subscriptions (app_mention), Request URL: ${status.webhookUrl}/events`,
          'Bot scopes: commands, app_mentions:read, chat:write, chat:write.public, users:read, users:read.email',
          '',
        ].join('\n'),
      );
    });
}
