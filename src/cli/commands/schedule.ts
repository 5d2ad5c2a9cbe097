import type { Command } from 'commander';
import type { ApiClient } from '../client.ts';

/** `berth schedule`: cron rules that start tasks. */
export function scheduleCommands(_program: Command, _client: () => ApiClient): void {}
