// `berth runner join`: this host's LocalRunner served to a control plane over one WebSocket
// the runner dials (runners may sit in private networks). It keeps dialing with backoff
// while the control plane is away, and gives up only when it is told its token or its
// version will never be accepted.
import { loadCompanyCas, writeHostTrust } from '../network/index.ts';
import { egressNetworkConfigFrom, summarizeEgressNetwork, type EgressNetworkConfig } from '../network/company.ts';
import { runnerConfigFrom, type RunnerConfig } from '../config.ts';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';
import type { Logger } from 'pino';
import { WebSocket } from 'ws';
import { z } from 'zod';
import { VERSION } from '../../shared/client-config.ts';
import { invalid } from '../../shared/errors.ts';
import { installed, probeHost } from '../health.ts';
import { ImageBuilder, ImageStore } from '../images/index.ts';
import type { PackageMirror } from '../mirrors.ts';
import { DENY_ALL } from '../network/policy.ts';
import type { EgressPolicy, NetworkEvent, NetworkEventSink, PolicySource } from '../network/types.ts';
import { LocalRunner } from '../runner.ts';
import { Peer } from './peer.ts';
import { serveRunner } from './serve.ts';
import { CONNECT_PATH, FromControlPlane, type Labels, MAX_FRAME_BYTES, PROTOCOL_HEADER, PROTOCOL_VERSION, RUNNER_ID } from './protocol.ts';

export interface JoinOptions {
  /** The control plane's URL, as people reach it (https://berth.example.com). */
  url: string;
  token: string;
  dataDir: string;
  labels: Labels;
  name?: string | undefined;
  /** PEM of a CA to trust besides the system's (a company CA the control plane's certificate is from). */
  ca?: string | undefined;
  /** Allow plain ws:// to a host that is not loopback (a test network; never over a network you do not own). */
  insecure?: boolean | undefined;
  /** Where images are kept (default DATA_DIR/images). */
  imageDir?: string | undefined;
  /** Its settings (default: read from the environment by runnerConfigFrom). */
  config?: RunnerConfig | undefined;
  logger: Logger;
  /** Called with a refusal that retrying cannot mend (revoked token, too old a runner): the caller exits. */
  onRefused: (why: string) => void;
}

export interface JoinedRunner {
  id: string;
  close(): Promise<void>;
}

/** Backoff between attempts: doubling from half a second, capped at 30 s, each with jitter (so runners do not return in step). */
export function backoffMs(attempt: number, random = Math.random): number {
  const ceiling = Math.min(30_000, 500 * 2 ** Math.min(attempt, 16));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/** The control plane's WebSocket URL; plain ws:// only to loopback unless `insecure`. */
export function connectUrl(url: string, insecure: boolean): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw invalid(`'${url}' is not a URL: give the control plane's, like https://berth.example.com`);
  }
  if (u.protocol === 'https:' || u.protocol === 'wss:') u.protocol = 'wss:';
  else if (u.protocol === 'http:' || u.protocol === 'ws:') {
    const loopback = ['localhost', '127.0.0.1', '[::1]'].includes(u.hostname) || u.hostname.startsWith('127.');
    if (!loopback && !insecure) throw invalid(`${url} is not TLS: the runner's token and every command would cross the network in the clear. Use https://, or --insecure on a network you trust`);
    u.protocol = 'ws:';
  } else throw invalid(`'${url}' must be an https:// URL`);
  u.pathname = `${u.pathname.replace(/\/$/, '')}${CONNECT_PATH}`;
  u.search = '';
  return u;
}

/** The id this runner keeps in its data dir, made on its first join. */
function runnerId(dataDir: string): string {
  const path = join(dataDir, 'runner-id');
  try {
    const id = readFileSync(path, 'utf8').trim();
    if (RUNNER_ID.test(id)) return id;
  } catch {
    // first join
  }
  const id = `rnr_${randomBytes(12).toString('hex')}`;
  writeFileSync(path, `${id}\n`, { mode: 0o600 });
  return id;
}

const EgressPolicyWire = z.object({
  allowDomains: z.array(z.string()),
  presets: z.array(z.string()),
  allowPorts: z.array(z.number().int()).nullable(),
  allowMethods: z.array(z.string()).nullable(),
  maxConnections: z.number().int().min(0),
  credentials: z.array(z.object({ host: z.string(), pathPrefix: z.string(), header: z.string(), value: z.string(), name: z.string() })),
  scope: z.string(),
});
const MirrorWire = z.object({ ecosystem: z.string(), url: z.string() });

/** The policies the control plane pushed, per environment; one it has not pushed is denied everything. */
class PushedPolicies implements PolicySource {
  readonly #by = new Map<string, { policy: EgressPolicy; mirrors: PackageMirror[] }>();

  set(id: string, value: { policy: unknown; mirrors: unknown[] }): void {
    const policy = EgressPolicyWire.safeParse(value.policy);
    if (!policy.success) return;
    const mirrors = value.mirrors.flatMap((m) => (MirrorWire.safeParse(m).success ? [m as PackageMirror] : []));
    this.#by.set(id, { policy: policy.data, mirrors });
  }

  forget(id: string): void {
    this.#by.delete(id);
  }

  policyFor(id: string): EgressPolicy {
    return this.#by.get(id)?.policy ?? DENY_ALL;
  }

  mirrorsFor(id: string): PackageMirror[] {
    return this.#by.get(id)?.mirrors ?? [];
  }
}

/** Network events, sent to the control plane in batches; held (up to a bound) while it is away. */
class EventBatches implements NetworkEventSink {
  #queue: NetworkEvent[] = [];
  #dropped = 0;
  send: ((events: NetworkEvent[]) => boolean) | undefined;
  readonly #timer: NodeJS.Timeout;

  readonly log: Logger;

  constructor(log: Logger) {
    this.log = log;
    this.#timer = setInterval(() => this.flush(), 250);
    this.#timer.unref();
  }

  record(e: NetworkEvent): void {
    if (this.#queue.length >= 20_000) {
      this.#queue.shift();
      this.#dropped++;
    }
    this.#queue.push(e);
  }

  flush(): void {
    if (this.#dropped) {
      this.log.warn({ dropped: this.#dropped }, 'network events dropped while the control plane was away');
      this.#dropped = 0;
    }
    while (this.#queue.length && this.send) {
      const batch = this.#queue.slice(0, 500);
      if (!this.send(batch)) return;
      this.#queue = this.#queue.slice(batch.length);
    }
  }

  close(): void {
    clearInterval(this.#timer);
  }
}

/** Dials the control plane and serves this host's environments until closed. */
export async function joinControlPlane(o: JoinOptions): Promise<JoinedRunner> {
  const target = connectUrl(o.url, o.insecure === true);
  mkdirSync(o.dataDir, { recursive: true, mode: 0o700 });
  const log = o.logger;
  const id = runnerId(o.dataDir);
  const name = o.name ?? hostname();
  // Its settings, read once and checked, as berth up's runner reads them (config.ts).
  const config = o.config ?? runnerConfigFrom(process.env);
  // The company network where this runner sits (BERTH_EGRESS_TRUSTED_NETWORKS, BERTH_EGRESS_UPSTREAM_PROXY,
  // BERTH_EXTRA_CA_CERTS), as berth up reads them: its environments, pulls and builds go out through it.
  const companyCas = loadCompanyCas(config.extraCaFiles);
  let egressNetwork: EgressNetworkConfig;
  try {
    egressNetwork = egressNetworkConfigFrom({ env: process.env });
  } catch (err) {
    throw invalid((err as Error).message);
  }
  const hostTrust = companyCas.length ? writeHostTrust(join(o.dataDir, 'trust'), companyCas) : undefined;
  const images = new ImageStore({ dir: o.imageDir ?? join(o.dataDir, 'images'), logger: log, allowedRegistries: config.allowedRegistries, registryMirrors: config.registryMirrors, maxImageBytes: config.maxImageBytes, registryCertDir: hostTrust?.certDir, egressNetwork });
  await images.buildDefault();
  const policies = new PushedPolicies();
  const events = new EventBatches(log);
  const runner = new LocalRunner({ dataDir: o.dataDir, id, name, images, logger: log, runtime: config.runtime, initBinary: config.initBinary, agent: config.agent, diskQuota: config.diskQuota, stateStore: config.stateStore, compiler: config.compiler, network: { policies, events, companyCas: companyCas.map((c) => c.pem), egressNetwork }, builder: new ImageBuilder({ store: images, egressNetwork }) });
  const isolation = [runner.backend.name, ...(runner.backend.name !== 'runsc' && installed('runsc') ? ['runsc'] : [])];
  const checkpoint = await runner.checkpointSupport();
  const snapshots = await runner.snapshotSupport();
  const probe = () => probeHost({ backend: runner.backend.name, network: Boolean(runner.network), diskQuota: runner.diskQuota, dataDir: o.dataDir, minFreeDiskBytes: config.minFreeDiskBytes, egressNetwork: summarizeEgressNetwork(egressNetwork), checkpoint, snapshots });
  const ca = o.ca ? [...rootCertificates, o.ca] : undefined;

  // What a connection has under way is ended when it drops (nobody is left to read it).
  // The control plane's policies are kept as it pushes them, and with each start.
  const service = serveRunner(runner, {
    beforeStart: (spec, a) => policies.set(spec.id, z.object({ policy: z.unknown(), mirrors: z.array(z.unknown()) }).parse(a.policy)),
    afterRemove: (envId) => policies.forget(envId),
  });
  let closing = false;
  let current: WebSocket | undefined;

  /** One connection, until it closes: 'refused' when retrying is pointless. */
  const connectOnce = () =>
    new Promise<{ welcomed: boolean; why: string; refused?: boolean }>((resolve) => {
      let welcomed = false;
      let refused: string | undefined;
      let lastError = '';
      const ws = new WebSocket(target, {
        headers: { authorization: `Bearer ${o.token}`, [PROTOCOL_HEADER]: String(PROTOCOL_VERSION) },
        maxPayload: MAX_FRAME_BYTES,
        ...(ca && { ca }),
        handshakeTimeout: 15_000,
      });
      current = ws;
      ws.on('unexpected-response', (_req, res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body = (body + d).slice(0, 4096)));
        res.on('end', () => {
          let message = body;
          try {
            message = (JSON.parse(body) as { error?: { message?: string } }).error?.message ?? body;
          } catch {
            // not JSON
          }
          const why = `the control plane answered ${res.statusCode}: ${message || res.statusMessage}`;
          // A token it does not take, or a runner too old for it: the same answer every time.
          if (res.statusCode === 401 || res.statusCode === 403 || res.statusCode === 426) resolve({ welcomed, why, refused: true });
          else resolve({ welcomed, why });
          ws.terminate();
        });
      });
      let beat: NodeJS.Timeout | undefined;
      const peer = new Peer(ws, {
        parse: (raw) => {
          const r = FromControlPlane.safeParse(raw);
          return r.success ? r.data : undefined;
        },
        onViolation: (why) => ws.close(1002, why),
        onCall: (method, args, call) => service.call(peer, method, args, call),
        onMessage: (m) => {
          const msg = m as FromControlPlane;
          if (msg.t === 'welcome') {
            welcomed = true;
            log.info({ runner: id, controlPlane: o.url }, 'joined the control plane');
            events.send = (batch) => (peer.open ? (peer.send({ t: 'network', events: batch }), true) : false);
            beat = setInterval(() => peer.send({ t: 'beat', probe: probe() }), msg.heartbeatMs);
            beat.unref();
          } else if (msg.t === 'policies') {
            for (const [envId, p] of Object.entries(msg.policies)) policies.set(envId, p);
          } else if (msg.t === 'forget') {
            for (const envId of msg.environments) policies.forget(envId);
          } else if (msg.t === 'reset') {
            peer.resetChannel(msg.channel, new Error(msg.message));
          }
        },
      });
      ws.on('open', () => {
        peer.send({ t: 'hello', id, name, host: hostname(), version: VERSION, labels: o.labels, isolation, probe: probe() });
      });
      ws.on('close', (code, reason) => {
        clearInterval(beat);
        events.send = undefined;
        // Nobody is left to read these: end them rather than let them run unseen.
        service.end();
        const text = reason.toString('utf8') || lastError;
        if (code === 4401 || code === 4426 || code === 4409) refused = text;
        resolve({ welcomed, why: `connection closed (${code}${text ? `: ${text}` : ''})`, ...(refused !== undefined && { refused: true }) });
      });
      // Why a connection failed (refused, a certificate not trusted, a timeout), for the retry's log line.
      ws.on('error', (err) => (lastError = err.message));
    });

  const loop = (async () => {
    let attempt = 0;
    while (!closing) {
      const r = await connectOnce();
      if (closing) return;
      if (r.refused) {
        o.onRefused(r.why);
        return;
      }
      if (r.welcomed) attempt = 0;
      const wait = backoffMs(attempt++);
      log.warn({ attempt, retryInMs: wait, reason: r.why }, `not connected to ${o.url}: trying again in ${(wait / 1000).toFixed(1)} s`);
      await new Promise((res) => setTimeout(res, wait));
    }
  })();

  return {
    id,
    async close() {
      closing = true;
      current?.close(1001, 'runner stopping');
      await loop.catch(() => {});
      events.close();
      runner.close();
    },
  };
}
