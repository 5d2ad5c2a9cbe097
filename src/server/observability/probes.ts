import { sql } from 'kysely';
import type { Db } from '../db/index.ts';

/** How long the database has to answer a readiness check. */
export const READY_DB_TIMEOUT_MS = 2_000;

/** `runnersOnline` is said, not judged: a control plane with no runner yet must still be reachable, or no runner could join it through its load balancer. */
export type Readiness = ({ status: 'ready' } | { status: 'not ready'; problems: string[] }) & { runnersOnline?: number };

/**
 * Whether this control plane should get traffic: the database answers in time and it is not
 * shutting down. Each problem says what is wrong. Runners online (the rule of
 * runners/registry.ts: a heartbeat within three of its intervals, never less than 15 s) are
 * counted but do not decide: runners join through the same load balancer that reads this.
 */
export async function readiness(o: { db: Db; shuttingDown: boolean; timeoutMs?: number }): Promise<Readiness> {
  const problems: string[] = [];
  if (o.shuttingDown) problems.push('shutting down: this control plane is closing and takes no new work');
  const timeoutMs = o.timeoutMs ?? READY_DB_TIMEOUT_MS;
  let timer: NodeJS.Timeout | undefined;
  let runnersOnline: number | undefined;
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), timeoutMs)));
  try {
    const online = sql<{ n: string }>`
      select count(*) as n from runners
      where stopped_at is null
        and extract(epoch from now() - heartbeat_at) * 1000 <= greatest(3 * coalesce((report->>'heartbeatMs')::float8, 5000), 15000)`.execute(o.db);
    const answer = await Promise.race([online, late]);
    if (answer === 'late') {
      online.catch(() => {});
      problems.push(`database: no answer within ${timeoutMs} ms`);
    } else runnersOnline = Number(answer.rows[0]?.n ?? 0);
  } catch (err) {
    problems.push(`database: ${oneLine(err)}`);
  } finally {
    clearTimeout(timer);
  }
  const runners = runnersOnline === undefined ? {} : { runnersOnline };
  return problems.length ? { status: 'not ready', problems, ...runners } : { status: 'ready', ...runners };
}

/** An error's message on one short line: enough to say what failed (the details are in the log). */
function oneLine(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.split('\n')[0]!.slice(0, 200) || 'the query failed';
}
