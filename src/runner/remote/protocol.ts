// The wire between a runner that joined over the network and the control plane: one
// WebSocket the runner dials. Text frames are JSON messages (calls, results, events);
// binary frames carry the bytes of exec streams and relayed sockets behind a 6-byte
// header. Everything either side receives is checked here before it is used.
import { z } from 'zod';

/** This build's protocol, sent in PROTOCOL_HEADER; the control plane refuses a runner below MIN_PROTOCOL_VERSION. */
export const PROTOCOL_VERSION = 1;
export const MIN_PROTOCOL_VERSION = 1;
export const PROTOCOL_HEADER = 'x-berth-runner-protocol';
export const CONNECT_PATH = '/api/runners/connect';
/** The largest frame either side sends or takes. */
export const MAX_FRAME_BYTES = 16 * 1024 * 1024;

/** Ids a joined runner keeps in its data dir: never `local:…`, so it cannot pass for berth up's own. */
export const RUNNER_ID = /^rnr_[0-9a-z]{16,40}$/;
const ENV_ID = /^env_[0-9a-z]{12}$/;
const LABEL_KEY = /^[a-z0-9][a-z0-9._/-]{0,62}$/;

/** The byte after the channel id: which stream of the channel the frame is for. */
export const STREAM = {
  stdin: 0,
  stdout: 1,
  stderr: 2,
  /** A relayed socket: bytes from the sandbox's client to the control plane… */
  fromSocket: 3,
  /** …and the control plane's answer back to it. */
  toSocket: 4,
} as const;
export type StreamTag = (typeof STREAM)[keyof typeof STREAM];

export const FRAME = { data: 0, end: 1, ack: 2 } as const;
export type FrameKind = (typeof FRAME)[keyof typeof FRAME];
export const HEADER_BYTES = 6;

export function encodeFrame(channel: number, stream: StreamTag, kind: FrameKind, payload?: Buffer): Buffer {
  const frame = Buffer.allocUnsafe(HEADER_BYTES + (payload?.length ?? 0));
  frame.writeUInt32BE(channel, 0);
  frame.writeUInt8(stream, 4);
  frame.writeUInt8(kind, 5);
  payload?.copy(frame, HEADER_BYTES);
  return frame;
}

export function decodeFrame(frame: Buffer): { channel: number; stream: StreamTag; kind: FrameKind; payload: Buffer } | undefined {
  if (frame.length < HEADER_BYTES) return undefined;
  const stream = frame.readUInt8(4);
  const kind = frame.readUInt8(5);
  if (stream > STREAM.toSocket || kind > FRAME.ack) return undefined;
  return { channel: frame.readUInt32BE(0), stream: stream as StreamTag, kind: kind as FrameKind, payload: frame.subarray(HEADER_BYTES) };
}

/** Channels the control plane opens (exec) are below this; the runner's (relayed connections) at or above. */
export const RUNNER_CHANNELS = 0x8000_0000;

export const Labels = z
  .record(z.string().regex(LABEL_KEY, 'a label key is lower-case letters, digits and . _ / -'), z.string().max(128))
  .refine((l) => Object.keys(l).length <= 32, 'at most 32 labels');
export type Labels = z.infer<typeof Labels>;

/** `k=v,k2=v2` (from --labels) as labels; a bad pair is refused with what is wrong. */
export function parseLabels(text: string | undefined): Labels {
  const labels: Record<string, string> = {};
  for (const pair of (text ?? '').split(',').map((p) => p.trim()).filter(Boolean)) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new Error(`label '${pair}' is not key=value`);
    const key = pair.slice(0, eq).trim();
    if (!LABEL_KEY.test(key)) throw new Error(`label key '${key}' must be lower-case letters, digits and . _ / - (at most 63)`);
    labels[key] = pair.slice(eq + 1).trim();
  }
  const parsed = Labels.safeParse(labels);
  if (!parsed.success) throw new Error(`labels: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
  return parsed.data;
}

const text = (max: number) => z.string().max(max);

/** What the runner says of its host (health.ts's HostProbe), bounded. */
export const HostProbeWire = z.object({
  backend: text(64),
  cgroups: z.enum(['v2', 'v1', 'hybrid']),
  cpus: z.number().int().min(0).max(1_000_000),
  memoryBytes: z.number().min(0),
  network: z.object({
    egressProxy: z.boolean(),
    nftables: z.boolean(),
    trustedNetworks: z.array(text(64)).max(64),
    upstreamProxy: text(512).nullable(),
    noProxy: z.array(text(256)).max(64),
  }),
  diskQuota: z.boolean(),
  dataDisk: z.object({ freeBytes: z.number().min(0), totalBytes: z.number().min(0) }),
  checkpoint: z.object({ available: z.boolean(), reason: text(2048).optional() }).optional(),
  snapshots: z.object({ available: z.boolean(), reason: text(2048).optional() }).optional(),
  problems: z.array(text(1024)).max(32),
});
export type HostProbeWire = z.infer<typeof HostProbeWire>;

export const Hello = z.strictObject({
  t: z.literal('hello'),
  id: z.string().regex(RUNNER_ID, 'a runner id is rnr_ and 16 to 40 lower-case letters and digits'),
  name: text(128).min(1),
  host: text(255),
  version: text(64),
  labels: Labels,
  isolation: z.array(text(32)).max(8),
  probe: HostProbeWire,
});
export type Hello = z.infer<typeof Hello>;

const ErrorWire = z.object({ kind: text(32), message: text(4096) });

export const Result = z.strictObject({ t: z.literal('result'), id: z.number().int().positive(), ok: z.unknown().optional(), error: ErrorWire.optional() });
export const Call = z.strictObject({ t: z.literal('call'), id: z.number().int().positive(), method: text(64), args: z.unknown() });

export const ExitWire = z.object({
  exitCode: z.number().int(),
  timedOut: z.boolean(),
  durationMs: z.number().min(0),
  oomKilled: z.boolean().optional(),
  message: text(1024).optional(),
});

const NetworkEventWire = z.object({
  environmentId: z.string().regex(ENV_ID),
  at: text(40),
  kind: z.enum(['http', 'connect', 'firewall']),
  host: text(1024),
  port: z.number().int().min(0).max(65535),
  method: text(32).nullable(),
  path: text(8192).nullable(),
  allowed: z.boolean(),
  rule: text(1024),
  status: z.number().int().nullable(),
  bytesUp: z.number().min(0),
  bytesDown: z.number().min(0),
  durationMs: z.number().min(0),
  error: text(2048).optional(),
  packets: z.number().int().min(0).optional(),
});

/** Everything a runner may send as text: checked in full before the control plane reads it. */
export const FromRunner = z.discriminatedUnion('t', [
  Hello,
  Result,
  z.strictObject({ t: z.literal('beat'), probe: HostProbeWire }),
  z.strictObject({ t: z.literal('network'), events: z.array(NetworkEventWire).max(1000) }),
  z.strictObject({ t: z.literal('progress'), call: z.number().int().positive(), phase: text(32), message: text(1024), fraction: z.number().min(0).max(1).optional() }),
  z.strictObject({ t: z.literal('exit'), channel: z.number().int().min(0).max(RUNNER_CHANNELS - 1), status: ExitWire }),
  z.strictObject({ t: z.literal('open'), channel: z.number().int().min(RUNNER_CHANNELS).max(0xffff_ffff), listener: z.number().int().positive() }),
  z.strictObject({ t: z.literal('reset'), channel: z.number().int().min(0).max(0xffff_ffff), message: text(1024) }),
]);
export type FromRunner = z.infer<typeof FromRunner>;

/** What the control plane sends; the runner checks it too (a wrong URL or a man in the middle). */
export const FromControlPlane = z.discriminatedUnion('t', [
  z.strictObject({ t: z.literal('welcome'), id: z.string(), heartbeatMs: z.number().int().positive() }),
  Call,
  z.strictObject({ t: z.literal('policies'), policies: z.record(z.string().regex(ENV_ID), z.object({ policy: z.unknown(), mirrors: z.array(z.unknown()) })) }),
  z.strictObject({ t: z.literal('forget'), environments: z.array(z.string().regex(ENV_ID)) }),
  z.strictObject({ t: z.literal('reset'), channel: z.number().int().min(0).max(0xffff_ffff), message: text(1024) }),
]);
export type FromControlPlane = z.infer<typeof FromControlPlane>;
