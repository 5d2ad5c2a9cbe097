// One environment's egress proxy: plain HTTP with absolute URIs, and CONNECT for TLS.
// It is the environment's only way out (its network namespace drops everything else).
// Each request is decided by request-filter, the name is resolved here and the
// connection goes to the very address that was checked, so DNS rebinding does not help.
// For hosts with credentials it terminates TLS (certificate from the runner's CA) and
// adds the header on the way out; other TLS is a byte tunnel it never reads. What is not
// TLS inside a CONNECT tunnel is read as HTTP, request by request, like plain HTTP.
//
// Every request it forwards is parsed (strictly) and framed again by the proxy itself
// (framing.ts), and upstream connections belong to one client connection and one set of
// credentials: no byte a client sends can become a request the proxy did not decide and
// record, or meet another request's credential.
import { lookup } from 'node:dns/promises';
import { Agent as HttpAgent, createServer, request as httpRequest, STATUS_CODES, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { connect, type BlockList, type Socket } from 'node:net';
import { rootCertificates, TLSSocket, createSecureContext, type SecureContext } from 'node:tls';
import type { CertificateAuthority } from './ca.ts';
import { bypassesUpstream, isTrusted, type EgressNetworkConfig, type UpstreamProxy } from './company.ts';
import { requestFraming, type Framing } from './framing.ts';
import { connectAnswer, connectRequest, UpstreamTlsAgent } from './upstream.ts';
import { checkAddress, decide, hostAddressesNow, normalizeHost, pathUnder } from './request-filter.ts';
import type { EgressPolicy, NetworkEvent, NetworkEventSink, NetworkUsage, PolicySource, Resolver } from './types.ts';

export interface EgressProxyOptions {
  environmentId: string;
  policies: PolicySource;
  events: NetworkEventSink;
  /** This environment's counters; the proxy adds closed connections to them (they outlive a proxy restart). */
  usage: NetworkUsage;
  resolver?: Resolver | undefined;
  /** Test escape hatch: private CIDRs that may be reached anyway (see RunnerNetworkOptions). */
  allowPrivate?: BlockList | undefined;
  /** Needed only when a policy lists credentials. */
  ca?: (() => Promise<CertificateAuthority>) | undefined;
  upstreamCa?: string | undefined;
  /** When set, connections from any other address are dropped (the environment's end of its veth). */
  clientAddress?: string | undefined;
  /** Trusted networks allowed names may resolve into, and the company's proxy allowed requests go through (company.ts). */
  egressNetwork?: EgressNetworkConfig | undefined;
}

const CONNECT_TIMEOUT_MS = 10_000;
/** What one read from the kernel returns at most on a TCP socket (libuv reads 64 KiB). */
const DOWNLOAD_BUFFER_BYTES = 64 * 1024;
/** When over-cap refusals are many, one event per this long says how many. */
const REFUSAL_EVENT_INTERVAL_MS = 1_000;
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

export const defaultResolver: Resolver = async (host) => (await lookup(host, { all: true, verbatim: true })).map((a) => a.address);

/** This host's own addresses, refreshed every few seconds: a public name may point at them. */
let hostAddressCache: { at: number; set: Set<string> } | undefined;
function hostAddresses(): ReadonlySet<string> {
  if (!hostAddressCache || Date.now() - hostAddressCache.at > 5_000) {
    hostAddressCache = { at: Date.now(), set: hostAddressesNow() };
  }
  return hostAddressCache.set;
}

/** Where an allowed request goes: the checked address, and the upstream proxy to reach it through (if any). */
type Target =
  | { ok: true; address: string; /** The address lies in a trusted network. */ trusted: boolean; hop: UpstreamProxy | undefined }
  | { ok: false; rule: string; reason: string; status: number; error?: string };

/** Where the requests inside a CONNECT tunnel the proxy reads go: over TLS (credential hosts) or plain HTTP. */
interface TunnelTarget {
  host: string;
  port: number;
  address: string;
  hop: UpstreamProxy | undefined;
  tls: boolean;
}

/** Node's parser settings for what the environment sends: strict, whatever NODE_OPTIONS says. */
const STRICT_PARSER = { insecureHTTPParser: false, requireHostHeader: false } as const;

/** How long a client connection may stay open without starting a request. */
const IDLE_BEFORE_REQUEST_MS = 10_000;

export class EgressProxy {
  readonly #o: EgressProxyOptions;
  readonly #server: Server;
  /** Serves the requests inside TLS connections the proxy terminates; never listens. */
  readonly #inner: Server;
  /**
   * Upstream connections, pooled per client connection (or tunnel) and per set of
   * credentials: a response reaches only the connection whose request asked for it, and a
   * connection that carried a credential carries no request without it. Closed with the client's.
   */
  readonly #agents = new WeakMap<Socket, Map<string, HttpAgent>>();
  readonly #openAgents = new Set<HttpAgent>();
  readonly #resolve: Resolver;
  readonly #sockets = new Set<Socket>();
  /** The CONNECT target of each tunnel the proxy reads (terminated TLS, or plain HTTP). */
  readonly #tunnelTarget = new WeakMap<Socket, TunnelTarget>();
  readonly #contexts = new Map<string, SecureContext>();
  /**
   * Connections whose framing was refused: where their next request begins is anyone's
   * guess, so what Node parses after it is neither answered nor forwarded (the 400 closes them).
   */
  readonly #spoiled = new WeakSet<Socket>();
  #refusedUnreported = 0;
  #lastRefusalEvent = 0;

  constructor(opts: EgressProxyOptions) {
    this.#o = opts;
    this.#resolve = opts.resolver ?? defaultResolver;
    // Requests with no Host header reach the handlers too, to be answered and recorded there
    // (the URL or the tunnel names the host; the proxy writes Host itself).
    this.#server = createServer({ requestTimeout: 0, headersTimeout: 30_000, ...STRICT_PARSER });
    this.#server.on('connection', (s: Socket) => this.#onConnection(s));
    // A request has begun: the wait-for-a-request timer (see #onConnection) no longer applies.
    this.#server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      req.socket.setTimeout(0);
      void this.#onRequest(req, res);
    });
    this.#server.on('connect', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      socket.setTimeout(0);
      void this.#onConnect(req, socket, head);
    });
    this.#server.on('clientError', (err: Error, socket: Socket) => this.#onClientError(err, socket));
    this.#inner = createServer({ requestTimeout: 0, ...STRICT_PARSER });
    this.#inner.on('request', (req: IncomingMessage, res: ServerResponse) => void this.#onTunnelledRequest(req, res));
    this.#inner.on('clientError', (err: Error, socket: Socket) => this.#onClientError(err, socket));
  }

  listen(port: number, host: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen({ port, host, exclusive: true }, () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
  }

  address(): { address: string; port: number } {
    const a = this.#server.address();
    if (!a || typeof a === 'string') throw new Error('the proxy is not listening');
    return { address: a.address, port: a.port };
  }

  /** Stops listening and drops every connection. */
  async close(): Promise<void> {
    const closed = new Promise<void>((r) => this.#server.close(() => r()));
    for (const s of this.#sockets) s.destroy();
    for (const a of this.#openAgents) a.destroy();
    await closed;
  }

  #policy(): EgressPolicy | undefined {
    try {
      return this.#o.policies.policyFor(this.#o.environmentId);
    } catch {
      return undefined;
    }
  }

  #record(e: Omit<NetworkEvent, 'environmentId'>): void {
    try {
      this.#o.events.record({ environmentId: this.#o.environmentId, ...e });
    } catch {
      // A failing sink must not take the proxy down; the request already happened.
    }
  }

  #onConnection(socket: Socket): void {
    const u = this.#o.usage;
    if (this.#o.clientAddress && socket.remoteAddress !== this.#o.clientAddress) {
      socket.destroy();
      return;
    }
    const max = this.#policy()?.maxConnections ?? 0;
    if (u.open >= max) {
      u.refused++;
      this.#refusedUnreported++;
      socket.destroy();
      // Ten thousand refusals make one event a second, not ten thousand.
      const now = Date.now();
      if (now - this.#lastRefusalEvent >= REFUSAL_EVENT_INTERVAL_MS) {
        this.#lastRefusalEvent = now;
        this.#record({
          at: new Date().toISOString(), kind: 'connect', host: '', port: 0, method: null, path: null, allowed: false,
          rule: 'deny:max-connections', status: null, bytesUp: 0, bytesDown: 0, durationMs: 0,
          error: `${this.#refusedUnreported} connection(s) refused: ${u.open} open, the policy allows ${max}`,
        });
        this.#refusedUnreported = 0;
      }
      return;
    }
    u.open++;
    u.connections++;
    if (u.open > u.peak) u.peak = u.open;
    this.#sockets.add(socket);
    // A connection that sends no request holds one of the environment's capped slots, and
    // the HTTP server checks its own headers timeout only every 30 s: close it sooner.
    socket.setTimeout(IDLE_BEFORE_REQUEST_MS, () => socket.destroy());
    socket.once('close', () => {
      u.open--;
      // Bytes of open connections are added when usage() is asked (see below).
      u.bytesUp += socket.bytesRead;
      u.bytesDown += socket.bytesWritten;
      this.#sockets.delete(socket);
    });
  }

  /** Counters including the connections open now. */
  usage(): NetworkUsage {
    const u = { ...this.#o.usage };
    for (const s of this.#sockets) {
      u.bytesUp += s.bytesRead;
      u.bytesDown += s.bytesWritten;
    }
    return u;
  }

  /** A plain-HTTP request, absolute URI: `GET http://host/path`. */
  async #onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.#spoiled.has(req.socket)) return void req.resume();
    const started = performance.now();
    const at = new Date().toISOString();
    let url: URL | undefined;
    try {
      url = /^http:\/\//i.test(req.url ?? '') ? new URL(req.url!) : undefined;
    } catch {
      url = undefined;
    }
    const method = req.method ?? 'GET';
    if (!url || url.username || url.password) {
      const rule = 'deny:not-a-proxy-request';
      refuse(res, 400, rule, `this is Berth's egress proxy: send absolute http:// URLs, or CONNECT for https (got ${JSON.stringify(req.url)})`);
      this.#record({ at, kind: 'http', host: '', port: 0, method, path: req.url ?? null, allowed: false, rule, status: 400, bytesUp: 0, bytesDown: 0, durationMs: performance.now() - started });
      return;
    }
    const port = url.port ? Number(url.port) : 80;
    const path = `${url.pathname}${url.search}`;
    const policy = this.#policy();
    const base = { at, kind: 'http' as const, host: normalizeHost(url.hostname), port, method, path };
    const framing = requestFraming(req);
    if (!framing.ok) {
      this.#spoiled.add(req.socket);
      refuse(res, 400, 'deny:bad-request', framing.reason);
      this.#record({ ...base, allowed: false, rule: 'deny:bad-request', status: 400, bytesUp: 0, bytesDown: 0, durationMs: performance.now() - started, error: framing.reason });
      return;
    }
    if (!policy) {
      refuse(res, 403, 'deny:no-policy', 'no network policy applies to this environment');
      this.#record({ ...base, allowed: false, rule: 'deny:no-policy', status: 403, bytesUp: 0, bytesDown: 0, durationMs: performance.now() - started });
      return;
    }
    const d = decide(policy, { kind: 'http', host: url.hostname, port, method });
    const target: Target = d.allowed ? await this.#target(d.host) : { ok: false, rule: d.rule, reason: d.reason, status: 403 };
    if (!target.ok) {
      refuse(res, target.status, target.rule, target.reason);
      this.#record({ ...base, allowed: false, rule: target.rule, status: target.status, bytesUp: 0, bytesDown: 0, durationMs: performance.now() - started, ...(target.error ? { error: target.error } : {}) });
      req.resume();
      return;
    }
    // The Host header says what the URL says, whatever the client wrote there.
    const headers = forwardHeaders(req.headers, url.host);
    const agent = this.#agentFor(req.socket, false, '', target.hop);
    this.#forward(req, res, { tls: false, host: d.host, port, address: target.address, hop: target.hop, path, headers, framing, agent, rule: withTrust(d.rule, target), at, started, kind: 'http' });
  }

  /**
   * A request inside a CONNECT tunnel the proxy reads: TLS it terminated (a host with
   * credentials), or plain HTTP. Decided like plain HTTP, method included, and recorded.
   */
  async #onTunnelledRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.#spoiled.has(req.socket)) return void req.resume();
    const started = performance.now();
    const at = new Date().toISOString();
    const t = this.#tunnelTarget.get(req.socket);
    const method = req.method ?? 'GET';
    if (!t) {
      res.destroy();
      return;
    }
    const base = { at, kind: 'http' as const, host: t.host, port: t.port, method };
    const deny = (status: number, rule: string, reason: string, path: string | null, error?: string) => {
      refuse(res, status, rule, reason);
      this.#record({ ...base, path, allowed: false, rule, status, bytesUp: 0, bytesDown: 0, durationMs: performance.now() - started, ...(error ? { error } : {}) });
    };
    // Origin form only (`/path`): the tunnel already names the host. Dot segments are
    // resolved before the prefix check, as the server will resolve them.
    let path: string;
    try {
      if (!req.url?.startsWith('/')) throw new Error('not origin-form');
      const u = new URL(`${t.tls ? 'https' : 'http'}://${t.host}${req.url}`);
      path = `${u.pathname}${u.search}`;
    } catch {
      return deny(400, 'deny:bad-path', `not a request path: ${JSON.stringify(req.url)} (inside a tunnel, send /path)`, req.url ?? null);
    }
    const framing = requestFraming(req);
    if (!framing.ok) {
      this.#spoiled.add(req.socket);
      return deny(400, 'deny:bad-request', framing.reason, path, framing.reason);
    }
    // The policy again, per request: a change applies to open connections too.
    const policy = this.#policy();
    if (!policy) return deny(403, 'deny:no-policy', 'no network policy applies to this environment', path);
    const d = decide(policy, { kind: 'http', host: t.host, port: t.port, method });
    if (!d.allowed) return deny(403, d.rule, d.reason, path);
    const defaultPort = t.tls ? 443 : 80;
    const headers = forwardHeaders(req.headers, t.port === defaultPort ? t.host : `${t.host}:${t.port}`);
    // Credentials travel over TLS only, to exactly their host, under their path prefix.
    const used: string[] = [];
    if (t.tls) {
      for (const c of policy.credentials) {
        if (normalizeHost(c.host) === t.host && pathUnder(path, c.pathPrefix)) {
          headers[c.header.toLowerCase()] = c.value;
          used.push(c.name);
        }
      }
    }
    const rule = used.length ? `${d.rule}+credential:${used.join(',')}` : d.rule;
    const agent = this.#agentFor(req.socket, t.tls, used.join(','), t.hop);
    this.#forward(req, res, { tls: t.tls, host: t.host, port: t.port, address: t.address, hop: t.hop, path, headers, framing, agent, rule, at, started, kind: 'http' });
  }

  /** The pool for this client connection, this scheme and this set of credentials (see #agents). */
  #agentFor(client: Socket, tls: boolean, credentials: string, hop: UpstreamProxy | undefined): HttpAgent {
    let pools = this.#agents.get(client);
    if (!pools) {
      const mine = new Map<string, HttpAgent>();
      pools = mine;
      this.#agents.set(client, mine);
      client.once('close', () => {
        for (const a of mine.values()) {
          a.destroy();
          this.#openAgents.delete(a);
        }
      });
    }
    const key = `${tls ? 'https' : 'http'} ${credentials} ${hop ? 'upstream' : 'direct'}`;
    let agent = pools.get(key);
    if (!agent) {
      // One connection at a time, as the client's own: a pipelined request waits its turn.
      const options = { keepAlive: true, maxSockets: 1 };
      const tlsOptions = { ...options, ...(this.#o.upstreamCa ? { ca: [...rootCertificates, this.#o.upstreamCa] } : {}) };
      agent = tls ? (hop ? new UpstreamTlsAgent(hop, CONNECT_TIMEOUT_MS, tlsOptions) : new HttpsAgent(tlsOptions)) : new HttpAgent(options);
      pools.set(key, agent);
      this.#openAgents.add(agent);
    }
    return agent;
  }

  #forward(req: IncomingMessage, res: ServerResponse, f: { tls: boolean; host: string; port: number; address: string; hop: UpstreamProxy | undefined; path: string; headers: OutgoingHttpHeaders; framing: Framing & { ok: true }; agent: HttpAgent; rule: string; at: string; started: number; kind: 'http' }): void {
    let up = 0;
    let down = 0;
    let status: number | null = null;
    let done = false;
    const finish = (error?: string) => {
      if (done) return;
      done = true;
      this.#record({ at: f.at, kind: f.kind, host: f.host, port: f.port, method: req.method ?? 'GET', path: f.path, allowed: true, rule: f.rule, status, bytesUp: up, bytesDown: down, durationMs: performance.now() - f.started, ...(error ? { error } : {}) });
    };
    // Plain HTTP through the upstream proxy: the absolute URI, to the proxy (TLS tunnels
    // through it in the agent, see UpstreamTlsAgent).
    const viaHop = f.hop && !f.tls ? f.hop : undefined;
    const options = {
      host: viaHop ? viaHop.host : f.address,
      port: viaHop ? viaHop.port : f.port,
      method: req.method,
      path: viaHop ? `http://${String(f.headers.host)}${f.path}` : f.path,
      // The body's framing is the proxy's own (forwardHeaders dropped the client's).
      headers: { ...f.headers, ...f.framing.headers, ...(viaHop?.authorization ? { 'proxy-authorization': viaHop.authorization } : {}) },
      setHost: false,
      timeout: CONNECT_TIMEOUT_MS,
      insecureHTTPParser: false,
      agent: f.agent,
    };
    const upstream = f.tls ? httpsRequest({ ...options, servername: f.host }) : httpRequest(options);
    upstream.on('timeout', () => upstream.destroy(new Error('upstream timed out')));
    upstream.on('response', (r: IncomingMessage) => {
      status = r.statusCode ?? 502;
      upstream.setTimeout(0);
      res.writeHead(status, r.statusMessage, responseHeaders(r.headers));
      r.on('data', (b: Buffer) => (down += b.length));
      r.pipe(res);
      r.on('end', () => finish());
      r.on('error', (err) => {
        finish(err.message);
        res.destroy();
      });
    });
    upstream.on('error', (err) => {
      if (status === null) {
        status = 502;
        if (!res.headersSent) refuse(res, 502, f.rule, `allowed, but ${f.host}:${f.port} could not be reached: ${err.message}`);
        else res.destroy();
      } else res.destroy();
      finish(err.message);
    });
    res.on('close', () => {
      if (!res.writableFinished) {
        upstream.destroy();
        finish('the client closed the connection');
      }
    });
    req.on('data', (b: Buffer) => (up += b.length));
    if (f.framing.body) req.pipe(upstream);
    else {
      req.resume();
      upstream.end();
    }
  }

  /** `CONNECT host:port`: a byte tunnel, or TLS terminated here when the host has credentials. */
  async #onConnect(req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    const started = performance.now();
    const at = new Date().toISOString();
    const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+):(\d{1,5})$/.exec(req.url ?? '');
    const host = normalizeHost(m?.[1] ?? (req.url ?? ''));
    const port = m ? Number(m[2]) : 0;
    const base = { at, kind: 'connect' as const, host, port, method: 'CONNECT', path: null };
    const deny = (status: number, rule: string, reason: string, error?: string) => {
      socket.end(refusal(status, rule, reason));
      this.#record({ ...base, allowed: false, rule, status, bytesUp: 0, bytesDown: 0, durationMs: performance.now() - started, ...(error ? { error } : {}) });
    };
    socket.on('error', () => {});
    if (!m) return deny(400, 'deny:bad-connect', `CONNECT wants host:port, got ${JSON.stringify(req.url)}`);
    const policy = this.#policy();
    if (!policy) return deny(403, 'deny:no-policy', 'no network policy applies to this environment');
    const d = decide(policy, { kind: 'connect', host, port, method: null });
    if (!d.allowed) return deny(403, d.rule, d.reason);
    const target = await this.#target(d.host);
    if (!target.ok) return deny(target.status, target.rule, target.reason, target.error);

    if (policy.credentials.some((c) => normalizeHost(c.host) === d.host) && this.#o.ca) {
      // Terminate TLS here: the requests inside get the credential (see #onTunnelledRequest).
      let context: SecureContext;
      try {
        context = await this.#context(d.host);
      } catch (err) {
        return deny(502, d.rule, 'the proxy could not make a certificate for this host', (err as Error).message);
      }
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      const first = await firstBytes(socket, head);
      if (!first) return;
      const t = { host: d.host, port, address: target.address, hop: target.hop };
      if (!isTls(first)) return this.#readAsHttp(socket, first, t, () => this.#record({ ...base, allowed: true, rule: `${withTrust(d.rule, target)}+http`, status: 200, bytesUp: socket.bytesRead, bytesDown: socket.bytesWritten, durationMs: performance.now() - started }));
      // The bytes read belong to the TLS handshake.
      socket.unshift(first);
      const tls = new TLSSocket(socket, { isServer: true, secureContext: context, ALPNProtocols: ['http/1.1'] });
      this.#tunnelTarget.set(tls, { ...t, tls: true });
      tls.on('error', () => tls.destroy());
      tls.once('close', () => this.#record({ ...base, allowed: true, rule: `${withTrust(d.rule, target)}+tls-terminated`, status: 200, bytesUp: socket.bytesRead, bytesDown: socket.bytesWritten, durationMs: performance.now() - started }));
      this.#inner.emit('connection', tls);
      return;
    }

    let status: number | null = null;
    let error: string | undefined;
    /** Set when the client's first bytes are not TLS: the raw connection goes, requests are read (#readAsHttp). */
    let readAsHttp = false;
    // Downloads (upstream → client) are where the bytes are, so that direction reads into
    // one buffer per tunnel instead of a fresh 64 KiB Buffer per read: pipe() there cost
    // about 3× the CPU (allocation, page faults, GC), which on a busy host is throughput.
    // The buffer is reused only once the client has taken the last chunk: a write that
    // did not complete at once still points into it, so reading pauses until that write
    // is done. Not until 'drain': that comes only past the highWaterMark, and a pending
    // tail under it would stall the tunnel for good.
    const down = Buffer.allocUnsafe(DOWNLOAD_BUFFER_BYTES);
    let waiting = false;
    const written = () => {
      // Callbacks of writes that completed at once run later too: only an empty queue resumes.
      if (waiting && socket.writableLength === 0) {
        waiting = false;
        upstream.resume();
      }
    };
    const relayDown = (n: number, buf: Buffer): boolean => {
      if (socket.destroyed) return false;
      socket.write(buf.subarray(0, n), written);
      if (socket.writableLength === 0) return true;
      waiting = true;
      return false;
    };
    const rule = withTrust(d.rule, target);
    // Through the upstream proxy, its answer to CONNECT comes first: read here, not relayed.
    const hop = target.hop;
    let answer: Buffer | null = hop ? Buffer.alloc(0) : null;
    const hopBytes = { up: 0, down: 0 };
    const onRead = (n: number, buf: Buffer): boolean => {
      if (answer === null) return relayDown(n, buf);
      answer = Buffer.concat([answer, buf.subarray(0, n)]);
      const a = connectAnswer(answer);
      if (!a) return true;
      hopBytes.down = answer.length - a.rest.length;
      answer = null;
      if (!a.ok) {
        upstream.destroy(new Error(`the upstream proxy ${hop!.display} refused it: ${a.statusLine}`));
        return false;
      }
      void established(a.rest);
      return true;
    };
    const upstream = connect({ host: hop ? hop.host : target.address, port: hop ? hop.port : port, noDelay: true, onread: { buffer: down, callback: onRead } });
    upstream.setTimeout(CONNECT_TIMEOUT_MS, () => upstream.destroy(new Error(hop ? `the upstream proxy ${hop.display} did not answer in time` : 'upstream timed out')));
    upstream.once('connect', () => {
      if (!hop) return void established(Buffer.alloc(0));
      const request = connectRequest(hop, d.host, port);
      hopBytes.up = Buffer.byteLength(request);
      upstream.write(request);
    });
    const established = async (early: Buffer) => {
      upstream.setTimeout(0);
      status = 200;
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (early.length) socket.write(early);
      // TLS is relayed unread (its methods and paths are not visible; the policy allowed the
      // host and port). Anything else would be plain HTTP past the method rule and the
      // record, or a protocol the proxy cannot check: it is read as HTTP, request by request.
      const first = await firstBytes(socket, head);
      if (!first || upstream.destroyed) return;
      if (!isTls(first)) {
        readAsHttp = true;
        upstream.destroy();
        const t = { host: d.host, port, address: target.address, hop: target.hop };
        return this.#readAsHttp(socket, first, t, () => this.#record({ ...base, allowed: true, rule: `${rule}+http`, status: 200, bytesUp: socket.bytesRead, bytesDown: socket.bytesWritten, durationMs: performance.now() - started }));
      }
      upstream.write(first);
      // No per-chunk listeners on this path: the sockets count their own bytes.
      socket.pipe(upstream);
    };
    // What pipe() did for the other direction: the server's end of stream ends the client's.
    upstream.once('end', () => socket.end());
    upstream.on('error', (err) => {
      error = err.message;
      if (status === null) {
        status = 502;
        socket.end(refusal(502, rule, `allowed, but ${d.host}:${port} could not be reached: ${err.message}`));
      } else socket.destroy();
    });
    socket.setNoDelay(true);
    socket.once('close', () => upstream.destroy());
    upstream.once('close', () => {
      if (readAsHttp) return;
      socket.destroy();
      this.#record({ ...base, allowed: true, rule, status, bytesUp: upstream.bytesWritten - hopBytes.up, bytesDown: upstream.bytesRead - hopBytes.down, durationMs: performance.now() - started, ...(error ? { error } : {}) });
    });
  }

  /** A CONNECT tunnel whose first bytes are not TLS: its requests go to #onTunnelledRequest as plain HTTP. */
  #readAsHttp(socket: Socket, first: Buffer, t: Omit<TunnelTarget, 'tls'>, closed: () => void): void {
    socket.unshift(first);
    this.#tunnelTarget.set(socket, { ...t, tls: false });
    socket.once('close', closed);
    this.#inner.emit('connection', socket);
    socket.resume();
  }

  /**
   * What Node's parser refused — both Content-Length and Transfer-Encoding, a bad
   * Transfer-Encoding, obs-fold, bare LF, bad characters — gets a 400 naming the rule and
   * an event; resets and timeouts just close.
   */
  #onClientError(err: NodeJS.ErrnoException & { reason?: string }, socket: Socket): void {
    if (!err.code?.startsWith('HPE_')) {
      socket.destroy();
      return;
    }
    const reason = `the request cannot be parsed unambiguously (${err.reason ?? err.message}); send one well-formed HTTP/1.1 request with CRLF line ends and either Content-Length or Transfer-Encoding: chunked`;
    const t = this.#tunnelTarget.get(socket);
    this.#record({
      at: new Date().toISOString(), kind: 'http', host: t?.host ?? '', port: t?.port ?? 0, method: null, path: null, allowed: false,
      rule: 'deny:bad-request', status: 400, bytesUp: 0, bytesDown: 0, durationMs: 0, error: String(err.code),
    });
    // As Node itself does: answer only if no response to an earlier request has begun.
    const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
    if (socket.writable && !inFlight?.headersSent) socket.end(refusal(400, 'deny:bad-request', reason), () => socket.destroy());
    else socket.destroy();
  }

  /** The address to connect to for `host`: resolved here, checked, and the one used. */
  async #target(host: string): Promise<Target> {
    let addresses: string[];
    try {
      addresses = await this.#resolve(host);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      return { ok: false, rule: 'error:resolve', reason: `${host} could not be resolved (${code})`, status: 502, error: String(code) };
    }
    let firstRefusal: string | undefined;
    const company = this.#o.egressNetwork;
    const trusted = company?.trusted ? (a: string) => isTrusted(company.trusted, a) : undefined;
    for (const address of addresses) {
      const refused = checkAddress(address, { hostAddresses: hostAddresses(), allowPrivate: this.#o.allowPrivate, trusted });
      if (refused) {
        firstRefusal ??= refused;
        continue;
      }
      const hop = company?.upstreamProxy && !bypassesUpstream(company.noProxy, host, address) ? company.upstreamProxy : undefined;
      return { ok: true, address, trusted: trusted?.(address) ?? false, hop };
    }
    return {
      ok: false,
      rule: firstRefusal ?? 'error:resolve',
      reason: firstRefusal
        ? `${host} resolves to ${addresses.join(', ')}: private, loopback, link-local or this host's addresses are not reachable${company?.trustedNetworks.length ? ` (trusted networks: ${company.trustedNetworks.join(', ')})` : ''}`
        : `${host} has no addresses`,
      status: firstRefusal ? 403 : 502,
    };
  }

  async #context(host: string): Promise<SecureContext> {
    let ctx = this.#contexts.get(host);
    if (!ctx) {
      const ca = await this.#o.ca!();
      const leaf = ca.leaf(host);
      ctx = createSecureContext({ cert: leaf.cert, key: leaf.key });
      this.#contexts.set(host, ctx);
    }
    return ctx;
  }
}

/** The rule of a request to an address in a trusted network says so: it reached private space. */
function withTrust(rule: string, target: Target): string {
  return target.ok && target.trusted ? `${rule}+trusted-network` : rule;
}

/** The client's headers less hop-by-hop ones and its framing (the proxy frames the body itself), with `host`. */
function forwardHeaders(incoming: IncomingHttpHeaders, host: string): OutgoingHttpHeaders {
  const drop = new Set([...HOP_BY_HOP, 'content-length']);
  for (const name of String(incoming.connection ?? '').split(',')) drop.add(name.trim().toLowerCase());
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(incoming)) if (v !== undefined && !drop.has(k)) out[k] = v;
  out.host = host;
  return out;
}

function responseHeaders(incoming: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const drop = new Set(HOP_BY_HOP);
  for (const name of String(incoming.connection ?? '').split(',')) drop.add(name.trim().toLowerCase());
  for (const [k, v] of Object.entries(incoming)) if (v !== undefined && !drop.has(k)) out[k] = v;
  return out;
}

function refusalBody(rule: string, reason: string): string {
  return `Berth egress proxy refused this request: ${reason}.\nrule: ${rule}\n`;
}

function refuse(res: ServerResponse, status: number, rule: string, reason: string): void {
  const body = refusalBody(rule, reason);
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), 'x-berth-rule': rule, connection: 'close' });
  res.end(body);
}

/**
 * The first bytes the client sends into a tunnel (those after the CONNECT, if any), or
 * null if it closes first. The socket is left paused, nothing consumed but what is returned.
 */
function firstBytes(socket: Socket, head: Buffer): Promise<Buffer | null> {
  if (head.length) return Promise.resolve(head);
  return new Promise((resolve) => {
    const onData = (b: Buffer) => {
      socket.off('close', onClose);
      socket.pause();
      resolve(b);
    };
    const onClose = () => {
      socket.off('data', onData);
      resolve(null);
    };
    socket.once('data', onData);
    socket.once('close', onClose);
  });
}

/** A TLS record starts with content type 22 (handshake): a byte no HTTP request starts with. */
const isTls = (first: Buffer) => first[0] === 0x16;

/** A whole HTTP/1.1 response for a CONNECT the proxy refuses. */
function refusal(status: number, rule: string, reason: string): string {
  const body = refusalBody(rule, reason);
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-berth-rule: ${rule}\r\nconnection: close\r\n\r\n${body}`;
}
