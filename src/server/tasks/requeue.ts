import type { Db } from '../db/index.ts';
import type { TaskEvents } from './events.ts';

/** What became of the tasks a runner had under way when it went offline. */
export interface Requeued {
  requeued: string[];
  failed: string[];
}

/**
 * The runner's tasks in flight (provisioning, running) go back to the queue to start over on
 * another runner, up to `retries` times each; past that they fail with the reason. Either way
 * the lease moves on, so the run on the lost runner, if it still lives, can write nothing more.
 */
export async function requeueRunnerTasks(db: Db, events: TaskEvents, runnerId: string, why: string, retries: number): Promise<Requeued> {
  const rows = await db.selectFrom('tasks').select(['id', 'state', 'step', 'lease', 'attempts']).where('runner_id', '=', runnerId).where('state', 'in', ['provisioning', 'running']).execute();
  const done: Requeued = { requeued: [], failed: [] };
  for (const row of rows) {
    const at = `while the task was at step '${row.step ?? row.state}'`;
    if (row.attempts < retries) {
      const updated = await db
        .updateTable('tasks')
        .set({ state: 'queued', step: null, runner_id: null, environment_id: null, started_at: null, lease: row.lease + 1, attempts: row.attempts + 1, updated_at: new Date() })
        .where('id', '=', row.id)
        .where('lease', '=', row.lease)
        .where('state', '=', row.state)
        .executeTakeFirst();
      if (!Number(updated.numUpdatedRows)) continue;
      await events.append(row.id, { type: 'log', level: 'warn', message: `${why} ${at}: it starts over from the start on another runner (retry ${row.attempts + 1} of ${retries})` });
      await events.append(row.id, { type: 'state', state: 'queued' });
      done.requeued.push(row.id);
    } else {
      const reason = `${why} ${at}, and it had been started over ${row.attempts} time(s) already (BERTH_TASK_RETRIES=${retries}): retry it with \`berth task retry ${row.id}\``;
      const updated = await db
        .updateTable('tasks')
        .set({ state: 'failed', state_reason: reason, finished_at: new Date(), lease: row.lease + 1, updated_at: new Date() })
        .where('id', '=', row.id)
        .where('lease', '=', row.lease)
        .where('state', '=', row.state)
        .executeTakeFirst();
      if (!Number(updated.numUpdatedRows)) continue;
      await events.append(row.id, { type: 'state', state: 'failed', reason });
      done.failed.push(row.id);
    }
  }
  return done;
}
