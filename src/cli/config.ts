import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { CLIENT_CONFIG_FILE, type ClientConfig } from '../shared/client-config.ts';
import { CliError } from './output.ts';

/** --data-dir, then BERTH_DATA_DIR, then ~/.berth. */
export function dataDir(flag?: string): string {
  return resolve(flag ?? process.env.BERTH_DATA_DIR ?? join(homedir(), '.berth'));
}

/** Where the CLI finds the control plane: BERTH_URL and BERTH_TOKEN, else what `berth up` wrote. */
export function clientConfig(dir: string, org?: string): ClientConfig {
  const url = process.env.BERTH_URL;
  const token = process.env.BERTH_TOKEN;
  org ??= process.env.BERTH_ORG;
  if (url && token) return { url: url.replace(/\/+$/, ''), token, org };
  const path = join(dir, CLIENT_CONFIG_FILE);
  if (!existsSync(path)) {
    throw new CliError(
      url
        ? 'BERTH_URL is set but BERTH_TOKEN is not: set both to reach another control plane'
        : `no control plane found for data dir ${dir}: start one with \`berth up\` (or set BERTH_URL and BERTH_TOKEN)`,
    );
  }
  const config = JSON.parse(readFileSync(path, 'utf8')) as ClientConfig;
  return { url: url ?? config.url, token: token ?? config.token, org: org ?? config.org };
}
