// The only way out for a registry pull of a registry nobody listed: skopeo runs in an
// empty network namespace (pull-sandbox.ts) whose one listener leads here, over a unix
// socket. Every connection skopeo makes — the registry, the token realm its
// WWW-Authenticate names, the blob store it is redirected to — is checked against the
// egress proxy's address rules (checkAddress) and connected to the address that was
// checked, so a name cannot be rebound between check and connect. Bytes from upstream are
// counted against the image's size limit. On a company network (company.ts) registries in
// its trusted networks pass the check, and every connection the check let through goes on
// through the company's upstream proxy (CONNECT by name, as the egress proxy does), unless
// its no-proxy list names the destination.
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, isIP, type BlockList, type Socket } from 'node:net';
import { bypassesUpstream, isTrusted, type EgressNetworkConfig, type UpstreamProxy } from '../network/company.ts';
import { checkAddress, hostAddressesNow } from '../network/request-filter.ts';
import { openTunnel } from '../network/upstream.ts';

const CONNECT_TIMEOUT_MS = 30_000;

export interface PullProxyOptions {
  /** Test escape hatch, like the egress proxy's allowPrivateAddresses. */
  allowPrivate?: BlockList | undefined;
  resolve: (host: string) => Promise<string[]>;
  /** The most bytes all upstream connections together may send. */
  maxBytes: number;
  /** Trusted networks and the upstream proxy; none when absent. */
  egressNetwork?: EgressNetworkConfig | undefined;
}

/** Where a checked connection goes: the address itself, or the upstream proxy asked for the name. */
interface Route {
  address: string;
  hop: UpstreamProxy | undefined;
}

export class PullProxy {
  /** Destinations refused, for the error message: `host:port`. */
  readonly refused: string[] = [];
  /** Set once more than maxBytes came from upstream. */
  overLimit = false;
  readonly #server: Server;
  readonly #o: PullProxyOptions;
  readonly #sockets = new Set<Socket>();
  #received = 0;

  private constructor(o: PullProxyOptions) {
    this.#o = o;
    this.#server = createServer((req, res) => void this.#forward(req, res));
    this.#server.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => void this.#tunnel(req, client, head));
    this.#server.on('connection', (socket: Socket) => this.#track(socket));
  }

  static async listen(socketPath: string, o: PullProxyOptions): Promise<PullProxy> {
    const proxy = new PullProxy(o);
    await new Promise<void>((resolve, reject) => proxy.#server.once('error', reject).listen(socketPath, resolve));
    return proxy;
  }

  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise((resolve) => this.#server.close(resolve));
  }

  /** Where to connect for `host`, or undefined (recorded) when the rules refuse it. Fails closed. */
  async #route(host: string, port: number): Promise<Route | undefined> {
    const bare = host.replace(/^\[(.*)\]$/, '$1');
    const addresses = isIP(bare) ? [bare] : await this.#o.resolve(bare).catch(() => [] as string[]);
    const hostAddresses = hostAddressesNow();
    const company = this.#o.egressNetwork;
    const trusted = company?.trusted ? (a: string) => isTrusted(company.trusted, a) : undefined;
    if (addresses.length === 0 || addresses.some((a) => checkAddress(a, { hostAddresses, allowPrivate: this.#o.allowPrivate, trusted }) !== null)) {
      this.refused.push(`${host}:${port}`);
      return undefined;
    }
    const address = addresses[0]!;
    const hop = company?.upstreamProxy && !bypassesUpstream(company.noProxy, bare, address) ? company.upstreamProxy : undefined;
    return { address, hop };
  }

  /** A connection to `host:port` by the route: directly to the checked address, or a tunnel through the upstream proxy. */
  async #open(host: string, port: number, route: Route): Promise<Socket> {
    if (route.hop) return openTunnel(route.hop, host.replace(/^\[(.*)\]$/, '$1'), port, CONNECT_TIMEOUT_MS);
    const socket = connect(port, route.address);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return socket;
  }

  async #tunnel(req: IncomingMessage, client: Socket, head: Buffer): Promise<void> {
    const target = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(req.url ?? '');
    const route = target && (await this.#route(target[1]!, Number(target[2])));
    if (!target || !route) {
      client.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
      return;
    }
    client.on('error', () => {});
    let upstream: Socket;
    try {
      upstream = this.#track(await this.#open(target[1]!, Number(target[2]), route));
    } catch {
      client.end('HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
      return;
    }
    if (client.destroyed) return void upstream.destroy();
    client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (head.length) upstream.write(head);
    upstream.on('data', (chunk: Buffer) => this.#count(chunk.length));
    upstream.on('error', () => client.destroy());
    upstream.on('close', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.pipe(client);
    client.pipe(upstream);
    upstream.resume();
  }

  /** Plain-HTTP requests (an http:// token realm), sent with an absolute URL as to any proxy. */
  async #forward(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let url: URL;
    try {
      url = new URL(req.url ?? '');
      if (url.protocol !== 'http:') throw new Error('not http');
    } catch {
      res.writeHead(400, { connection: 'close' }).end();
      return;
    }
    const port = Number(url.port || 80);
    const route = await this.#route(url.hostname, port);
    if (!route) {
      res.writeHead(403, { connection: 'close' }).end();
      return;
    }
    // Through the upstream proxy: the absolute URL, as to any proxy, with its credentials.
    const hop = route.hop;
    const where = hop
      ? { host: hop.host, port: hop.port, path: url.href, headers: { ...req.headers, host: url.host, ...(hop.authorization && { 'proxy-authorization': hop.authorization }) } }
      : { host: route.address, port, path: `${url.pathname}${url.search}`, headers: { ...req.headers, host: url.host } };
    const upstream = request({ ...where, method: req.method }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.on('data', (chunk: Buffer) => this.#count(chunk.length));
      answer.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  }

  #count(bytes: number): void {
    this.#received += bytes;
    if (this.#received <= this.#o.maxBytes || this.overLimit) return;
    this.overLimit = true;
    for (const socket of this.#sockets) socket.destroy();
  }

  #track(socket: Socket): Socket {
    this.#sockets.add(socket);
    socket.on('close', () => this.#sockets.delete(socket));
    return socket;
  }
}
