import type { Command } from 'commander';
import type { ApiClient } from '../client.ts';
import { usageError } from '../output.ts';
import { secretFromFile, setIntegration } from './integration.ts';

const collect = (value: string, previous: string[] = []) => [...previous, value];

/** `berth integration github`: sets up the GitHub App whose issues, comments and reviews start tasks. */
export function githubIntegration(integration: Command, client: () => ApiClient): void {
  integration
    .command('github')
    .description('set up the GitHub App: an issue labelled berth or assigned to the App, a `/berth …` comment, or a review on its pull request starts or continues a task (docs/github-app.md)')
    .requiredOption('--app-id <id>', "the App ID from the App's settings page")
    .option('--private-key-file <file>', 'the PEM file GitHub gave when the private key was generated (required the first time)')
    .option('--webhook-secret-file <file>', "file holding the App's webhook secret (required the first time)")
    .option('--url <url>', 'web URL of GitHub Enterprise Server (default https://github.com)')
    .option('--api-url <url>', 'its REST API (default https://api.github.com, or URL/api/v3)')
    .option('--label <label>', 'the label that starts a task (default berth)')
    .option('--bot-login <login>', "the App's bot user, SLUG[bot]: assigning an issue to it starts a task (default: asked of GitHub)")
    .option('--command <command>', 'the comment command (default /berth)')
    .option('--allow-bot <login>', 'a bot user whose labels and comments may start tasks (repeatable; other bots are ignored)', collect)
    .option('--json', 'print JSON')
    .action(async (o: { appId: string; privateKeyFile?: string; webhookSecretFile?: string; url?: string; apiUrl?: string; label?: string; botLogin?: string; command?: string; allowBot?: string[]; json?: boolean }) => {
      if (!/^\d+$/.test(o.appId)) throw usageError(`--app-id: ${o.appId} is not an App ID (a number, on the App's settings page)`);
      const settings = {
        appId: o.appId,
        ...(o.url ? { url: o.url } : {}),
        ...(o.apiUrl ? { apiUrl: o.apiUrl } : {}),
        ...(o.label ? { label: o.label } : {}),
        ...(o.botLogin ? { botLogin: o.botLogin } : {}),
        ...(o.command ? { command: o.command } : {}),
        ...(o.allowBot?.length ? { allowedBots: o.allowBot } : {}),
      };
      const secrets = { privateKey: secretFromFile('--private-key-file', o.privateKeyFile), webhookSecret: secretFromFile('--webhook-secret-file', o.webhookSecretFile) };
      await setIntegration(client(), 'github', settings, secrets, o);
    });
}
