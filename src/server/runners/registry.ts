import { sql } from 'kysely';
import type { Runner, RunnerHealth, RunnerList, RunnerReport } from '../../shared/api-runners.ts';
import { formatDuration } from '../../shared/units.ts';
import { notFound } from '../../shared/errors.ts';
import { forbidden, type Authorizer, type Caller } from '../authz.ts';
import { isoOrNull as iso, type Db } from '../db/index.ts';

/** A runner whose last heartbeat is older than this many intervals is offline (the runner sweep uses it too). */
export const MISSED_BEATS = 3;
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
  /** A runner is offline after missing three beats, and never sooner than this (BERTH_RUNNER_OFFLINE_AFTER, default 15 s). */
  readonly #offlineAfterMs: number;

  constructor(opts: { db: Db; authz: Authorizer; offlineAfterMs?: number | undefined }) {
    this.#db = opts.db;
    this.#authz = opts.authz;
    this.#offlineAfterMs = opts.offlineAfterMs ?? MIN_OFFLINE_MS;
  }

  async beat(b: RunnerBeat): Promise<void> {
    // A beat from a runner found offline says it is back: the sweep reconciles its lost environments.
    const row = { name: b.name, host: b.host, version: b.version, report: JSON.stringify(b.report), started_at: b.startedAt, heartbeat_at: sql<Date>`now()`, stopped_at: null, offline_at: null };
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

  /**
   * Drains a runner (no new environments or tasks go to it; what runs there finishes) or
   * undrains it. Instance administrators only: runners serve every org. `ref` is its id or name.
   */
  async setDraining(caller: Caller, ref: string, draining: boolean): Promise<Runner> {
    if (!caller.instanceAdmin) throw forbidden(`${draining ? 'draining' : 'undraining'} a runner needs an instance administrator: runners serve every org`);
    const found = await this.#db.selectFrom('runners').select(['id', 'name']).where((eb) => eb.or([eb('id', '=', ref), eb('name', '=', ref)])).execute();
    if (found.length === 0) throw notFound(`no runner '${ref}': \`berth runner list\` shows them`);
    if (found.length > 1) throw notFound(`${found.length} runners are named '${ref}': give its id (\`berth runner list --json\`)`);
    await this.#db.updateTable('runners').set({ draining }).where('id', '=', found[0]!.id).execute();
    return (await this.list(caller)).items.find((r) => r.id === found[0]!.id)!;
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
        const offlineAfter = Math.max(MISSED_BEATS * report.heartbeatMs, this.#offlineAfterMs);
        const reasons: string[] = [];
        let status: RunnerHealth = problems.length ? 'degraded' : 'ok';
        if (r.stopped_at) {
          status = 'offline';
          reasons.push(`stopped ${formatDuration(Math.round(Number(r.stopped_age_ms)))} ago`);
        } else if (r.offline_at || beatAge > offlineAfter) {
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
          labels: r.labels ?? {},
          draining: r.draining ?? false,
        };
      }),
    };
  }
}
