// A company's outbound proxy, for the upstream-proxy tests: CONNECT tunnels and absolute-URI
// plain HTTP, Basic Proxy-Authorization required when `credentials` is set (407 otherwise),
// names resolved by the test's table. It counts and lists what it forwarded, and what it refused.
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';

export interface Forwarded {
  kind: 'connect' | 'http';
  /** `host:port` for CONNECT, the absolute URI for plain HTTP. */
  target: string;
  method: string;
}

export interface ForwardProxy {
  port: number;
  forwarded: Forwarded[];
  /** Requests refused for missing or wrong credentials. */
  refused: number;
  close(): Promise<void>;
}

export async function startForwardProxy(o: { credentials?: string; names: Record<string, string[]> }): Promise<ForwardProxy> {
  const forwarded: Forwarded[] = [];
  const sockets = new Set<Socket>();
  let refused = 0;
  const expected = o.credentials ? `Basic ${Buffer.from(o.credentials).toString('base64')}` : undefined;
  const authorized = (req: IncomingMessage) => !expected || req.headers['proxy-authorization'] === expected;
  const resolve = (host: string) => o.names[host]?.[0] ?? host;
  const server: Server = createServer((req, res) => {
    if (!authorized(req)) {
      refused++;
      res.writeHead(407, { 'proxy-authenticate': 'Basic realm="corp"', 'content-length': 0 });
      return void res.end();
    }
    let url: URL;
    try {
      url = new URL(req.url ?? '');
    } catch {
      res.writeHead(400).end('absolute URI expected\n');
      return;
    }
    forwarded.push({ kind: 'http', target: url.href, method: req.method ?? '' });
    const headers = { ...req.headers };
    delete headers['proxy-authorization'];
    const up = request({ host: resolve(url.hostname), port: Number(url.port || 80), method: req.method, path: `${url.pathname}${url.search}`, headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.on('connect', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on('error', () => {});
    if (!authorized(req)) {
      refused++;
      return void socket.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="corp"\r\nContent-Length: 0\r\n\r\n');
    }
    const m = /^([^:]+):(\d+)$/.exec(req.url ?? '');
    if (!m) return void socket.end('HTTP/1.1 400 Bad Request\r\n\r\n');
    forwarded.push({ kind: 'connect', target: req.url!, method: 'CONNECT' });
    const up = connect({ host: resolve(m[1]!), port: Number(m[2]) }, () => {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length) up.write(head);
      socket.pipe(up).pipe(socket);
    });
    up.on('error', () => socket.destroy());
    socket.once('close', () => up.destroy());
  });
  const port = await new Promise<number>((r) => server.listen(0, '127.0.0.1', () => r((server.address() as AddressInfo).port)));
  return {
    port,
    forwarded,
    get refused() {
      return refused;
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}
