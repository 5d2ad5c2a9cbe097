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

  /**
   * One JSON request and its JSON answer, through node:http rather than fetch: fetch's first use
   * loads undici, which costs most commands more start-up time than everything else they load.
   */
  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    path = await this.#withOrg(path);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers = payload === undefined ? this.headers : { ...this.headers, 'content-type': 'application/json' };
    const url = new URL(`${this.url}${path}`);
    // getBuiltinModule, not import: an ESM import of node:http reads its lazy exports (WebSocket…), loading undici after all.
    const { request } = url.protocol === 'https:' ? process.getBuiltinModule('node:https') : process.getBuiltinModule('node:http');
    const res = await new Promise<{ status: number; statusText: string; text: string }>((resolve, reject) => {
      const req = request(url, { method, headers }, (r) => {
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('end', () => resolve({ status: r.statusCode ?? 0, statusText: r.statusMessage ?? '', text: Buffer.concat(chunks).toString('utf8') }));
        r.on('error', reject);
      });
      req.on('error', (err: NodeJS.ErrnoException) => reject(new CliError(`cannot reach Berth at ${this.url} (${err.code ?? err.message}): is \`berth up\` running?`)));
      req.end(payload);
    });
    if (res.status >= 400) throw errorFrom(res.status, res.statusText, res.text);
    if (res.status === 204 || res.text === '') return undefined as T;
    return JSON.parse(res.text) as T;
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
    if (!res.ok) throw errorFrom(res.status, res.statusText, await res.text());
    return res;
  }

  /** Loaded when used: most commands never open one, and every command pays for what main.ts loads. */
  async websocket(path: string): Promise<WebSocket> {
    const { default: WebSocket } = await import('ws');
    path = await this.#withOrg(path);
    return new WebSocket(`${this.url.replace(/^http/, 'ws')}${path}`, { headers: this.headers });
  }
}

/** An error answer as an ApiError: its kind picks the exit status; main.ts turns its field into the command's flag. */
function errorFrom(status: number, statusText: string, text: string): ApiError {
  let error: Partial<ErrorBody['error']> = { message: text };
  try {
    error = (JSON.parse(text) as ErrorBody).error ?? error;
  } catch {
    // not one of ours: show what came back
  }
  return new ApiError(error.message || `${status} ${statusText}`, status, error.kind, error.field);
}
