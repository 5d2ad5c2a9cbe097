import type { Command } from 'commander';
import type { ApiClient } from '../client.ts';
import { secretFromFile, setIntegration } from './integration.ts';

/** `berth integration gitlab`: the GitLab whose webhooks start tasks, and the bot user that answers on it. */
export function gitlabIntegration(integration: Command, client: () => ApiClient): void {
  integration
    .command('gitlab')
    .description('set up GitLab: issues labelled or assigned to the bot, and `/berth …` notes, start tasks (settings are replaced; a secret left out is kept)')
    .requiredOption('--url <url>', "the GitLab's web URL, e.g. https://gitlab.example.com")
    .option('--token-file <file>', "a file holding an API token (api scope) of the bot user: reads issues, checks members' roles, writes notes")
    .option('--webhook-token-file <file>', 'a file holding the secret token set on the project or group webhooks')
    .option('--api-url <url>', 'the API root (default: URL/api/v4)')
    .option('--label <label>', 'adding this label to an issue starts a task (default: berth)')
    .option('--bot-username <name>', 'assigning an issue to this GitLab user starts a task')
    .option('--command <command>', 'a note starting with this starts or continues a task (default: /berth)')
    .option('--json', 'print JSON')
    .addHelpText(
      'after',
      '\nThen on GitLab, for each project or group: Settings > Webhooks > Add new webhook, with the webhook URL this prints,\nthe secret token from --webhook-token-file, and the triggers "Issues events" and "Comments".\nThe bot user needs the Reporter role (or more) on those projects to read issues and write notes.',
    )
    .action(async (o: { url: string; tokenFile?: string; webhookTokenFile?: string; apiUrl?: string; label?: string; botUsername?: string; command?: string; json?: boolean }) => {
      const settings = Object.fromEntries(Object.entries({ url: o.url, apiUrl: o.apiUrl, label: o.label, botUsername: o.botUsername, command: o.command }).filter(([, v]) => v !== undefined));
      await setIntegration(client(), 'gitlab', settings, { token: secretFromFile('--token-file', o.tokenFile), webhookToken: secretFromFile('--webhook-token-file', o.webhookTokenFile) }, o);
    });
}
