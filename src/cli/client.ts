import WebSocket from 'ws';
import type { ErrorBody } from '../shared/errors.ts';
import type { ClientConfig } from '../shared/client-config.ts';
import { CliError } from './output.ts';

/** A thin typed client for the control plane's HTTP API. */
export class ApiClient {
  readonly url: string;
  readonly #token: string;
  readonly #org: string | undefined;

  constructor(config: ClientConfig) {
    this.url = config.url;
    this.#token = config.token;
    this.#org = config.org;
  }

  /** The API path of something in the chosen org: `/api/orgs/ORG/<rest>`. */
  orgPath(rest: string): string {
    if (!this.#org) throw new CliError('no org chosen: pass --org NAME or set BERTH_ORG (`berth org list` shows yours)');
    return `/api/orgs/${encodeURIComponent(this.#org)}/${rest}`;
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
    try {
      res = await fetch(`${this.url}${path}`, { ...init, headers: { ...this.headers, ...(init.headers as Record<string, string>) } });
    } catch (err) {
      throw new CliError(`cannot reach Berth at ${this.url} (${(err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message}): is \`berth up\` running?`);
    }
    if (!res.ok) {
      const text = await res.text();
      let message = text;
      try {
        message = (JSON.parse(text) as ErrorBody).error.message;
      } catch {
        // not one of ours: show what came back
      }
      throw new CliError(message || `${res.status} ${res.statusText}`);
    }
    return res;
  }

  websocket(path: string): WebSocket {
    return new WebSocket(`${this.url.replace(/^http/, 'ws')}${path}`, { headers: this.headers });
  }
}
