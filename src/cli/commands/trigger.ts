import type { Command } from 'commander';
import type { ApiClient } from '../client.ts';

/** `berth trigger`: generic webhooks that start tasks. */
export function triggerCommands(_program: Command, _client: () => ApiClient): void {}
