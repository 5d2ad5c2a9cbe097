import type { Logger } from 'pino';
import type { Runner } from '../../runner/index.ts';
import { unavailable } from '../../shared/errors.ts';
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

  constructor(opts: { db: Db; logger: Logger }) {
    this.#db = opts.db;
    this.#log = opts.logger;
  }

  /** A runner that connected (or berth up's own, with `legacy`: it owns the environments made before runner ids). */
  add(runner: Runner, opts: { legacy?: boolean } = {}): void {
    this.#runners.set(runner.id, runner);
    if (opts.legacy) this.#legacy = runner.id;
    this.#log.debug({ runner: runner.id }, 'runner available');
  }

  delete(id: string): void {
    this.#runners.delete(id);
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

  has(id: string): boolean {
    return this.#runners.has(id);
  }

  all(): Runner[] {
    return [...this.#runners.values()];
  }

  /**
   * Chooses the runner for a new environment: one connected, not draining, carrying every
   * label asked for, with the most memory left once the environments placed on it are counted.
   */
  async place(req: PlacementRequest): Promise<Runner> {
    const candidates = this.all();
    if (candidates.length === 0) throw unavailable('no runner is connected to this control plane: start one with `berth runner join` (or `berth up` without --no-runner)');
    const ids = candidates.map((r) => r.id);
    const rows = await this.#db.selectFrom('runners').select(['id', 'labels', 'draining', 'report']).where('id', 'in', ids).execute();
    const byId = new Map(rows.map((r) => [r.id, r]));
    const placed = await this.#db
      .selectFrom('environments')
      .select(['runner_id', (eb) => eb.fn.sum<string>('memory_bytes').as('memory')])
      .where('state', 'in', ['creating', 'starting', 'running'])
      .groupBy('runner_id')
      .execute();
    const used = new Map(placed.map((p) => [this.idOf(p.runner_id), Number(p.memory)]));
    const wanted = Object.entries(req.labels ?? {});
    let best: { runner: Runner; free: number } | undefined;
    let matching = 0;
    for (const runner of candidates) {
      const row = byId.get(runner.id);
      const labels = row?.labels ?? {};
      if (!wanted.every(([k, v]) => labels[k] === v)) continue;
      if (row?.draining) continue;
      matching++;
      const memory = row?.report?.memoryBytes ?? Number.MAX_SAFE_INTEGER;
      const free = memory - (used.get(runner.id) ?? 0);
      if (!best || free > best.free) best = { runner, free };
    }
    if (!best) {
      const asked = wanted.map(([k, v]) => `${k}=${v}`).join(', ');
      throw unavailable(
        matching === 0 && wanted.length
          ? `no connected runner has the labels ${asked}: \`berth runner list\` shows the runners and their labels`
          : 'every runner that could take it is draining: undrain one or join another',
      );
    }
    return best.runner;
  }
}
