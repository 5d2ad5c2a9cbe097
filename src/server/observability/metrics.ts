import { sql } from 'kysely';
import type { Logger } from 'pino';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Db } from '../db/index.ts';

/** What the pg Pool tells of its connections (PostgreSQL only). */
export interface PoolStats {
  totalCount: number;
  idleCount: number;
  waitingCount: number;
}

export interface MetricSources {
  db: Db;
  logger: Logger;
  /** The PostgreSQL pool; undefined on PGlite, which has no pool. */
  pool?: PoolStats | undefined;
  /** Gateway tokens issued and not yet revoked. */
  gatewayTokens?: (() => number) | undefined;
}

const SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Environment operations and tasks take seconds to hours. */
const LONG_SECONDS = [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200];

/**
 * One registry per control plane (several run in one test process): the metrics that are
 * counted as things happen, and the gauges read from the database at scrape time.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly httpRequests: Histogram<'method' | 'route' | 'status'>;
  readonly environmentOperations: Histogram<'operation' | 'outcome'>;
  readonly taskDuration: Histogram<'state'>;
  readonly queueWait: Histogram;
  readonly egressRequests: Counter<'kind' | 'decision'>;
  readonly runnerHeartbeats: Counter<'runner'>;
  readonly webhookDeliveries: Counter<'source' | 'outcome'>;

  constructor(src: MetricSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.httpRequests = new Histogram({ name: 'berth_http_request_duration_seconds', help: 'API requests by method, route pattern and status, and how long they took', labelNames: ['method', 'route', 'status'], buckets: SECONDS, registers });
    this.environmentOperations = new Histogram({
      name: 'berth_environment_operation_seconds',
      help: 'Environment create and start (until running) and exec (until the command exits), by outcome',
      labelNames: ['operation', 'outcome'],
      buckets: LONG_SECONDS,
      registers,
    });
    this.taskDuration = new Histogram({ name: 'berth_task_duration_seconds', help: 'Tasks from claim to their final state, by that state', labelNames: ['state'], buckets: LONG_SECONDS, registers });
    this.queueWait = new Histogram({ name: 'berth_task_queue_wait_seconds', help: 'How long tasks waited queued before a runner claimed them', buckets: LONG_SECONDS, registers });
    this.egressRequests = new Counter({ name: 'berth_egress_requests_total', help: "Requests environments' egress proxies let through or refused, and firewall refusals (kind firewall)", labelNames: ['kind', 'decision'], registers });
    this.webhookDeliveries = new Counter({ name: 'berth_webhook_deliveries_total', help: 'Webhook deliveries (GitHub, GitLab, Slack, generic triggers) by outcome: accepted, replayed, unauthenticated, ignored, invalid, rate_limited', labelNames: ['source', 'outcome'], registers });
    this.runnerHeartbeats = new Counter({ name: 'berth_runner_heartbeats_total', help: 'Heartbeats written by the runners of this process', labelNames: ['runner'], registers });

    // Read at scrape time: the database is the truth, whichever replica changed it. A query
    // that fails leaves its gauge empty for this scrape rather than failing the whole scrape.
    const { db, logger } = src;
    const read = async (what: string, fn: () => Promise<void>) => {
      try {
        await fn();
      } catch (err) {
        logger.warn({ err, metric: what }, 'metrics: could not read from the database');
      }
    };
    new Gauge({
      name: 'berth_environments',
      help: 'Environments by state and runner (deleted ones not counted; runner empty: made before runners had ids, on the local runner)',
      labelNames: ['state', 'runner'],
      registers,
      async collect() {
        this.reset();
        await read('berth_environments', async () => {
          const rows = await db.selectFrom('environments').select(['state', 'runner_id', sql<string>`count(*)`.as('n')]).where('state', '<>', 'deleted').groupBy(['state', 'runner_id']).execute();
          for (const r of rows) this.set({ state: r.state, runner: r.runner_id ?? '' }, Number(r.n));
        });
      },
    });
    new Gauge({
      name: 'berth_tasks',
      help: 'Tasks by state and by the runner that claimed them (empty: none yet)',
      labelNames: ['state', 'runner'],
      registers,
      async collect() {
        this.reset();
        await read('berth_tasks', async () => {
          const rows = await db.selectFrom('tasks').select(['state', 'runner_id', sql<string>`count(*)`.as('n')]).groupBy(['state', 'runner_id']).execute();
          for (const r of rows) this.set({ state: r.state, runner: r.runner_id ?? '' }, Number(r.n));
        });
      },
    });
    new Gauge({
      name: 'berth_task_queue_depth',
      help: 'Tasks queued and not yet claimed by a runner',
      registers,
      async collect() {
        await read('berth_task_queue_depth', async () => {
          const row = await db.selectFrom('tasks').select(sql<string>`count(*)`.as('n')).where('state', '=', 'queued').executeTakeFirst();
          this.set(Number(row?.n ?? 0));
        });
      },
    });
    new Gauge({
      name: 'berth_runner_heartbeat_age_seconds',
      help: "Seconds since each runner's last heartbeat (by the database's clock); stopped runners are left out",
      labelNames: ['runner', 'name'],
      registers,
      async collect() {
        this.reset();
        await read('berth_runner_heartbeat_age_seconds', async () => {
          const rows = await db
            .selectFrom('runners')
            .select(['id', 'name', sql<string>`extract(epoch from now() - heartbeat_at)`.as('age')])
            .where('stopped_at', 'is', null)
            .execute();
          for (const r of rows) this.set({ runner: r.id, name: r.name }, Math.max(0, Number(r.age)));
        });
      },
    });
    if (src.gatewayTokens) {
      const outstanding = src.gatewayTokens;
      new Gauge({ name: 'berth_gateway_tokens_outstanding', help: "LLM gateway task tokens issued and not yet revoked (tasks' agents that may call models)", registers, collect() { this.set(outstanding()); } });
    }
    if (src.pool) {
      const pool = src.pool;
      new Gauge({
        name: 'berth_db_pool_connections',
        help: 'PostgreSQL pool: connections open (total), idle, and queries waiting for one (waiting)',
        labelNames: ['state'],
        registers,
        collect() {
          this.set({ state: 'total' }, pool.totalCount);
          this.set({ state: 'idle' }, pool.idleCount);
          this.set({ state: 'waiting' }, pool.waitingCount);
        },
      });
    }
  }
}
