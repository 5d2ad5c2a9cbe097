import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import { RemoteRunner } from '../../runner/remote/client.ts';
import { Peer } from '../../runner/remote/peer.ts';
import { FromRunner, type Hello, type HostProbeWire } from '../../runner/remote/protocol.ts';
import type { NetworkEvent, NetworkEventSink, PolicySource } from '../../runner/network/types.ts';
import type { Db } from '../db/index.ts';
import type { EnvironmentService } from '../environments/service.ts';
import type { RunnerPool } from './pool.ts';
import type { RunnerRegistry } from './registry.ts';
import type { RunnerTokenService } from './tokens.ts';

/** How long a runner has after connecting to say who it is. */
const HELLO_TIMEOUT_MS = 10_000;
/** How often policies are pushed (when changed) and the runner's token is checked again. */
const PUSH_MS = 1_000;

export interface JoinedRunnersOptions {
  db: Db;
  pool: RunnerPool;
  registry: RunnerRegistry;
  environments: EnvironmentService;
  tokens: RunnerTokenService;
  policies: PolicySource;
  networkEvents: NetworkEventSink;
  logger: Logger;
  /** How often runners send their heartbeat (default 5 s). */
  heartbeatMs?: number | undefined;
  /** Tasks running on a runner and its concurrency, for its report (the task worker's). */
  tasksOf?: ((runnerId: string) => { running: number; concurrency: number }) | undefined;
  /** This replica's internal URL, recorded with each runner it holds: other replicas reach the runner through it (relay.ts). */
  replicaUrl?: (() => string | undefined) | undefined;
}

interface Session {
  runner: RemoteRunner;
  peer: Peer;
  tokenId: string;
  /** Its environments (not deleted), refreshed each push: what its events may name. */
  environments: Set<string>;
  /** What was last pushed per environment, so only changes go out. */
  pushed: Map<string, string>;
  timer: NodeJS.Timeout;
}

/**
 * Runners that joined over the network and hold a connection to this control-plane
 * process: each becomes a RemoteRunner in the pool while connected. Everything a runner
 * sends is checked (protocol.ts) and bounded; it may name only environments placed on it.
 */
export class JoinedRunners {
  readonly #o: JoinedRunnersOptions;
  readonly #sessions = new Map<string, Session>();
  readonly #heartbeatMs: number;

  constructor(o: JoinedRunnersOptions) {
    this.#o = o;
    this.#heartbeatMs = o.heartbeatMs ?? 5_000;
  }

  /** A runner's WebSocket, its token already checked: waits for its hello, then serves it. */
  accept(ws: WebSocket, token: { id: string; labels: Record<string, string> }, address: string): void {
    const log = this.#o.logger.child({ runnerAddress: address });
    let session: Session | undefined;
    let runner: RemoteRunner | undefined;
    const helloTimer = setTimeout(() => peer.close(4400, 'no hello'), HELLO_TIMEOUT_MS);
    const peer = new Peer(ws, {
      parse: (raw) => {
        const r = FromRunner.safeParse(raw);
        return r.success ? r.data : undefined;
      },
      onViolation: (why) => {
        log.warn({ runner: runner?.id, why }, 'runner broke the protocol: disconnected');
        peer.close(1008, why);
      },
      onMessage: (m) => {
        const msg = m as FromRunner;
        if (msg.t === 'hello') {
          if (runner) return peer.close(1008, 'a second hello');
          clearTimeout(helloTimer);
          runner = new RemoteRunner({ id: msg.id, name: msg.name, peer, policies: this.#o.policies });
          void this.#register(msg, runner, peer, token, log).then(
            (s) => (session = s),
            (err: Error & { closeCode?: number }) => {
              log.warn({ err, runner: msg.id }, 'runner refused');
              peer.close(err.closeCode ?? 1011, err.message);
            },
          );
          return;
        }
        if (!runner) return peer.close(1008, 'hello first');
        switch (msg.t) {
          case 'beat':
            void this.#beat(runner, msg.probe).catch((err) => log.warn({ err, runner: runner!.id }, 'could not write the runner heartbeat'));
            return;
          case 'network':
            return this.#network(session, msg.events as NetworkEvent[]);
          case 'progress':
            return runner.progress(msg.call, msg);
          case 'exit':
            return runner.exit(msg.channel, msg.status);
          case 'open':
            return runner.open(msg.channel, msg.listener);
          case 'reset':
            return peer.resetChannel(msg.channel, new Error(msg.message));
        }
      },
    });
    ws.on('close', () => {
      clearTimeout(helloTimer);
      if (!runner) return;
      void this.#gone(runner.id, peer).catch((err) => log.warn({ err, runner: runner!.id }, 'could not mark the runner offline'));
    });
  }

  async #register(hello: Hello, runner: RemoteRunner, peer: Peer, token: { id: string; labels: Record<string, string> }, log: Logger): Promise<Session> {
    const { db } = this.#o;
    // An id registered with one token cannot be taken over with another while that one is
    // valid (its environments are there); once it is revoked, the runner may come back with a
    // new one (a rotated token). Only joined runners' ids can be claimed at all (RUNNER_ID).
    const row = await db.selectFrom('runners').select(['token_id']).where('id', '=', hello.id).executeTakeFirst();
    if (row && row.token_id !== token.id && (row.token_id === null || (await this.#o.tokens.stillValid(row.token_id)))) {
      throw Object.assign(new Error(`runner id ${hello.id} is registered with another runner token that is still valid: join with that one, revoke it first, or join from a fresh data dir`), { closeCode: 4409 });
    }
    // The administrator's labels (the token's) win over the runner's own.
    const labels = { ...hello.labels, ...token.labels };
    await this.#beat(runner, hello.probe, { name: hello.name, host: hello.host, version: hello.version });
    await db.updateTable('runners').set({ labels: JSON.stringify(labels), token_id: token.id, replica_url: this.#o.replicaUrl?.() ?? null }).where('id', '=', hello.id).execute();
    if (!peer.open) throw new Error('the runner left while registering');
    // A runner that reconnects before its old connection was seen to drop: the new one wins.
    const old = this.#sessions.get(hello.id);
    if (old) {
      clearInterval(old.timer);
      old.peer.close(4000, 'replaced by a newer connection of the same runner');
    }
    const session: Session = { runner, peer, tokenId: token.id, environments: new Set(), pushed: new Map(), timer: setInterval(() => void this.#push(session).catch((err) => log.warn({ err, runner: hello.id }, 'could not push policies')), PUSH_MS) };
    session.timer.unref();
    this.#sessions.set(hello.id, session);
    this.#o.pool.add(runner);
    peer.send({ t: 'welcome', id: hello.id, heartbeatMs: this.#heartbeatMs });
    log.info({ runner: hello.id, name: hello.name, labels }, 'runner joined');
    await this.#push(session);
    // Its environments lost while it was away are reconciled by the pool's onAdded (index.ts).
    return session;
  }

  async #beat(runner: RemoteRunner, probe: HostProbeWire, who?: { name: string; host: string; version: string }): Promise<void> {
    const existing = who ?? (await this.#o.db.selectFrom('runners').select(['name', 'host', 'version', 'started_at']).where('id', '=', runner.id).executeTakeFirst());
    if (!existing) return;
    const startedAt = 'started_at' in existing ? new Date(existing.started_at as Date) : new Date();
    await this.#o.registry.beat({
      id: runner.id,
      name: existing.name,
      host: existing.host,
      version: existing.version,
      startedAt,
      report: {
        ...probe,
        environments: await this.#o.environments.counts(runner.id),
        tasks: this.#o.tasksOf?.(runner.id) ?? { running: 0, concurrency: 0 },
        heartbeatMs: this.#heartbeatMs,
      },
    });
  }

  /** Sends each of its environments' policies when they changed; ends it if its token was revoked. */
  async #push(s: Session): Promise<void> {
    if (!(await this.#o.tokens.stillValid(s.tokenId))) {
      this.#o.logger.warn({ runner: s.runner.id }, 'runner token revoked: disconnecting the runner');
      s.peer.close(4401, 'this runner token was revoked');
      return;
    }
    const rows = await this.#o.db.selectFrom('environments').select('id').where('runner_id', '=', s.runner.id).where('state', '<>', 'deleted').execute();
    s.environments = new Set(rows.map((r) => r.id));
    const changed: Record<string, { policy: unknown; mirrors: unknown[] }> = {};
    for (const id of s.environments) {
      const value = { policy: this.#o.policies.policyFor(id), mirrors: this.#o.policies.mirrorsFor?.(id) ?? [] };
      const text = JSON.stringify(value);
      if (s.pushed.get(id) === text) continue;
      s.pushed.set(id, text);
      changed[id] = value;
    }
    const gone = [...s.pushed.keys()].filter((id) => !s.environments.has(id));
    for (const id of gone) s.pushed.delete(id);
    if (Object.keys(changed).length) s.peer.send({ t: 'policies', policies: changed });
    if (gone.length) s.peer.send({ t: 'forget', environments: gone });
  }

  #network(s: Session | undefined, events: NetworkEvent[]): void {
    if (!s) return;
    for (const e of events) {
      // Only its own environments: a runner cannot write another's network log.
      if (s.environments.has(e.environmentId)) this.#o.networkEvents.record(e);
    }
  }

  async #gone(id: string, peer: Peer): Promise<void> {
    const s = this.#sessions.get(id);
    // A newer connection of the same runner took over: it stays.
    if (!s || s.peer !== peer) return;
    clearInterval(s.timer);
    this.#sessions.delete(id);
    this.#o.pool.delete(id);
    await this.#o.registry.stopped(id);
    // Not reachable through this replica any more (unless another took it meanwhile).
    const here = this.#o.replicaUrl?.();
    if (here) await this.#o.db.updateTable('runners').set({ replica_url: null }).where('id', '=', id).where('replica_url', '=', here).execute();
    this.#o.logger.warn({ runner: id }, 'runner disconnected: its environments are lost until it is back');
  }

  /** The runners connected here now. */
  connected(): string[] {
    return [...this.#sessions.keys()];
  }

  close(): void {
    for (const s of this.#sessions.values()) {
      clearInterval(s.timer);
      s.peer.close(1001, 'control plane stopping');
    }
  }
}
