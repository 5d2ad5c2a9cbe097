// Runners held by another replica: a joined runner's WebSocket, or berth up's own runner, is
// in one control-plane process only. Every replica records where it can be reached for the
// runners it holds (runners.replica_url), serves them to the other replicas over the runner
// protocol (serve.ts, as `berth runner join` does), and reaches the runners held elsewhere as
// RemoteRunners over that replica's relay. Replicas prove themselves with an HMAC under the
// secret key they share (BERTH_SECRET_KEY); an API token never opens a relay.
import { timingSafeEqual } from 'node:crypto';
import { sql } from 'kysely';
import type { Logger } from 'pino';
import { WebSocket } from 'ws';
import { z } from 'zod';
import type { Runner } from '../../runner/port.ts';
import type { PolicySource } from '../../runner/network/types.ts';
import { RemoteRunner } from '../../runner/remote/client.ts';
import { Peer } from '../../runner/remote/peer.ts';
import { Call, FromRunner, MAX_FRAME_BYTES } from '../../runner/remote/protocol.ts';
import { serveRunner } from '../../runner/remote/serve.ts';
import type { Db } from '../db/index.ts';
import type { SecretBox } from '../secrets/crypto.ts';
import type { RunnerPool } from './pool.ts';
import { MISSED_BEATS } from './registry.ts';

export const RELAY_ROUTE = '/api/runners/:id/relay';
/** Relay paths: authenticated by the replica credential in their route, not by an API token. */
export const RELAY_PATH = /^\/api\/runners\/[^/]+\/relay$/;
const relayPath = (runnerId: string) => `/api/runners/${encodeURIComponent(runnerId)}/relay`;

/** What the calling replica may send: calls, and resets of its channels. */
const FromReplica = z.discriminatedUnion('t', [Call, z.strictObject({ t: z.literal('reset'), channel: z.number().int().min(0).max(0xffff_ffff), message: z.string().max(1024) })]);
/** What a relay sends back: a runner's answers, without what only a runner's own connection says. */
const RELAYED = new Set(['result', 'progress', 'exit', 'open', 'reset']);

export interface ReplicaRelayOptions {
  db: Db;
  pool: RunnerPool;
  box: SecretBox;
  /** This replica's policies, sent with a start as a control plane does (the holding replica's own decide). */
  policies: PolicySource;
  logger: Logger;
  /** A runner whose heartbeat is older than this is not reached (BERTH_RUNNER_OFFLINE_AFTER). */
  offlineAfterMs: number;
  /** This replica's own internal URL, once it listens: never dialled. */
  selfUrl: () => string | undefined;
}

export class ReplicaRelay {
  readonly #o: ReplicaRelayOptions;
  /** Runners reached through another replica, one connection each, dropped when it closes. */
  readonly #remote = new Map<string, Promise<RemoteRunner | undefined>>();
  /** Relays this replica serves, by runner: closed when the runner leaves this replica. */
  readonly #served = new Map<string, Set<Peer>>();
  /** The connections this replica dialled, closed with it. */
  readonly #dialled = new Set<Peer>();

  constructor(o: ReplicaRelayOptions) {
    this.#o = o;
    o.pool.onRemoved((id) => {
      for (const peer of this.#served.get(id) ?? []) peer.close(4000, 'the runner left this replica');
    });
  }

  /** The credential a replica shows to reach `runnerId` through another. */
  credential(runnerId: string): string {
    return this.#o.box.mac('replica-relay', runnerId).toString('base64url');
  }

  /** Whether `authorization` is this deployment's replica credential for `runnerId` (constant time). */
  verify(runnerId: string, authorization: string | undefined): boolean {
    const given = Buffer.from(/^Bearer (\S+)$/.exec(authorization ?? '')?.[1] ?? '', 'utf8');
    const expected = Buffer.from(this.credential(runnerId), 'utf8');
    return given.length === expected.length && timingSafeEqual(given, expected);
  }

  /** Whether this replica holds the runner itself (only those are served: a relay never relays on). */
  holds(runnerId: string): boolean {
    return this.#o.pool.has(runnerId);
  }

  /** Serves a runner this replica holds to the replica on the other end of `ws`. */
  accept(ws: WebSocket, runnerId: string): void {
    const runner = this.#o.pool.all().find((r) => r.id === runnerId);
    if (!runner) return ws.close(4404, 'the runner is not held by this replica');
    const service = serveRunner(runner);
    const peer: Peer = new Peer(ws, {
      parse: (raw) => {
        const r = FromReplica.safeParse(raw);
        return r.success ? r.data : undefined;
      },
      onViolation: (why) => peer.close(1008, why),
      onCall: (method, args, call) => service.call(peer, method, args, call),
      onMessage: (m) => {
        const msg = m as { t: 'reset'; channel: number; message: string };
        peer.resetChannel(msg.channel, new Error(msg.message));
      },
    });
    const served = this.#served.get(runnerId) ?? new Set();
    served.add(peer);
    this.#served.set(runnerId, served);
    ws.on('close', () => {
      service.end();
      served.delete(peer);
      if (!served.size && this.#served.get(runnerId) === served) this.#served.delete(runnerId);
    });
  }

  /** The runner through the replica that holds it, or undefined when none does (it is lost). */
  reach(runnerId: string): Promise<RemoteRunner | undefined> {
    let reached = this.#remote.get(runnerId);
    if (!reached) {
      reached = this.#dial(runnerId).catch((err: Error) => {
        this.#o.logger.warn({ err, runner: runnerId }, 'could not reach the replica that holds the runner');
        return undefined;
      });
      this.#remote.set(runnerId, reached);
      void reached.then((r) => r || this.#remote.delete(runnerId));
    }
    return reached;
  }

  async #dial(runnerId: string): Promise<RemoteRunner | undefined> {
    const row = await this.#o.db
      .selectFrom('runners')
      .select(['name', 'replica_url', 'stopped_at', 'offline_at', 'report', sql<string>`extract(epoch from now() - heartbeat_at) * 1000`.as('beat_age_ms')])
      .where('id', '=', runnerId)
      .executeTakeFirst();
    if (!row?.replica_url || row.stopped_at || row.offline_at || row.replica_url === this.#o.selfUrl()) return undefined;
    // Ages by the database's clock, as the runner list's.
    if (Number(row.beat_age_ms) > Math.max(MISSED_BEATS * (row.report?.heartbeatMs ?? 0), this.#o.offlineAfterMs)) return undefined;
    const url = new URL(row.replica_url);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    url.pathname = `${url.pathname.replace(/\/$/, '')}${relayPath(runnerId)}`;
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${this.credential(runnerId)}` }, maxPayload: MAX_FRAME_BYTES, handshakeTimeout: 10_000 });
    let runner: RemoteRunner | undefined;
    const peer: Peer = new Peer(ws, {
      parse: (raw) => {
        const r = FromRunner.safeParse(raw);
        return r.success && RELAYED.has(r.data.t) ? r.data : undefined;
      },
      onViolation: (why) => peer.close(1008, why),
      onMessage: (m) => {
        const msg = m as FromRunner;
        if (!runner) return;
        if (msg.t === 'progress') runner.progress(msg.call, msg);
        else if (msg.t === 'exit') runner.exit(msg.channel, msg.status);
        else if (msg.t === 'open') runner.open(msg.channel, msg.listener);
        else if (msg.t === 'reset') peer.resetChannel(msg.channel, new Error(msg.message));
      },
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('unexpected-response', (_req, res) => {
        reject(new Error(`the replica at ${row.replica_url} answered ${res.statusCode}`));
        ws.terminate();
      });
      ws.once('error', reject);
      ws.once('close', () => reject(new Error(`the replica at ${row.replica_url} closed the relay`)));
    });
    runner = new RemoteRunner({ id: runnerId, name: row.name, peer, policies: this.#o.policies });
    const reached = this.#remote.get(runnerId);
    this.#dialled.add(peer);
    ws.on('close', () => {
      this.#dialled.delete(peer);
      if (this.#remote.get(runnerId) === reached) this.#remote.delete(runnerId);
    });
    return runner;
  }

  close(): void {
    for (const peers of this.#served.values()) for (const peer of peers) peer.close(1001, 'control plane stopping');
    for (const peer of this.#dialled) peer.close(1001, 'control plane stopping');
    this.#remote.clear();
  }
}
