import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { CLIENT_CONFIG_FILE, type ClientConfig } from '../shared/client-config.ts';
import { CliError } from './output.ts';

/** --data-dir, then BERTH_DATA_DIR, then ~/.berth. */
export function dataDir(flag?: string): string {
  return resolve(flag || process.env.BERTH_DATA_DIR || join(homedir(), '.berth'));
}

/** What `berth login` keeps: the control plane, the token, the org it acts in, and whether login made the token. */
export interface LoginConfig {
  url: string;
  token: string;
  org?: string;
  tokenId?: string;
  /** Made by `berth login` (identity provider or invite): `berth logout` revokes it. A pasted token is only forgotten. */
  madeByLogin: boolean;
}

/**
 * The file's fields checked by hand, not with zod: every command reads this file, and loading
 * zod costs more than the rest of the CLI's start-up. Returns what is wrong, or the config.
 */
function parseLoginConfig(value: unknown): LoginConfig | string {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'expected an object';
  const v = value as Record<string, unknown>;
  if (typeof v.url !== 'string' || !URL.canParse(v.url)) return 'url: expected a URL';
  if (typeof v.token !== 'string' || v.token === '') return 'token: expected a token';
  for (const key of ['org', 'tokenId'] as const) if (v[key] !== undefined && typeof v[key] !== 'string') return `${key}: expected a string`;
  if (v.madeByLogin !== undefined && typeof v.madeByLogin !== 'boolean') return 'madeByLogin: expected true or false';
  return {
    url: v.url,
    token: v.token,
    ...(v.org !== undefined && { org: v.org as string }),
    ...(v.tokenId !== undefined && { tokenId: v.tokenId as string }),
    madeByLogin: v.madeByLogin === true,
  };
}

/** $XDG_CONFIG_HOME/berth/config.json, by default ~/.config/berth/config.json. */
export function loginConfigPath(): string {
  const base = process.env.XDG_CONFIG_HOME?.trim() || join(homedir(), '.config');
  return join(resolve(base), 'berth', 'config.json');
}

export function readLoginConfig(): LoginConfig | undefined {
  const path = loginConfigPath();
  if (!existsSync(path)) return undefined;
  let parsed: LoginConfig | string;
  try {
    parsed = parseLoginConfig(JSON.parse(readFileSync(path, 'utf8')));
  } catch {
    throw new CliError(`${path} is not JSON: remove it and run \`berth login\` again`);
  }
  if (typeof parsed === 'string') throw new CliError(`${path} is not a Berth sign-in (${parsed}): remove it and run \`berth login\` again`);
  return parsed;
}

function checked(config: LoginConfig): LoginConfig {
  const parsed = parseLoginConfig(config);
  if (typeof parsed === 'string') throw new CliError(`not a sign-in to keep: ${parsed}`);
  return parsed;
}

/** Written whole or not at all, readable by its owner alone (directory 0700, file 0600): it holds a token. */
export function writeLoginConfig(config: LoginConfig): string {
  const path = loginConfigPath();
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  chmodSync(dirname(path), 0o700);
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(checked(config), null, 2)}\n`, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
  return path;
}

export function removeLoginConfig(): void {
  rmSync(loginConfigPath(), { force: true });
}

export type ConfigSource = 'environment' | 'data-dir' | 'login';

/**
 * Where the CLI finds the control plane and its token, first match wins:
 *   1. BERTH_URL and BERTH_TOKEN (both);
 *   2. a data dir named with --data-dir or BERTH_DATA_DIR: the client.json `berth up` wrote there;
 *   3. the sign-in `berth login` stored ($XDG_CONFIG_HOME/berth/config.json);
 *   4. ~/.berth/client.json, what a local `berth up` wrote.
 * The org: --org, then BERTH_ORG, then the one stored with the token; when none is known the
 * client asks the control plane which org the token acts in (client.ts).
 */
export function clientConfig(dataDirFlag: string | undefined, org?: string): ClientConfig & { source: ConfigSource } {
  const url = process.env.BERTH_URL?.replace(/\/+$/, '') || undefined;
  const token = process.env.BERTH_TOKEN || undefined;
  org ??= process.env.BERTH_ORG || undefined;
  if (url && token) return { url, token, org, source: 'environment' };
  const explicitDir = dataDirFlag || process.env.BERTH_DATA_DIR;
  if (!explicitDir) {
    const login = readLoginConfig();
    if (login && (!url || url === login.url.replace(/\/+$/, ''))) return { url: login.url, token: token ?? login.token, org: org ?? login.org, source: 'login' };
  }
  const dir = dataDir(dataDirFlag);
  const path = join(dir, CLIENT_CONFIG_FILE);
  if (!existsSync(path)) {
    throw new CliError(
      url
        ? 'BERTH_URL is set but BERTH_TOKEN is not: set both, or sign in to it with `berth login URL`'
        : explicitDir
          ? `no control plane found for data dir ${dir}: start one with \`berth up\` (or set BERTH_URL and BERTH_TOKEN)`
          : 'not signed in: sign in to a control plane with `berth login URL`, or start one here with `berth up`',
      4,
    );
  }
  const config = JSON.parse(readFileSync(path, 'utf8')) as ClientConfig;
  return { url: url ?? config.url, token: token ?? config.token, org: org ?? config.org, source: 'data-dir' };
}
