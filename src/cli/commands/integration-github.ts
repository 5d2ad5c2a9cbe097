import type { Command } from 'commander';
import type { ApiClient } from '../client.ts';

/** `berth integration github`: sets up the Github integration. */
export function githubIntegration(_integration: Command, _client: () => ApiClient): void {}
