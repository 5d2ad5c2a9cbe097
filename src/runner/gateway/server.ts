// The LLM gateway: an OpenAI- and Anthropic-compatible HTTP endpoint for the agents
// that run in environments. An agent presents its task's token; the gateway checks it
// and the task's token budget, forwards the call to the provider with the real key,
// streams the answer back with the key scrubbed from it, and reports the call's usage
// to whoever issued the token.
import { chmod, lstat, rm } from 'node:fs/promises';
import {
  Agent as HttpAgent,
  createServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type Server,
  type ServerResponse,
} from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { isIP, type AddressInfo, type LookupFunction } from 'node:net';
import { Transform, pipeline, type Duplex } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import type { Logger } from 'pino';
import { Redactor } from '../../shared/redact.ts';
import { tableCost, type CostFn } from './cost.ts';
import { budgetSpent, Grants, type Grant, type IssuedToken, type IssueOptions } from './grants.ts';
import { ERROR_STATUS, errorBody, isObject, NO_TOKENS, prepareRequest, ROUTES, splitPath, type GatewayError, type Route, type TokenCounts } from './protocols.ts';
import { ResponseReport } from './report.ts';
import { PROVIDER_NAME, upstreamsFromEnv, upstreamUrl, type Provider, type Upstream, type Upstreams } from './upstreams.ts';
import { upstreamFor, upstreamProxyUrl, type HostUpstream } from '../../forges/upstream.ts';

export interface GatewayOptions {
  /** Default: from OPENAI_API_KEY / OPENAI_BASE_URL and ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL. */
  upstreams?: Upstreams | undefined;
  logger: Logger;
  /** Prices each call (default: the agent's price table, BERTH_MODEL_PRICE overriding it). */
  cost?: CostFn | undefined;
  /** The largest request body accepted (default 10 MiB). */
  maxBodyBytes?: number | undefined;
  /** The company's outbound proxy (BERTH_EGRESS_UPSTREAM_PROXY): provider calls go through it unless NO_PROXY names the provider. */
  upstreamProxy?: HostUpstream | undefined;
}

export const MAX_BODY_BYTES = 10 * 1024 * 1024;

// Hop-by-hop headers describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade'];
// Never forwarded upstream: the task's own credentials, what the gateway sets itself,
// and what would pick an organisation or project of the real account.
const DROP_REQUEST = new Set([...HOP_BY_HOP, 'host', 'content-length', 'expect', 'authorization', 'x-api-key', 'accept-encoding', 'cookie', 'openai-organization', 'openai-project']);
const DROP_RESPONSE = new Set([...HOP_BY_HOP, 'content-length', 'set-cookie']);

const ANTHROPIC_VERSION = '2023-06-01';
/** Recorded as a call's status when the agent hung up before the provider answered (nginx's choice). */
const CLIENT_LEFT = 499;

export class LlmGateway {
  readonly #upstreams: Upstreams;
  readonly #log: Logger;
  readonly #cost: CostFn;
  readonly #maxBody: number;
  readonly #grants = new Grants();
  /** Removes every upstream key (and the encodings of it tools print) from what is sent back. */
  readonly #redactor: Redactor;
  /** For a grant with upstreams of its own: the gateway's keys and its own. */
  readonly #grantRedactors = new WeakMap<Grant, Redactor>();
  readonly #servers = new Set<Server>();
  /** The server for connections handed in by accept(). */
  #accepting: Server | undefined;
  readonly #http = new HttpAgent({ keepAlive: true });
  readonly #https = new HttpsAgent({ keepAlive: true });
  /** Through the company's proxy: node's agents speak CONNECT (https) and absolute URIs (http), with its credentials. */
  readonly #proxied: { upstream: HostUpstream; http: HttpAgent; https: HttpsAgent } | undefined;

  constructor(opts: GatewayOptions) {
    this.#upstreams = opts.upstreams ?? upstreamsFromEnv();
    this.#log = opts.logger;
    this.#cost = opts.cost ?? tableCost();
    this.#maxBody = opts.maxBodyBytes ?? MAX_BODY_BYTES;
    const hop = opts.upstreamProxy?.upstreamProxy;
    if (opts.upstreamProxy && hop) {
      // NO_PROXY is decided per call (bypassesUpstream), not by the agent.
      const url = upstreamProxyUrl(hop);
      const proxyEnv = { HTTP_PROXY: url, HTTPS_PROXY: url, NO_PROXY: '' };
      this.#proxied = { upstream: opts.upstreamProxy, http: new HttpAgent({ keepAlive: true, proxyEnv }), https: new HttpsAgent({ keepAlive: true, proxyEnv }) };
    }
    this.#redactor = new Redactor(Object.entries(this.#upstreams).map(([provider, u]) => ({ name: `${provider}-api-key`, value: u.apiKey })));
  }

  /** Task tokens issued and not yet revoked (a metric). */
  get outstandingTokens(): number {
    return this.#grants.outstanding;
  }

  /** A token for one task's agent. Revoke it when the task ends. */
  issue(opts: IssueOptions): IssuedToken {
    return this.#grants.issue(opts);
  }

  /**
   * Serves on a unix socket at `path` (anything there is replaced), mode 0666 so the
   * environment's processes, whatever uid they map to, can connect: the socket grants
   * nothing without a task token. The directory must not be writable from inside.
   * Returns a function that stops this listener and cuts its connections.
   */
  async listenUnix(path: string): Promise<() => Promise<void>> {
    await rm(path, { force: true });
    const server = this.#newServer();
    await listen(server, { path });
    try {
      const st = await lstat(path);
      if (!st.isSocket()) throw new Error(`${path} is not the gateway's socket`);
      await chmod(path, 0o666);
    } catch (err) {
      await this.#stop(server);
      throw err;
    }
    return async () => {
      await this.#stop(server);
      await rm(path, { force: true });
    };
  }

  /**
   * Serves one connection that arrived some other way: a runner's socket in an environment
   * (Runner.serveSocket), local or relayed from a runner on another host.
   */
  accept(connection: Duplex): void {
    this.#accepting ??= this.#newServer();
    this.#accepting.emit('connection', connection);
  }

  /** Serves on TCP (host default 127.0.0.1; port 0 picks one). */
  async listenTcp(port: number, host = '127.0.0.1'): Promise<{ url: string; close: () => Promise<void> }> {
    const server = this.#newServer();
    await listen(server, { port, host });
    const address = server.address() as AddressInfo;
    const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    return { url: `http://${shown}:${address.port}`, close: () => this.#stop(server) };
  }

  /** Stops every listener, cuts calls under way and revokes every token. */
  async close(): Promise<void> {
    this.#grants.revokeAll();
    await Promise.all([...this.#servers].map((s) => this.#stop(s)));
    this.#http.destroy();
    this.#https.destroy();
    this.#proxied?.http.destroy();
    this.#proxied?.https.destroy();
  }

  #newServer(): Server {
    const server = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        this.#log.error({ err }, 'llm gateway: request failed');
        if (!res.headersSent) sendError(res, 'openai', 'internal', 'The LLM gateway failed on this request; see the runner\'s log.');
        else res.destroy();
      });
    });
    this.#servers.add(server);
    return server;
  }

  async #stop(server: Server): Promise<void> {
    if (server === this.#accepting) this.#accepting = undefined;
    this.#servers.delete(server);
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    const url = new URL(req.url ?? '/', 'http://gateway');
    const { provider, rest } = splitPath(url.pathname);
    const fail = (error: GatewayError, message: string) => sendError(res, provider, error, message);

    const candidates = ROUTES.filter((r) => r.provider === provider && r.path === rest);
    const route = candidates.find((r) => r.method === req.method);
    if (!route) {
      if (candidates.length > 0) return fail('method_not_allowed', `${url.pathname} takes ${candidates.map((r) => r.method).join(', ')}, not ${req.method}.`);
      const served = ROUTES.map((r) => `${r.method} /${r.provider}${r.path}`).join(', ');
      return fail('not_found', `The LLM gateway has no ${req.method} ${url.pathname}. It serves ${served}.`);
    }
    const grant = presentedTokens(req.headers).map((t) => this.#grants.find(t)).find((g) => g !== undefined);
    if (!grant) {
      return fail('unauthorized', 'Unknown or revoked token. The LLM gateway takes the token Berth issued to this task (as "Authorization: Bearer TOKEN" or "x-api-key: TOKEN"); it stops working when the task ends.');
    }
    const upstream = grant.upstreams?.[provider] ?? this.#upstreams[provider];
    if (!upstream) {
      return fail('no_upstream', `The LLM gateway has no ${PROVIDER_NAME[provider]} provider configured: set ${provider.toUpperCase()}_API_KEY for the runner.`);
    }
    if (route.api && budgetSpent(grant)) {
      const used = grant.used.inputTokens + grant.used.outputTokens;
      return fail('budget_spent', `This task's token budget is spent: it has used ${used} of its ${grant.maxTokens} tokens, and the LLM gateway refuses its further model calls.`);
    }

    let body: Buffer = Buffer.alloc(0);
    if (route.method === 'POST') {
      const read = await readBody(req, this.#maxBody);
      if (read === undefined) {
        res.setHeader('connection', 'close');
        return fail('too_large', `The request body is larger than the LLM gateway's limit of ${this.#maxBody} bytes.`);
      }
      body = read;
    }
    let stream = false;
    let asked: string | undefined;
    if (route.api) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(body.toString('utf8'));
      } catch {
        return fail('bad_request', 'The request body is not JSON.');
      }
      if (!isObject(parsed)) return fail('bad_request', 'The request body must be a JSON object.');
      const prepared = prepareRequest(route.api, parsed);
      stream = prepared.stream;
      asked = typeof parsed.model === 'string' ? parsed.model : undefined;
      if (prepared.body !== parsed) body = Buffer.from(JSON.stringify(prepared.body));
    }
    this.#forward({ req, res, route, grant, upstream, body, url, started, stream, asked, redactor: this.#redactorFor(grant) });
  }

  #redactorFor(grant: Grant): Redactor {
    if (!grant.upstreams) return this.#redactor;
    let r = this.#grantRedactors.get(grant);
    if (!r) {
      const keys = [...Object.entries(this.#upstreams), ...Object.entries(grant.upstreams)].map(([provider, u]) => ({ name: `${provider}-api-key`, value: u.apiKey }));
      r = new Redactor(keys);
      this.#grantRedactors.set(grant, r);
    }
    return r;
  }

  #forward(c: Call): void {
    const { req, res, route, upstream } = c;
    const target = upstreamUrl(route.provider, upstream, route.path, c.url.search);
    const secure = target.protocol === 'https:';
    // Through the company's proxy the proxy resolves the name, so the checked address is not pinned.
    const host = target.hostname.replace(/^\[|\]$/g, '');
    const proxied = this.#proxied && upstreamFor(this.#proxied.upstream, host, upstream.address ?? (isIP(host) ? host : undefined)) ? this.#proxied : undefined;
    const up = (secure ? httpsRequest : httpRequest)(target, {
      method: route.method,
      headers: requestHeaders(req.headers, route.provider, upstream.apiKey, c.body.length),
      agent: proxied ? (secure ? proxied.https : proxied.http) : secure ? this.#https : this.#http,
      ...(upstream.address && !proxied ? { lookup: pinnedLookup(upstream.address) } : {}),
    });

    let status = ERROR_STATUS.upstream_failed;
    let report: ResponseReport | undefined;
    let answered = false;
    let recorded = false;
    // Every way a call ends closes the response: recorded exactly once, from there.
    res.once('close', () => {
      if (!res.writableFinished) {
        if (!answered) status = CLIENT_LEFT;
        up.destroy();
      }
      if (!route.api || recorded) return;
      recorded = true;
      this.#record(c, status, report?.end());
    });
    up.on('response', (upRes) => {
      answered = true;
      status = upRes.statusCode ?? ERROR_STATUS.upstream_failed;
      try {
        report = this.#passOn(c, upRes);
      } catch (err) {
        // A throw from an event handler would take the runner down: this call goes instead.
        this.#log.error({ err, task: c.grant.taskId }, 'llm gateway: cannot pass an answer on');
        upRes.destroy();
        res.destroy();
      }
    });
    up.on('error', (err) => {
      if (res.headersSent || res.destroyed) return void res.destroy();
      this.#log.warn({ err: err.message, provider: route.provider, task: c.grant.taskId }, 'llm gateway: provider unreachable');
      sendError(res, route.provider, 'upstream_failed', `The LLM gateway could not reach ${PROVIDER_NAME[route.provider]}: ${err.message}`);
    });
    up.end(c.body);
  }

  /** Streams the provider's answer to the agent, key scrubbed; returns what reads its usage (for a model call). */
  #passOn(c: Call, upRes: IncomingMessage): ResponseReport | undefined {
    const { res, route } = c;
    const report = route.api ? new ResponseReport(route.api, upRes.headers['content-type']) : undefined;
    const encoding = upRes.headers['content-encoding']?.trim().toLowerCase() || 'identity';
    const decoder = decoderFor(encoding);
    // An encoding the gateway cannot decode (it asked for none) passes through unread.
    const readable = decoder !== undefined || encoding === 'identity';
    res.writeHead(upRes.statusCode ?? ERROR_STATUS.upstream_failed, responseHeaders(upRes.headers, decoder !== undefined, c.redactor));
    // Status and headers now: a stream's first event may be a while coming.
    res.flushHeaders();
    const redacting = c.redactor.stream();
    const pass = new Transform({
      transform(chunk: Buffer, _enc, done) {
        report?.push(chunk);
        const text = redacting.push(chunk);
        if (text) this.push(text);
        done();
      },
      flush(done) {
        const text = redacting.flush();
        if (text) this.push(text);
        done();
      },
    });
    const stages: (NodeJS.ReadableStream | NodeJS.WritableStream | Duplex)[] = readable ? [upRes, ...(decoder ? [decoder] : []), pass, res] : [upRes, res];
    // Either end going away (the agent hanging up, the provider failing) tears down the other.
    pipeline(stages, (err) => {
      if (err && !res.writableFinished) this.#log.debug({ err: err.message, task: c.grant.taskId }, 'llm gateway: call cut short');
    });
    return report;
  }

  #record(c: Call, status: number, report: { model: string | undefined; tokens: TokenCounts | undefined } | undefined): void {
    const tokens = report?.tokens ?? NO_TOKENS;
    const model = report?.model ?? c.asked ?? '';
    const provider = c.route.provider;
    let costUsd = 0;
    try {
      costUsd = this.#cost(provider, model, tokens);
    } catch (err) {
      this.#log.warn({ err, provider, model }, 'llm gateway: cannot price a call');
    }
    const usage = { inputTokens: tokens.inputTokens, outputTokens: tokens.outputTokens, costUsd };
    const used = c.grant.used;
    used.inputTokens += usage.inputTokens;
    used.outputTokens += usage.outputTokens;
    used.costUsd += usage.costUsd;
    const durationMs = Math.round(performance.now() - c.started);
    if (status < 300 && !report?.tokens) this.#log.warn({ task: c.grant.taskId, provider, model }, 'llm gateway: the provider reported no usage for a call; the task\'s budget cannot count it');
    this.#log.debug({ task: c.grant.taskId, provider, model, status, ...usage, durationMs }, 'llm gateway call');
    try {
      c.grant.onCall({
        taskId: c.grant.taskId,
        provider,
        model,
        usage,
        cache: { readTokens: tokens.cacheReadTokens, writeTokens: tokens.cacheWriteTokens },
        stream: c.stream,
        status,
        durationMs,
      });
    } catch (err) {
      this.#log.warn({ err, task: c.grant.taskId }, 'llm gateway: onCall failed');
    }
  }

}

function responseHeaders(headers: IncomingHttpHeaders, decoded: boolean, redactor: Redactor): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const drop = droppedByConnection(headers);
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || DROP_RESPONSE.has(name) || drop.has(name) || (decoded && name === 'content-encoding')) continue;
    out[name] = Array.isArray(value) ? value.map((v) => redactor.redact(v)) : redactor.redact(value);
  }
  return out;
}

/** One model call on its way through. */
interface Call {
  req: IncomingMessage;
  res: ServerResponse;
  route: Route;
  grant: Grant;
  upstream: Upstream;
  body: Buffer;
  url: URL;
  started: number;
  stream: boolean;
  /** The model the request asked for. */
  asked: string | undefined;
  /** Takes every key this call could carry out of what goes back. */
  redactor: Redactor;
}

/** A DNS lookup that always answers `address`, in either of the forms node asks for. */
function pinnedLookup(address: string): LookupFunction {
  const family = isIP(address);
  return ((_host: string, opts: { all?: boolean }, cb: (...args: unknown[]) => void) => {
    if (opts?.all) cb(null, [{ address, family }]);
    else cb(null, address, family);
  }) as unknown as LookupFunction;
}

function listen(server: Server, at: { path: string } | { port: number; host: string }): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(at, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

function sendError(res: ServerResponse, provider: Provider, error: GatewayError, message: string): void {
  const status = ERROR_STATUS[error];
  const payload = JSON.stringify(errorBody(provider, error, message));
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(payload),
    // The providers' SDKs honour this: asking again will not help (a 5xx may).
    ...(status < 500 ? { 'x-should-retry': 'false' } : {}),
  });
  res.end(payload);
}

/** The tokens a request offers, in the two ways the protocols' clients send a key. */
function presentedTokens(headers: IncomingHttpHeaders): string[] {
  const out: string[] = [];
  const bearer = /^Bearer\s+(\S+)\s*$/i.exec(headers.authorization ?? '');
  if (bearer?.[1]) out.push(bearer[1]);
  const key = headers['x-api-key'];
  if (typeof key === 'string' && key.trim()) out.push(key.trim());
  return out;
}

/** The body, or undefined once it passes `max` bytes (the rest is left unread). */
function readBody(req: IncomingMessage, max: number): Promise<Buffer | undefined> {
  const declared = Number(req.headers['content-length']);
  if (declared > max) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        req.off('data', onData);
        req.pause();
        resolve(undefined);
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('error', reject);
  });
}

function droppedByConnection(headers: IncomingHttpHeaders): Set<string> {
  const listed = headers.connection;
  return new Set(typeof listed === 'string' ? listed.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean) : []);
}

function requestHeaders(headers: IncomingHttpHeaders, provider: Provider, apiKey: string, length: number): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const drop = droppedByConnection(headers);
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !DROP_REQUEST.has(name) && !drop.has(name)) out[name] = value;
  }
  if (provider === 'openai') {
    out.authorization = `Bearer ${apiKey}`;
  } else {
    out['x-api-key'] = apiKey;
    out['anthropic-version'] ??= ANTHROPIC_VERSION;
  }
  if (length > 0) {
    out['content-length'] = length;
    out['content-type'] ??= 'application/json';
  }
  // The gateway reads the answer for its usage; if a provider compresses anyway, it is decoded.
  out['accept-encoding'] = 'identity';
  return out;
}

function decoderFor(encoding: string): Duplex | undefined {
  switch (encoding) {
    case 'gzip':
    case 'x-gzip':
      return createGunzip();
    case 'deflate':
      return createInflate();
    case 'br':
      return createBrotliDecompress();
    default:
      return undefined;
  }
}
