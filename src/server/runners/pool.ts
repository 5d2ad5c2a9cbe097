import type { Logger } from 'pino';
import type { Runner } from '../../runner/index.ts';
import { sql } from 'kysely';
import { DEFAULT_LIMITS } from '../../shared/environment.ts';
import { unavailable } from '../../shared/errors.ts';
import { formatSize } from '../../shared/units.ts';
import type { Db } from '../db/index.ts';

/** What a new environment asks of the runner it goes to. */
export interface PlacementRequest {
  /** Labels the runner must carry, each with this value (`gpu=true`). */
  labels?: Record<string, string> | undefined;
  memoryBytes: number;
}

/**
 * The runners this control-plane process can reach now: berth up's own, and those joined
 * over the network whose connection this replica holds. An environment stays on the
 * runner it was made on; a runner that is not here is reached through the replica that
 * holds it, or is lost until it comes back.
 */
export class RunnerPool {
  readonly #runners = new Map<string, Runner>();
  readonly #db: Db;
  readonly #log: Logger;
  /** Environments made before runners could join (runner_id null) are this runner's. */
  #legacy: string | undefined;
  readonly #added: ((runner: Runner) => void)[] = [];
  readonly #removed: ((id: string) => void)[] = [];
  /** How a runner held by another replica is reached (relay.ts); unset, such a runner is lost here. */
  #elsewhere: ((id: string) => Promise<Runner | undefined>) | undefined;

  constructor(opts: { db: Db; logger: Logger }) {
    this.#db = opts.db;
    this.#log = opts.logger;
  }

  /** A runner that connected (or berth up's own, with `legacy`: it owns the environments made before runner ids). */
  add(runner: Runner, opts: { legacy?: boolean } = {}): void {
    this.#runners.set(runner.id, runner);
    if (opts.legacy) this.#legacy = runner.id;
    this.#log.debug({ runner: runner.id }, 'runner available');
    for (const listener of this.#added) listener(runner);
  }

  delete(id: string): void {
    if (!this.#runners.delete(id)) return;
    for (const listener of this.#removed) listener(id);
  }

  /** Called with each runner added from now on (a worker starts for it, its lost environments are reconciled). */
  onAdded(listener: (runner: Runner) => void): void {
    this.#added.push(listener);
  }

  /** Called with the id of each runner that leaves (its connection ended). */
  onRemoved(listener: (id: string) => void): void {
    this.#removed.push(listener);
  }

  /** The id an environment's runner_id column means (null: made before runners could join). */
  idOf(runnerId: string | null): string | undefined {
    return runnerId ?? this.#legacy;
  }

  /** The runner an environment lives on; refused with the reason when it is not connected. */
  get(runnerId: string | null, what = 'the environment'): Runner {
    const id = this.idOf(runnerId);
    const runner = id === undefined ? undefined : this.#runners.get(id);
    if (!runner) {
      throw unavailable(`${what} lives on runner '${id ?? 'local'}', which is not connected: it is lost until that runner is back (\`berth runner list\` shows its state)`);
    }
    return runner;
  }

  /**
   * The runner an environment lives on, here or through the replica that holds it; refused
   * with the reason when no replica does (its heartbeat stopped: it is lost until it is back).
   */
  async resolve(runnerId: string | null, what = 'the environment'): Promise<Runner> {
    const id = this.idOf(runnerId);
    const here = id === undefined ? undefined : this.#runners.get(id);
    if (here) return here;
    const there = id === undefined ? undefined : await this.#elsewhere?.(id);
    return there ?? this.get(runnerId, what);
  }

  /** Where runners held by other replicas are found (the replica relay). */
  reachElsewhere(reach: (id: string) => Promise<Runner | undefined>): void {
    this.#elsewhere = reach;
  }

  has(id: string): boolean {
    return this.#runners.has(id);
  }

  all(): Runner[] {
    return [...this.#runners.values()];
  }

  /**
   * Chooses the runner for a new environment: one connected, online, not draining, carrying
   * every label asked for, that can take its memory once what is placed on it is counted
   * (never overcommitted), and of those the one with the most memory left.
   */
  async place(req: PlacementRequest): Promise<Runner> {
    // This replica's runners, and (with the replica relay) those other replicas hold: a
    // create that reaches a replica with no runner of its own is placed all the same.
    const candidates: { id: string }[] = this.all();
    if (this.#elsewhere) {
      const others = await this.#db.selectFrom('runners').select('id').where('replica_url', 'is not', null).where('stopped_at', 'is', null).where('offline_at', 'is', null).execute();
      for (const { id } of others) if (!this.#runners.has(id)) candidates.push({ id });
    }
    if (candidates.length === 0) throw unavailable('no runner is connected to this control plane: start one with `berth runner join` (or `berth up` without --no-runner)');
    const rows = await this.#rows(candidates.map((r) => r.id));
    const used = await this.placedMemory();
    const wanted = Object.entries(req.labels ?? {});
    let best: { runner: { id: string }; free: number } | undefined;
    let labelled = 0;
    let available = 0;
    let mostFree = 0;
    for (const runner of candidates) {
      const row = rows.get(runner.id);
      const labels = row?.labels ?? {};
      if (!wanted.every(([k, v]) => labels[k] === v)) continue;
      labelled++;
      if (row?.draining || row?.offline_at) continue;
      available++;
      const free = memoryOf(row) - (used.get(runner.id) ?? 0);
      mostFree = Math.max(mostFree, free);
      if (free < req.memoryBytes) continue;
      if (!best || free > best.free) best = { runner, free };
    }
    if (!best) {
      const asked = wanted.map(([k, v]) => `${k}=${v}`).join(', ');
      if (labelled === 0) throw unavailable(`no connected runner has the labels ${asked}: \`berth runner list\` shows the runners and their labels`);
      if (available === 0) throw unavailable(`every runner that could take it${asked ? ` (labels ${asked})` : ''} is draining or offline: undrain one (\`berth runner undrain NAME\`) or join another`);
      throw unavailable(
        `no runner${asked ? ` with the labels ${asked}` : ''} has ${formatSize(req.memoryBytes)} of memory free (the most free is ${formatSize(Math.max(0, mostFree))}): ` +
          'stop or remove environments you do not need (`berth env list`), ask for less memory (--memory), or join another runner',
      );
    }
    return this.#runners.get(best.runner.id) ?? this.resolve(best.runner.id, 'the runner chosen');
  }

  /**
   * Refuses when `runnerId` cannot take `memoryBytes` more: a task's environment on the runner
   * that claimed it. `exceptTask`'s own hold (made at its claim) is not counted against it.
   */
  async assertFits(runnerId: string, memoryBytes: number, exceptTask?: string | undefined): Promise<void> {
    const rows = await this.#rows([runnerId]);
    const used = (await this.placedMemory(exceptTask)).get(runnerId) ?? 0;
    const free = memoryOf(rows.get(runnerId)) - used;
    if (free < memoryBytes) {
      throw unavailable(`runner '${rows.get(runnerId)?.name ?? runnerId}' has ${formatSize(Math.max(0, free))} of memory free, less than the ${formatSize(memoryBytes)} asked for: ask for less memory or retry when it has room`);
    }
  }

  /**
   * Memory placed on each runner: environments that are (or are becoming) running, and what
   * tasks claimed by a runner hold for an environment they have not made yet.
   */
  async placedMemory(exceptTask?: string | undefined): Promise<Map<string, number>> {
    const envs = await this.#db
      .selectFrom('environments')
      .select(['runner_id', (eb) => eb.fn.sum<string>('memory_bytes').as('memory')])
      .where('state', 'in', ['creating', 'starting', 'running'])
      .groupBy('runner_id')
      .execute();
    let held = this.#db
      .selectFrom('tasks')
      .select(['runner_id', sql<string>`sum(coalesce(memory_bytes, ${DEFAULT_LIMITS.memoryBytes}))`.as('memory')])
      .where('state', 'in', ['provisioning', 'running'])
      .where('environment_id', 'is', null)
      .where('runner_id', 'is not', null)
      .groupBy('runner_id');
    if (exceptTask) held = held.where('id', '<>', exceptTask);
    const used = new Map<string, number>();
    for (const p of [...envs, ...(await held.execute())]) {
      const id = this.idOf(p.runner_id);
      if (id !== undefined) used.set(id, (used.get(id) ?? 0) + Number(p.memory));
    }
    return used;
  }

  async #rows(ids: string[]) {
    const rows = await this.#db.selectFrom('runners').select(['id', 'name', 'labels', 'draining', 'offline_at', 'report']).where('id', 'in', ids).execute();
    return new Map(rows.map((r) => [r.id, r]));
  }
}

/** The memory a runner offers to environments (all of its host's unless it says less or more); one that has not reported yet is not limited here. */
export function memoryOf(row: { report: { memoryBytes?: number; offeredMemoryBytes?: number | undefined } } | undefined): number {
  return row?.report?.offeredMemoryBytes ?? row?.report?.memoryBytes ?? Number.MAX_SAFE_INTEGER;
}
