// Metrics (Prometheus text on /metrics), liveness and readiness probes, request and task
// lifecycle logs, and OpenTelemetry traces when an OTLP endpoint is set.
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { notFound, unauthorized } from '../../shared/errors.ts';
import { currentSpan, runInSpan, type OpenSpan } from '../../shared/spans.ts';
import type { TaskEvent, TaskEventData } from '../../shared/tasks.ts';
import type { App } from '../app.ts';
import type { Db } from '../db/index.ts';
import { Metrics, type PoolStats } from './metrics.ts';
import { readiness } from './probes.ts';
import { TaskStates } from './task-states.ts';
import type { Tracing } from './tracing.ts';
import type { ObservabilitySettings } from './settings.ts';

export { observabilitySettingsFrom, type ObservabilityOptions, type ObservabilitySettings } from './settings.ts';
export type { Readiness } from './probes.ts';

/** Probes and scrapes: logged at debug, not once every few seconds at info. */
const PROBES = new Set(['/healthz', '/readyz', '/metrics', '/health']);

/** Requests whose task is not claimed yet: the task's trace continues theirs (same process only). */
const MAX_PENDING_TASKS = 10_000;

export interface ObservabilityDeps {
  settings: ObservabilitySettings;
  db: Db;
  logger: Logger;
  version: string;
  /** The PostgreSQL pool (nothing on PGlite). */
  pool?: PoolStats | undefined;
  /** Gateway tokens issued and not yet revoked. */
  gatewayTokens?: (() => number) | undefined;
}

type EnvironmentOperation = 'create' | 'start' | 'exec';

export class Observability {
  readonly metrics: Metrics;
  readonly #d: ObservabilityDeps;
  readonly #tracing: Tracing | undefined;
  readonly #taskStates: TaskStates;
  readonly #started = Date.now();
  readonly #requestSpans = new WeakMap<FastifyRequest, OpenSpan>();
  readonly #taskParents = new Map<string, OpenSpan>();
  readonly #tokenDigest: Buffer | undefined;
  #listener: Server | undefined;
  #shuttingDown = false;

  private constructor(d: ObservabilityDeps, tracing: Tracing | undefined) {
    this.#d = d;
    this.#tracing = tracing;
    this.metrics = new Metrics({ db: d.db, logger: d.logger, pool: d.pool, gatewayTokens: d.gatewayTokens });
    this.#taskStates = new TaskStates({ db: d.db, logger: d.logger, metrics: this.metrics });
    this.#tokenDigest = d.settings.metricsToken === undefined ? undefined : digest(d.settings.metricsToken);
  }

  static async start(d: ObservabilityDeps): Promise<Observability> {
    // Loaded only when on: with traces off, no OpenTelemetry package is imported.
    const tracing = d.settings.otlpEndpoint ? await (await import('./tracing.ts')).startTracing({ endpoint: d.settings.otlpEndpoint, version: d.version, serviceName: process.env.OTEL_SERVICE_NAME }) : undefined;
    if (tracing) d.logger.info({ endpoint: d.settings.otlpEndpoint }, 'traces: exporting to the OTLP endpoint');
    return new Observability(d, tracing);
  }

  /** Hooks on every request: its metrics, its log line and (traces on) its span. Call before any other hook is added. */
  instrument(app: App): void {
    if (this.#tracing) {
      const tracing = this.#tracing;
      // A callback hook, so the rest of the request (hooks, handler, services) runs inside the span's context.
      app.addHook('onRequest', (req, _reply, done) => {
        const route = req.routeOptions.url ?? 'unmatched';
        const span = tracing.root(`${req.method} ${route}`, { 'http.request.method': req.method, 'http.route': route });
        this.#requestSpans.set(req, span);
        runInSpan(span, done);
      });
    }
    app.addHook('onResponse', async (req: FastifyRequest, reply: FastifyReply) => {
      const route = req.routeOptions.url ?? 'unmatched';
      const status = reply.statusCode;
      const seconds = reply.elapsedTime / 1000;
      this.metrics.httpRequests.observe({ method: req.method, route, status: String(status) }, seconds);
      // The route's pattern, never the path: paths carry invite codes and ids, query strings tokens.
      const line = { method: req.method, route, status, durationMs: Math.round(reply.elapsedTime * 10) / 10 };
      if (PROBES.has(route)) req.log.debug(line, 'request');
      else req.log.info(line, 'request');
      const span = this.#requestSpans.get(req);
      if (span) {
        span.setAttributes({ 'http.response.status_code': status });
        span.end(status >= 500 ? new Error(`status ${status}`) : undefined);
      }
    });
  }

  /** /metrics (token or separate listener), /healthz and /readyz. */
  routes(app: App): void {
    const probe = { schema: { hide: true }, config: { rateLimit: false } } as const;
    app.get('/healthz', probe, async () => this.#health());
    app.get('/readyz', probe, async (_req, reply) => {
      const ready = await this.readiness();
      return reply.code(ready.status === 'ready' ? 200 : 503).header('cache-control', 'no-store').send(ready);
    });
    app.get('/metrics', probe, async (req, reply) => {
      if (!this.#tokenDigest) {
        throw notFound(this.#d.settings.metricsListen ? 'metrics are served on the metrics address (BERTH_METRICS_LISTEN), not here' : 'no route GET /metrics: metrics are served with BERTH_METRICS_TOKEN set (or on BERTH_METRICS_LISTEN)');
      }
      if (!this.#bearerMatches(req.headers.authorization)) {
        void reply.header('www-authenticate', 'Bearer realm="berth metrics"');
        throw unauthorized('/metrics needs `Authorization: Bearer <BERTH_METRICS_TOKEN>`');
      }
      return reply.type(this.metrics.registry.contentType).header('cache-control', 'no-store').send(await this.metrics.registry.metrics());
    });
  }

  /** Starts the separate metrics listener when BERTH_METRICS_LISTEN is set; returns its URL. */
  async listen(): Promise<string | undefined> {
    const at = this.#d.settings.metricsListen;
    if (!at) return undefined;
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      const send = (status: number, type: string, body: string) => res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' }).end(req.method === 'HEAD' ? undefined : body);
      const json = (status: number, body: unknown) => send(status, 'application/json; charset=utf-8', JSON.stringify(body));
      if (req.method !== 'GET' && req.method !== 'HEAD') return json(405, { error: { kind: 'invalid', message: 'this address serves GET /metrics, /healthz and /readyz' } });
      const answer = async () => {
        if (path === '/metrics') return send(200, this.metrics.registry.contentType, await this.metrics.registry.metrics());
        if (path === '/healthz') return json(200, this.#health());
        if (path === '/readyz') {
          const ready = await this.readiness();
          return json(ready.status === 'ready' ? 200 : 503, ready);
        }
        return json(404, { error: { kind: 'not_found', message: `no route ${path}: this address serves /metrics, /healthz and /readyz` } });
      };
      answer().catch((err) => {
        this.#d.logger.error({ err }, 'metrics listener: request failed');
        if (!res.headersSent) json(500, { error: { kind: 'internal', message: 'internal error: the server log has the details' } });
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(at.port, at.host, () => resolve());
    });
    this.#listener = server;
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : at.port;
    return `http://${at.host.includes(':') ? `[${at.host}]` : at.host}:${port}`;
  }

  readiness() {
    return readiness({ db: this.#d.db, shuttingDown: this.#shuttingDown });
  }

  /** Readiness says so from now on: a load balancer stops sending work while the rest closes. */
  beginShutdown(): void {
    this.#shuttingDown = true;
  }

  /** For EnvironmentService: times an operation (and, traces on, makes it a span); call the result when it ends. */
  readonly environmentTimer = (operation: EnvironmentOperation, environmentId: string) => {
    const started = performance.now();
    const span = currentSpan()?.child(`environment.${operation}`, { 'berth.environment_id': environmentId });
    return (error?: unknown) => {
      this.metrics.environmentOperations.observe({ operation, outcome: error === undefined ? 'ok' : 'error' }, (performance.now() - started) / 1000);
      span?.end(error);
    };
  };

  /**
   * Hears every event appended to a task's transcript (state changes are logged and timed)
   * and, traces on, ties a queued task to the request that queued it.
   */
  watchTaskEvents(events: { append(taskId: string, data: TaskEventData): Promise<TaskEvent> }): void {
    const append = events.append.bind(events);
    events.append = (taskId, data) => {
      if (this.#tracing && data.type === 'state' && data.state === 'queued') {
        const parent = currentSpan();
        if (parent) {
          this.#taskParents.set(taskId, parent);
          if (this.#taskParents.size > MAX_PENDING_TASKS) this.#taskParents.delete(this.#taskParents.keys().next().value!);
        }
      }
      const appended = append(taskId, data);
      appended.then((event) => this.#taskStates.noted(taskId, event), () => {});
      return appended;
    };
  }

  /** For the task worker: runs a claimed task, under a span of its own with `berth.task_id` on every span below it. */
  readonly traceTask = <T>(task: { id: string; org_id: string; agent: string }, run: () => Promise<T>): Promise<T> => {
    if (!this.#tracing) return run();
    const parent = this.#taskParents.get(task.id);
    this.#taskParents.delete(task.id);
    const inherited = { 'berth.task_id': task.id };
    const span = this.#tracing.root('task.run', { 'berth.org_id': task.org_id, 'berth.agent': task.agent }, { parent, steps: true, inherited });
    return runInSpan(span, run).then(
      (v) => (span.end(), v),
      (err) => {
        span.end(err);
        throw err;
      },
    );
  };

  /** For the egress proxies' event sink: each request allowed or refused. */
  readonly networkEvent = (e: { kind: string; allowed: boolean }) => {
    this.metrics.egressRequests.inc({ kind: e.kind, decision: e.allowed ? 'allowed' : 'denied' });
  };

  /** A webhook delivery arrived: what came of it (a refused signature is counted, and nothing else recorded). */
  readonly webhookDelivery = (source: string, outcome: string) => {
    this.metrics.webhookDeliveries.inc({ source, outcome });
  };

  /** A runner of this process wrote its heartbeat. */
  heartbeat(runnerId: string): void {
    this.metrics.runnerHeartbeats.inc({ runner: runnerId });
  }

  /** Sends buffered spans now (tests, shutdown). */
  async flush(): Promise<void> {
    await this.#tracing?.flush();
  }

  async close(): Promise<void> {
    this.#shuttingDown = true;
    const listener = this.#listener;
    if (listener) {
      listener.closeAllConnections();
      await new Promise<void>((resolve) => listener.close(() => resolve()));
    }
    await this.#tracing?.close().catch((err) => this.#d.logger.warn({ err }, 'traces: could not send the last spans'));
  }

  #health() {
    return { status: 'ok' as const, version: this.#d.version, uptimeSeconds: Math.round((Date.now() - this.#started) / 1000) };
  }

  #bearerMatches(header: string | undefined): boolean {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
    // Digests of equal length, compared in constant time: neither the token nor its length leaks through timing.
    return m !== null && timingSafeEqual(digest(m[1]!), this.#tokenDigest!);
  }
}

const digest = (s: string) => createHash('sha256').update(s).digest();
