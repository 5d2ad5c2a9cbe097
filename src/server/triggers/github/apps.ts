// The instance's GitHub App as it is set up now, and its API clients: one per App id, key and
// GitHub, kept so their installation tokens (cached inside) are reused across deliveries.
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { IntegrationStore } from '../integrations.ts';
import { GitHubApp } from './client.ts';
import { resolveConfig, type GitHubAppConfig, type GitHubAppSecrets, type GitHubAppSettings } from './settings.ts';

const MAX_CLIENTS = 8;

export class GitHubApps {
  readonly #integrations: IntegrationStore;
  readonly #logger: Logger;
  readonly #clients = new Map<string, GitHubApp>();
  /** Bot logins learnt from GitHub, by App id. */
  readonly #bots = new Map<string, string>();

  constructor(o: { integrations: IntegrationStore; logger: Logger }) {
    this.#integrations = o.integrations;
    this.#logger = o.logger;
  }

  /** The App with its defaults resolved, or null when none is set up. */
  async current(): Promise<GitHubAppConfig | null> {
    const i = await this.#integrations.get<GitHubAppSettings, GitHubAppSecrets>('github');
    return i ? resolveConfig(i) : null;
  }

  /** The App's client for a GitHub API (the configured one by default). */
  client(config: GitHubAppConfig, apiUrl: string = config.apiUrl): GitHubApp {
    const key = `${config.appId}|${apiUrl}|${createHash('sha256').update(config.privateKey).digest('hex')}`;
    let client = this.#clients.get(key);
    if (!client) {
      if (this.#clients.size >= MAX_CLIENTS) this.#clients.delete(this.#clients.keys().next().value!);
      client = new GitHubApp({ appId: config.appId, privateKey: config.privateKey, apiUrl });
      this.#clients.set(key, client);
    }
    return client;
  }

  /** The bot user, lower case: the configured one, or `SLUG[bot]` asked of GitHub once; null when GitHub cannot say. */
  async botLogin(config: GitHubAppConfig, learn: boolean): Promise<string | null> {
    if (config.botLogin) return config.botLogin.toLowerCase();
    const known = this.#bots.get(config.appId);
    if (known || !learn) return known ?? null;
    try {
      const login = `${(await this.client(config).slug()).toLowerCase()}[bot]`;
      this.#bots.set(config.appId, login);
      return login;
    } catch (err) {
      this.#logger.warn({ err: { message: (err as Error).message } }, "github: could not learn the App's bot user; set botLogin with `berth integration github --bot-login`");
      return null;
    }
  }
}
