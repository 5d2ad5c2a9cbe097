// `berth prebuild PROJECT`: built by the prebuild work (server/prebuilds).
import type { Command } from 'commander';
import type { ApiClient } from '../client.ts';

export function prebuildCommands(_program: Command, _client: () => ApiClient): void {}
