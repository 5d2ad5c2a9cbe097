// The only way out for a registry pull of a registry nobody listed: skopeo runs in an
// empty network namespace (pull-sandbox.ts) whose one listener leads here, over a unix
// socket. Every connection skopeo makes — the registry, the token realm its
// WWW-Authenticate names, the blob store it is redirected to — is checked against the
// egress proxy's address rules (checkAddress) and connected to the address that was
// checked, so a name cannot be rebound between check and connect. Bytes from upstream are
// counted against the image's size limit.
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, isIP, type BlockList, type Socket } from 'node:net';
import { checkAddress, hostAddressesNow } from '../network/request-filter.ts';

export interface PullProxyOptions {
  /** Test escape hatch, like the egress proxy's allowPrivateAddresses. */
  allowPrivate?: BlockList | undefined;
  resolve: (host: string) => Promise<string[]>;
  /** The most bytes all upstream connections together may send. */
  maxBytes: number;
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

  /** The address to connect to for `host`, or undefined (recorded) when the rules refuse it. Fails closed. */
  async #address(host: string, port: number): Promise<string | undefined> {
    const bare = host.replace(/^\[(.*)\]$/, '$1');
    const addresses = isIP(bare) ? [bare] : await this.#o.resolve(bare).catch(() => [] as string[]);
    const hostAddresses = hostAddressesNow();
    if (addresses.length === 0 || addresses.some((a) => checkAddress(a, { hostAddresses, allowPrivate: this.#o.allowPrivate }) !== null)) {
      this.refused.push(`${host}:${port}`);
      return undefined;
    }
    return addresses[0];
  }

  async #tunnel(req: IncomingMessage, client: Socket, head: Buffer): Promise<void> {
    const target = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(req.url ?? '');
    const address = target && (await this.#address(target[1]!, Number(target[2])));
    if (!target || !address) {
      client.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
      return;
    }
    const upstream = this.#track(connect(Number(target[2]), address));
    upstream.once('connect', () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    upstream.on('data', (chunk: Buffer) => this.#count(chunk.length));
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    client.on('close', () => upstream.destroy());
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
    const address = await this.#address(url.hostname, port);
    if (!address) {
      res.writeHead(403, { connection: 'close' }).end();
      return;
    }
    const upstream = request({ host: address, port, method: req.method, path: `${url.pathname}${url.search}`, headers: { ...req.headers, host: url.host } }, (answer) => {
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
