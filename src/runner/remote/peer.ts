// One end of the runner connection: calls with results, and byte streams multiplexed over
// the one WebSocket with per-stream credit, so one slow reader holds back its own stream,
// not the connection (heartbeats and other commands keep flowing).
import { Readable, Writable } from 'node:stream';
import type { WebSocket } from 'ws';
import { BerthError, type ErrorKind } from '../../shared/errors.ts';
import { decodeFrame, encodeFrame, FRAME, MAX_FRAME_BYTES, type StreamTag } from './protocol.ts';

/** Bytes a sender may have in flight per stream before the reader says it took them. */
const WINDOW = 1024 * 1024;
/** The largest data frame: big enough for throughput, small enough to interleave streams. */
const CHUNK = 256 * 1024;
/** Sources pause while the socket holds more than this unsent. */
const HIGH_WATER = 8 * 1024 * 1024;
const KINDS: ErrorKind[] = ['invalid', 'not_found', 'conflict', 'unauthorized', 'forbidden', 'rate_limited', 'unavailable', 'internal'];

export interface CallHandlers {
  /** A call the other side made; its result or error is sent back. */
  onCall?: (method: string, args: unknown, id: number) => Promise<unknown>;
  /** Every other message, already checked by `parse`. */
  onMessage: (message: { t: string } & Record<string, unknown>) => void;
  /** Turns a parsed JSON value into a message, or undefined for one that is not allowed. */
  parse: (raw: unknown) => ({ t: string } & Record<string, unknown>) | undefined;
  /** A frame or message that broke the rules: the connection is closed with this reason. */
  onViolation: (why: string) => void;
}

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void };

export class Peer {
  readonly #ws: WebSocket;
  readonly #h: CallHandlers;
  readonly #calls = new Map<number, Pending>();
  #nextCall = 1;
  readonly #in = new Map<string, InStream>();
  readonly #out = new Map<string, OutStream>();
  #closedWith: Error | undefined;

  constructor(ws: WebSocket, handlers: CallHandlers) {
    this.#ws = ws;
    this.#h = handlers;
    ws.on('message', (data, binary) => {
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      try {
        if (binary) this.#frame(buf);
        else this.#text(buf);
      } catch (err) {
        // Whatever a message makes a handler throw ends this connection, not the process.
        this.#h.onViolation(`a message its handler could not take: ${(err as Error).message}`.slice(0, 120));
      }
    });
    ws.on('close', () => this.#closed(new BerthError('unavailable', 'the runner connection closed')));
    ws.on('error', () => {});
  }

  get open(): boolean {
    return !this.#closedWith && this.#ws.readyState === this.#ws.OPEN;
  }

  send(message: object): void {
    if (this.open) this.#ws.send(JSON.stringify(message));
  }

  /** Calls `method` on the other side; rejects when it answers an error or the connection ends first. */
  call(method: string, args: unknown): { id: number; result: Promise<unknown> } {
    const id = this.#nextCall++;
    const result = new Promise<unknown>((resolve, reject) => {
      if (this.#closedWith) return reject(this.#closedWith);
      this.#calls.set(id, { resolve, reject });
      this.send({ t: 'call', id, method, args });
    });
    return { id, result };
  }

  /** The stream of bytes the other side sends on (channel, stream); made before they can arrive. */
  readable(channel: number, stream: StreamTag): Readable {
    const s = new InStream(this, channel, stream);
    if (this.#closedWith) fail(s, this.#closedWith);
    else this.#in.set(key(channel, stream), s);
    return s;
  }

  /** Where bytes for the other side's (channel, stream) are written; ending it sends the end. */
  writable(channel: number, stream: StreamTag): Writable {
    const s = new OutStream(this, channel, stream);
    if (this.#closedWith) fail(s, this.#closedWith);
    else this.#out.set(key(channel, stream), s);
    return s;
  }

  /** Ends every stream of the channel with `err` (the other side said it failed, or it is done with). */
  resetChannel(channel: number, err?: Error): void {
    for (const map of [this.#in, this.#out] as Map<string, Readable | Writable>[]) {
      for (const [k, s] of map) {
        if (!k.startsWith(`${channel}:`)) continue;
        map.delete(k);
        if (err) fail(s, err);
        else if (s instanceof Readable) s.push(null);
        else s.destroy();
      }
    }
  }

  close(code = 1000, reason = ''): void {
    this.#ws.close(code, reason.slice(0, 120));
  }

  /** Sends a frame; false once the connection is gone. */
  sendFrame(frame: Buffer): boolean {
    if (!this.open) return false;
    this.#ws.send(frame);
    return true;
  }

  get buffered(): number {
    return this.#ws.bufferedAmount;
  }

  forget(stream: InStream | OutStream): void {
    const k = key(stream.channel, stream.tag);
    if (this.#in.get(k) === stream || this.#out.get(k) === stream) {
      this.#in.delete(k);
      this.#out.delete(k);
    }
  }

  #text(buf: Buffer): void {
    let raw: unknown;
    try {
      raw = JSON.parse(buf.toString('utf8'));
    } catch {
      return this.#h.onViolation('a text frame that is not JSON');
    }
    const message = this.#h.parse(raw);
    if (!message) return this.#h.onViolation('a message that is not allowed');
    if (message.t === 'result') {
      const r = message as unknown as { id: number; ok?: unknown; error?: { kind: string; message: string } };
      const pending = this.#calls.get(r.id);
      if (!pending) return;
      this.#calls.delete(r.id);
      if (r.error) pending.reject(new BerthError(KINDS.includes(r.error.kind as ErrorKind) ? (r.error.kind as ErrorKind) : 'internal', r.error.message));
      else pending.resolve(r.ok);
      return;
    }
    if (message.t === 'call' && this.#h.onCall) {
      const c = message as unknown as { id: number; method: string; args: unknown };
      this.#h.onCall(c.method, c.args, c.id).then(
        (ok) => this.send({ t: 'result', id: c.id, ok: ok ?? null }),
        (err: unknown) => this.send({ t: 'result', id: c.id, error: errorWire(err) }),
      );
      return;
    }
    this.#h.onMessage(message);
  }

  #frame(buf: Buffer): void {
    const f = decodeFrame(buf);
    if (!f) return this.#h.onViolation('a binary frame with a bad header');
    const k = key(f.channel, f.stream);
    if (f.kind === FRAME.ack) {
      // Credit for bytes this side sent; for a stream already gone, nothing to do.
      if (f.payload.length === 4) this.#out.get(k)?.credit(f.payload.readUInt32BE(0));
      return;
    }
    // Bytes for a stream this side did not open (or already closed) are dropped: a late frame, or a hostile one.
    const s = this.#in.get(k);
    if (!s) return;
    if (f.kind === FRAME.end) {
      this.#in.delete(k);
      s.push(null);
    } else if (s.owed + f.payload.length > 2 * WINDOW) {
      // More than it was given credit for: a peer that ignores flow control could fill this process's memory.
      this.#h.onViolation('bytes sent past the stream window');
    } else s.deliver(f.payload);
  }

  #closed(err: Error): void {
    if (this.#closedWith) return;
    this.#closedWith = err;
    for (const p of this.#calls.values()) p.reject(err);
    this.#calls.clear();
    for (const s of [...this.#in.values(), ...this.#out.values()]) fail(s, err);
    this.#in.clear();
    this.#out.clear();
  }
}

/** Bytes from the other side; acknowledged as they are read, which lets the sender go on. */
class InStream extends Readable {
  readonly #peer: Peer;
  readonly channel: number;
  readonly tag: StreamTag;
  #owed = 0;

  /** Bytes received and not yet acknowledged (the sender may have at most a window of them out). */
  get owed(): number {
    return this.#owed;
  }

  constructor(peer: Peer, channel: number, tag: StreamTag) {
    super({ highWaterMark: WINDOW });
    this.#peer = peer;
    this.channel = channel;
    this.tag = tag;
  }

  deliver(bytes: Buffer): void {
    this.#owed += bytes.length;
    if (this.push(bytes)) this.#ack();
  }

  override _read(): void {
    this.#ack();
  }

  #ack(): void {
    if (this.#owed === 0) return;
    const n = Buffer.allocUnsafe(4);
    n.writeUInt32BE(this.#owed, 0);
    this.#owed = 0;
    this.#peer.sendFrame(encodeFrame(this.channel, this.tag, FRAME.ack, n));
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.#peer.forget(this);
    cb(err);
  }
}

/** Bytes to the other side, held back while the reader has not taken a window's worth. */
class OutStream extends Writable {
  readonly #peer: Peer;
  readonly channel: number;
  readonly tag: StreamTag;
  #inFlight = 0;
  #waiting: (() => void) | undefined;
  #poll: NodeJS.Timeout | undefined;

  constructor(peer: Peer, channel: number, tag: StreamTag) {
    super({ highWaterMark: CHUNK });
    this.#peer = peer;
    this.channel = channel;
    this.tag = tag;
  }

  credit(n: number): void {
    this.#inFlight = Math.max(0, this.#inFlight - n);
    this.#release();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    for (let at = 0; at < chunk.length; at += CHUNK) {
      const part = chunk.subarray(at, at + CHUNK);
      if (!this.#peer.sendFrame(encodeFrame(this.channel, this.tag, FRAME.data, part))) return cb(new BerthError('unavailable', 'the runner connection closed'));
      this.#inFlight += part.length;
    }
    this.#waiting = () => cb();
    this.#release();
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.#peer.sendFrame(encodeFrame(this.channel, this.tag, FRAME.end));
    this.#peer.forget(this);
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    clearTimeout(this.#poll);
    this.#peer.forget(this);
    cb(err);
  }

  #release(): void {
    if (!this.#waiting || this.#inFlight >= WINDOW) return;
    // The socket's own buffer: a slow link holds every source back, a little at a time.
    if (this.#peer.buffered > HIGH_WATER) {
      this.#poll ??= setTimeout(() => {
        this.#poll = undefined;
        this.#release();
      }, 5);
      return;
    }
    const go = this.#waiting;
    this.#waiting = undefined;
    go();
  }
}

const key = (channel: number, stream: StreamTag) => `${channel}:${stream}`;

/** Ends a stream with `err` without crashing the process when nobody listens for its errors (they see it close). */
function fail(s: Readable | Writable, err: Error): void {
  if (s.listenerCount('error') === 0) s.on('error', () => {});
  s.destroy(err);
}

export function errorWire(err: unknown): { kind: string; message: string } {
  if (err instanceof BerthError) return { kind: err.kind, message: err.message.slice(0, 4000) };
  return { kind: 'internal', message: (err instanceof Error ? err.message : String(err)).slice(0, 4000) };
}

export { MAX_FRAME_BYTES };
