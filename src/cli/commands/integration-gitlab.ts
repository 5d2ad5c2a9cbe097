import type { Command } from 'commander';
import type { ApiClient } from '../client.ts';

/** `berth integration gitlab`: sets up the Gitlab integration. */
export function gitlabIntegration(_integration: Command, _client: () => ApiClient): void {}
