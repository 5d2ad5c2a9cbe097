import type { Command } from 'commander';
import type { ApiClient } from '../client.ts';

/** `berth integration slack`: sets up the Slack integration. */
export function slackIntegration(_integration: Command, _client: () => ApiClient): void {}
