// The runner's side of the agent protocol; agent.c's header comment is the reference.
//
// One unix-socket connection carries one command. Every message is a frame:
//   u32 length (big-endian; counts the type byte and the payload) | u8 type | payload
// Integers are big-endian; a string is a u32 byte length and its bytes.
//
// client -> agent: START {flags (bit 0 tty, bit 1 user), u16 rows, u16 cols, cwd, argc, argv…, envc, env…,
//   [uid, gid, ngroups, gids…] with bit 1},
//   STDIN bytes, STDIN_EOF, RESIZE {u16 rows, u16 cols}, SIGNAL {u32 signo}
// agent -> client: STARTED {u32 pid}, STDOUT bytes, STDERR bytes,
//   EXIT {i32 code (128 + signal if killed), i32 signal}, ERROR utf-8 message

/** Bumped on any incompatible change; it is part of the socket's name, so a runner never talks to an agent that does not know its protocol. */
export const PROTOCOL_VERSION = 2;
export const SOCKET_NAME = `agent-v${PROTOCOL_VERSION}.sock`;

export const FRAME = {
  start: 0x01,
  stdin: 0x02,
  stdinEof: 0x03,
  resize: 0x04,
  signal: 0x05,
  started: 0x81,
  stdout: 0x82,
  stderr: 0x83,
  exit: 0x84,
  error: 0x85,
} as const;

const HEADER = 5;
/** The agent refuses STDIN frames larger than this; bigger writes are split. */
export const MAX_DATA = 64 * 1024;
/** The agent refuses a START frame larger than this. */
export const MAX_START = 4 * 1024 * 1024;
/** The agent sends at most 64 KiB a frame; anything much larger is not an agent talking. */
const MAX_INBOUND = 1024 * 1024;

export interface StartRequest {
  argv: string[];
  env: string[];
  cwd: string;
  tty?: { rows: number; cols: number } | undefined;
  /** Who the command runs as; the environment's root when absent. */
  user?: RunAs | undefined;
}

/** A user inside the environment, as numbers (runner/users.ts resolves names). */
export interface RunAs {
  uid: number;
  gid: number;
  /** Supplementary groups, at most MAX_GROUPS. */
  groups: number[];
}
export const MAX_GROUPS = 64;

export type AgentMessage =
  | { type: 'started'; pid: number }
  | { type: 'stdout' | 'stderr'; data: Buffer }
  | { type: 'exit'; code: number; signal: number }
  | { type: 'error'; message: string };

export function frame(type: number, payload?: Buffer): Buffer {
  const out = Buffer.allocUnsafe(HEADER + (payload?.length ?? 0));
  out.writeUInt32BE(1 + (payload?.length ?? 0), 0);
  out[4] = type;
  payload?.copy(out, HEADER);
  return out;
}

export function encodeStart(req: StartRequest): Buffer {
  const strings = [req.cwd, ...req.argv, ...req.env].map((s) => Buffer.from(s, 'utf8'));
  const groups = req.user?.groups.slice(0, MAX_GROUPS) ?? [];
  const size = 5 + 4 + 4 + strings.reduce((n, b) => n + 4 + b.length, 0) + (req.user ? 12 + 4 * groups.length : 0);
  const p = Buffer.allocUnsafe(size);
  let o = 0;
  o = p.writeUInt8((req.tty ? 1 : 0) | (req.user ? 2 : 0), o);
  o = p.writeUInt16BE(clamp16(req.tty?.rows ?? 0), o);
  o = p.writeUInt16BE(clamp16(req.tty?.cols ?? 0), o);
  const str = (b: Buffer) => {
    o = p.writeUInt32BE(b.length, o);
    o += b.copy(p, o);
  };
  str(strings[0]!);
  o = p.writeUInt32BE(req.argv.length, o);
  for (let i = 0; i < req.argv.length; i++) str(strings[1 + i]!);
  o = p.writeUInt32BE(req.env.length, o);
  for (let i = 0; i < req.env.length; i++) str(strings[1 + req.argv.length + i]!);
  if (req.user) {
    o = p.writeUInt32BE(req.user.uid, o);
    o = p.writeUInt32BE(req.user.gid, o);
    o = p.writeUInt32BE(groups.length, o);
    for (const g of groups) o = p.writeUInt32BE(g, o);
  }
  return frame(FRAME.start, p);
}

/** STDIN frames for a chunk of any size. */
export function encodeStdin(data: Buffer): Buffer[] {
  const frames: Buffer[] = [];
  for (let o = 0; o < data.length; o += MAX_DATA) frames.push(frame(FRAME.stdin, data.subarray(o, o + MAX_DATA)));
  return frames;
}

export function encodeResize(rows: number, cols: number): Buffer {
  const p = Buffer.allocUnsafe(4);
  p.writeUInt16BE(clamp16(rows), 0);
  p.writeUInt16BE(clamp16(cols), 2);
  return frame(FRAME.resize, p);
}

export function encodeSignal(signo: number): Buffer {
  const p = Buffer.allocUnsafe(4);
  p.writeUInt32BE(signo, 0);
  return frame(FRAME.signal, p);
}

const clamp16 = (n: number) => Math.max(0, Math.min(0xffff, Math.trunc(n)));

/**
 * Splits the agent's byte stream into messages. Whatever listens on an environment's
 * socket is inside the sandbox, so its bytes are checked like any other outside input.
 */
export class FrameReader {
  #pending: Buffer = Buffer.alloc(0);

  /** The messages completed by `chunk`; throws on anything that is not the protocol. */
  push(chunk: Buffer): AgentMessage[] {
    const buf = this.#pending.length ? Buffer.concat([this.#pending, chunk]) : chunk;
    const out: AgentMessage[] = [];
    let o = 0;
    while (buf.length - o >= HEADER) {
      const len = buf.readUInt32BE(o);
      if (len < 1 || len - 1 > MAX_INBOUND) throw new Error(`agent sent a frame of ${len} bytes`);
      if (buf.length - o < HEADER - 1 + len) break;
      const type = buf[o + 4]!;
      const payload = buf.subarray(o + HEADER, o + HEADER - 1 + len);
      o += HEADER - 1 + len;
      out.push(decode(type, payload));
    }
    // Copied: the rest of a frame is small next to the chunk it would keep alive.
    this.#pending = o === buf.length ? Buffer.alloc(0) : Buffer.from(buf.subarray(o));
    return out;
  }
}

function decode(type: number, p: Buffer): AgentMessage {
  switch (type) {
    case FRAME.started:
      if (p.length !== 4) break;
      return { type: 'started', pid: p.readUInt32BE(0) };
    case FRAME.stdout:
      return { type: 'stdout', data: p };
    case FRAME.stderr:
      return { type: 'stderr', data: p };
    case FRAME.exit:
      if (p.length !== 8) break;
      return { type: 'exit', code: p.readInt32BE(0), signal: p.readInt32BE(4) };
    case FRAME.error:
      return { type: 'error', message: p.toString('utf8') };
  }
  throw new Error(`agent sent a malformed frame (type 0x${type.toString(16)}, ${p.length} bytes)`);
}
