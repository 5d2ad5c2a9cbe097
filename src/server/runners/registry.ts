import { sql } from 'kysely';
import type { Runner, RunnerHealth, RunnerList, RunnerReport } from '../../shared/api-runners.ts';
import { formatDuration } from '../../shared/units.ts';
import type { Authorizer, Caller } from '../authz.ts';
import { isoOrNull as iso, type Db } from '../db/index.ts';

/** A runner whose last heartbeat is older than this many intervals is offline. */
const MISSED_BEATS = 3;
/** …and never sooner than this: a busy database can delay one write. */
const MIN_OFFLINE_MS = 15_000;

export interface RunnerBeat {
  id: string;
  name: string;
  host: string;
  version: string;
  startedAt: Date;
  report: RunnerReport;
}

/**
 * The runners the control plane knows: each writes its report every few seconds (its
 * heartbeat) and the list says which are healthy, degraded (and why) or gone quiet.
 * Runners serve every org, so the list is instance-wide: the caller's rights are checked
 * here, not by a route's org permission.
 */
export class RunnerRegistry {
  readonly #db: Db;
  readonly #authz: Authorizer;

  constructor(opts: { db: Db; authz: Authorizer }) {
    this.#db = opts.db;
    this.#authz = opts.authz;
  }

  async beat(b: RunnerBeat): Promise<void> {
    const row = { name: b.name, host: b.host, version: b.version, report: JSON.stringify(b.report), started_at: b.startedAt, heartbeat_at: sql<Date>`now()`, stopped_at: null };
    await this.#db
      .insertInto('runners')
      .values({ id: b.id, ...row })
      .onConflict((oc) => oc.column('id').doUpdateSet(row))
      .execute();
  }

  /** A clean shutdown: listed as offline at once rather than after the missed heartbeats. */
  async stopped(id: string): Promise<void> {
    await this.#db.updateTable('runners').set({ stopped_at: sql<Date>`now()` }).where('id', '=', id).execute();
  }

  async list(caller: Caller): Promise<RunnerList> {
    await this.#authz.assertInstanceView(caller, 'runners');
    // Ages by the database's clock: the runners' and replicas' clocks need not agree.
    const rows = await this.#db
      .selectFrom('runners')
      .selectAll()
      .select([
        sql<string>`extract(epoch from now() - heartbeat_at) * 1000`.as('beat_age_ms'),
        sql<string | null>`extract(epoch from now() - stopped_at) * 1000`.as('stopped_age_ms'),
      ])
      .orderBy('name')
      .orderBy('id')
      .execute();
    return {
      items: rows.map((r): Runner => {
        const { problems, ...report } = r.report;
        const beatAge = Math.max(0, Number(r.beat_age_ms));
        const offlineAfter = Math.max(MISSED_BEATS * report.heartbeatMs, MIN_OFFLINE_MS);
        const reasons: string[] = [];
        let status: RunnerHealth = problems.length ? 'degraded' : 'ok';
        if (r.stopped_at) {
          status = 'offline';
          reasons.push(`stopped ${formatDuration(Math.round(Number(r.stopped_age_ms)))} ago`);
        } else if (beatAge > offlineAfter) {
          status = 'offline';
          reasons.push(`no heartbeat for ${formatDuration(Math.round(beatAge))} (it reports every ${formatDuration(report.heartbeatMs)})`);
        }
        reasons.push(...problems);
        return {
          ...report,
          id: r.id,
          name: r.name,
          host: r.host,
          version: r.version,
          health: { status, reasons },
          startedAt: iso(r.started_at)!,
          lastHeartbeatAt: iso(r.heartbeat_at)!,
        };
      }),
    };
  }
}
