// The hop through the company's outbound proxy (company.ts's UpstreamProxy): the egress
// proxy has decided, recorded and added credentials already; this only carries the request
// on. TLS and tunnels go by CONNECT host:port, plain HTTP by absolute URI, each with the
// Proxy-Authorization the configuration gives. The name, not the checked address, is what
// the upstream proxy is asked for: its own rules are written in names.
import type { Duplex } from 'node:stream';
import { connect, type Socket } from 'node:net';
import { Agent as HttpsAgent, type AgentOptions } from 'node:https';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import type { ClientRequestArgs } from 'node:http';
import type { UpstreamProxy } from './company.ts';

/** The most a CONNECT answer's head may be before it is taken for something else. */
const MAX_ANSWER_BYTES = 16 * 1024;

/** `CONNECT host:port` as the upstream proxy is asked it. */
export function connectRequest(hop: UpstreamProxy, host: string, port: number): string {
  const authority = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  const auth = hop.authorization ? `Proxy-Authorization: ${hop.authorization}\r\n` : '';
  return `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${auth}\r\n`;
}

/**
 * Reads the upstream proxy's answer to CONNECT from what arrived so far: null while its head
 * is incomplete, else whether it is 200 (with the status line, and the bytes past the head).
 */
export function connectAnswer(received: Buffer): { ok: boolean; statusLine: string; rest: Buffer } | null {
  const end = received.indexOf('\r\n\r\n');
  if (end < 0) {
    if (received.length > MAX_ANSWER_BYTES) return { ok: false, statusLine: 'an answer too long to be one', rest: Buffer.alloc(0) };
    return null;
  }
  const lineEnd = received.indexOf('\r\n');
  const statusLine = received.subarray(0, lineEnd).toString('latin1').slice(0, 200);
  return { ok: /^HTTP\/1\.[01] 200(?: |$)/.test(statusLine), statusLine, rest: received.subarray(end + 4) };
}

/** A connection to `host:port` through the upstream proxy, ready for bytes (it answered 200). */
export function openTunnel(hop: UpstreamProxy, host: string, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hop.host, port: hop.port, noDelay: true });
    let received = Buffer.alloc(0);
    const fail = (err: Error) => {
      socket.destroy();
      reject(err);
    };
    socket.setTimeout(timeoutMs, () => fail(new Error(`the upstream proxy ${hop.display} did not answer in time`)));
    socket.once('error', (err) => fail(new Error(`the upstream proxy ${hop.display}: ${err.message}`)));
    socket.once('close', () => fail(new Error(`the upstream proxy ${hop.display} closed the connection`)));
    socket.once('connect', () => socket.write(connectRequest(hop, host, port)));
    const onData = (b: Buffer) => {
      received = Buffer.concat([received, b]);
      const answer = connectAnswer(received);
      if (!answer) return;
      socket.off('data', onData);
      socket.removeAllListeners('close');
      socket.removeAllListeners('error');
      socket.setTimeout(0);
      if (!answer.ok) return fail(new Error(`the upstream proxy ${hop.display} refused CONNECT ${host}:${port}: ${answer.statusLine}`));
      socket.pause();
      if (answer.rest.length) socket.unshift(answer.rest);
      resolve(socket);
    };
    socket.on('data', onData);
  });
}

/** An HTTPS agent whose connections are TLS inside a CONNECT tunnel through the upstream proxy. */
export class UpstreamTlsAgent extends HttpsAgent {
  readonly #hop: UpstreamProxy;
  readonly #timeoutMs: number;

  constructor(hop: UpstreamProxy, timeoutMs: number, options: AgentOptions) {
    super(options);
    this.#hop = hop;
    this.#timeoutMs = timeoutMs;
  }

  override createConnection(options: ClientRequestArgs, callback?: (err: Error | null, stream: Duplex) => void): Duplex | null | undefined {
    const o = options as ClientRequestArgs & ConnectionOptions;
    const name = o.servername!;
    openTunnel(this.#hop, name, Number(o.port), this.#timeoutMs).then(
      (socket) => {
        const tls = tlsConnect({ ...o, socket, host: name, servername: name, ALPNProtocols: ['http/1.1'] });
        callback?.(null, tls);
      },
      (err: Error) => callback?.(err, undefined as unknown as Duplex),
    );
    return undefined;
  }
}
