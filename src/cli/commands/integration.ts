import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import type { IntegrationList, IntegrationStatus } from '../../shared/api-integrations.ts';
import type { ApiClient } from '../client.ts';
import { emit, printJson, printTable, usageError } from '../output.ts';
import { githubIntegration } from './integration-github.ts';
import { gitlabIntegration } from './integration-gitlab.ts';
import { slackIntegration } from './integration-slack.ts';

/** A secret's value from a file (never from the command line, where `ps` and shell history would keep it). */
export function secretFromFile(flag: string, path: string | undefined): string | undefined {
  if (path === undefined) return undefined;
  let value: string;
  try {
    value = readFileSync(path, 'utf8');
  } catch (err) {
    throw usageError(`${flag}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  // A PEM keeps its newlines; a token file's trailing newline is not part of the token.
  value = value.includes('-----BEGIN') ? value : value.trim();
  if (!value) throw usageError(`${flag}: ${path} is empty`);
  return value;
}

/** Sends one kind's settings and secrets, and prints where its webhooks go. */
export async function setIntegration(client: ApiClient, kind: string, settings: Record<string, unknown>, secrets: Record<string, string | undefined>, o: { json?: boolean }): Promise<void> {
  const given = Object.fromEntries(Object.entries(secrets).filter((e): e is [string, string] => e[1] !== undefined));
  const status = await client.request<IntegrationStatus>('PUT', `/api/integrations/${kind}`, { settings, secrets: given });
  emit(o, status, () => `${kind} integration set up (secrets set: ${status.secretsSet.join(', ') || 'none'}).\nWebhook URL${status.webhookUrls.length > 1 ? 's' : ''}: ${status.webhookUrls.join(', ')}\n`);
}

export function integrationCommands(program: Command, client: () => ApiClient): void {
  const integration = program.command('integration').description('the GitHub App, GitLab and Slack app that start tasks (instance administrators)');

  integration
    .command('list')
    .alias('ls')
    .option('--json', 'print JSON')
    .description('list the integrations, whether each is set up, and its webhook URL')
    .action(async (o) => {
      const { items } = await client().request<IntegrationList>('GET', '/api/integrations');
      if (o.json) return printJson(items);
      printTable(
        ['KIND', 'SET UP', 'SECRETS', 'WEBHOOK URL', 'UPDATED BY'],
        items.map((i) => [i.kind, i.configured ? 'yes' : 'no', i.secretsSet.join(', ') || '-', i.webhookUrls.join(' '), i.updatedBy ?? '-']),
      );
    });

  integration
    .command('rm')
    .alias('remove')
    .argument('<kind>', 'github, gitlab or slack')
    .option('--json', 'print JSON')
    .description('remove an integration: its webhooks are refused from then on')
    .action(async (kind: string, o: { json?: boolean }) => {
      const status = await client().request<IntegrationStatus>('DELETE', `/api/integrations/${encodeURIComponent(kind)}`);
      emit(o, status, `${kind} integration removed\n`);
    });

  githubIntegration(integration, client);
  gitlabIntegration(integration, client);
  slackIntegration(integration, client);
}
