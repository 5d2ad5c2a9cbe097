import type WebSocket from 'ws';
import type { ErrorBody } from '../shared/errors.ts';
import type { ClientConfig } from '../shared/client-config.ts';
import { ApiError } from './errors.ts';
import { CliError } from './output.ts';

/** Stands for the org in a path until the token's own org is known (orgPath). */
const ORG_FROM_TOKEN = '\u0000org\u0000';

/** A thin typed client for the control plane's HTTP API. */
export class ApiClient {
  readonly url: string;
  readonly #token: string;
  readonly #org: string | undefined;
  #implied: Promise<string> | undefined;

  constructor(config: ClientConfig) {
    this.url = config.url;
    this.#token = config.token;
    this.#org = config.org;
  }

  /**
   * The API path of something in the chosen org: `/api/orgs/ORG/<rest>`. With no org chosen
   * the path holds a placeholder that fetch() and websocket() fill in with the org the token
   * acts in, asked once: an org token implies its org, and so does a user in only one.
   */
  orgPath(rest: string): string {
    return `/api/orgs/${this.#org === undefined ? ORG_FROM_TOKEN : encodeURIComponent(this.#org)}/${rest}`;
  }

  async #withOrg(path: string): Promise<string> {
    if (!path.includes(ORG_FROM_TOKEN)) return path;
    this.#implied ??= this.#impliedOrg();
    return path.replace(ORG_FROM_TOKEN, encodeURIComponent(await this.#implied));
  }

  async #impliedOrg(): Promise<string> {
    const me = await this.request<{ kind: 'user' | 'org'; orgs: { name: string }[] }>('GET', '/api/me');
    if (me.orgs.length === 1) return me.orgs[0]!.name;
    throw new CliError(
      me.orgs.length === 0
        ? 'this token acts in no org: ask an admin to add you to one (`berth member add`)'
        : `no org chosen: pass --org NAME or set BERTH_ORG (yours: ${me.orgs.map((o) => o.name).join(', ')})`,
      2,
    );
  }

  get headers(): Record<string, string> {
    return { authorization: `Bearer ${this.#token}` };
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.fetch(path, {
      method,
      headers: body === undefined ? this.headers : { ...this.headers, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status === 204) return undefined as T;
    return (await res.json()) as T;
  }

  /** fetch with the token, turning transport failures and error bodies into one-line CliErrors. */
  async fetch(path: string, init: RequestInit & { duplex?: 'half' } = {}): Promise<Response> {
    let res: Response;
    path = await this.#withOrg(path);
    try {
      res = await fetch(`${this.url}${path}`, { ...init, headers: { ...this.headers, ...(init.headers as Record<string, string>) } });
    } catch (err) {
      throw new CliError(`cannot reach Berth at ${this.url} (${(err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message}): is \`berth up\` running?`);
    }
    if (!res.ok) {
      const text = await res.text();
      let error: Partial<ErrorBody['error']> = { message: text };
      try {
        error = (JSON.parse(text) as ErrorBody).error;
      } catch {
        // not one of ours: show what came back
      }
      // The kind picks the exit status; main.ts turns the field into the command's flag.
      throw new ApiError(error.message || `${res.status} ${res.statusText}`, res.status, error.kind, error.field);
    }
    return res;
  }

  /** Loaded when used: most commands never open one, and every command pays for what main.ts loads. */
  async websocket(path: string): Promise<WebSocket> {
    const { default: WebSocket } = await import('ws');
    path = await this.#withOrg(path);
    return new WebSocket(`${this.url.replace(/^http/, 'ws')}${path}`, { headers: this.headers });
  }
}
