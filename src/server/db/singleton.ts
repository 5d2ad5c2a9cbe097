// Periodic jobs that write (the environment sweep, network-event retention) run on one
// control-plane replica at a time. Each job is named; on PostgreSQL the replica that holds
// the job's session advisory lock runs it, and keeps the lock, so the job runs once per
// interval across replicas rather than once per replica. The locks live on one connection
// of their own: when the holder dies its connection ends, the lock goes with it, and
// another replica takes it at its next tick. On PGlite there is one process: jobs just run.
import pg from 'pg';
import type { Logger } from 'pino';

export interface Singletons {
  /**
   * Runs `fn` when this replica holds (or can take) the lock named `name`; otherwise
   * does nothing and resolves undefined.
   */
  run<T>(name: string, fn: () => Promise<T>): Promise<T | undefined>;
  /** Whether this replica holds the job's lock now (for tests and /metrics-like views). */
  holds(name: string): boolean;
  close(): Promise<void>;
}

/** PGlite: the one process is every job's holder. */
export class LocalSingletons implements Singletons {
  run<T>(_name: string, fn: () => Promise<T>): Promise<T | undefined> {
    return fn();
  }

  holds(): boolean {
    return true;
  }

  async close(): Promise<void> {}
}

export class PostgresSingletons implements Singletons {
  readonly #url: string;
  readonly #log: Pick<Logger, 'warn'>;
  readonly #held = new Set<string>();
  #client: Promise<pg.Client> | null = null;
  /** Jobs take their locks one after another: they share one connection, and a pg client runs one query at a time (pg@9 refuses a second). */
  #taking: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor(opts: { url: string; logger: Pick<Logger, 'warn'> }) {
    this.#url = opts.url;
    this.#log = opts.logger;
  }

  async run<T>(name: string, fn: () => Promise<T>): Promise<T | undefined> {
    if (this.#closed) return undefined;
    const taken = this.#taking.then(() => this.#take(name));
    this.#taking = taken.catch(() => {});
    if (!(await taken)) return undefined;
    return fn();
  }

  holds(name: string): boolean {
    return this.#held.has(name);
  }

  async close(): Promise<void> {
    this.#closed = true;
    const client = this.#client;
    this.#client = null;
    this.#held.clear();
    // Ending the session releases every lock it holds: another replica takes over at its next tick.
    if (client) await client.then((c) => c.end(), () => {}).catch(() => {});
  }

  async #take(name: string): Promise<boolean> {
    let client: pg.Client;
    try {
      client = await this.#connection();
    } catch (err) {
      // Unreachable now: this tick is skipped, the next one tries again.
      this.#log.warn({ err: (err as Error).message, job: name }, 'could not reach PostgreSQL to take a job lock; skipping this run');
      return false;
    }
    if (this.#held.has(name)) return true;
    try {
      const { rows } = await client.query<{ taken: boolean }>('select pg_try_advisory_lock(hashtextextended($1, 0)) as taken', [`berth.singleton.${name}`]);
      if (rows[0]?.taken && !this.#closed) this.#held.add(name);
    } catch (err) {
      this.#log.warn({ err: (err as Error).message, job: name }, 'could not take a job lock; skipping this run');
      return false;
    }
    return this.#held.has(name);
  }

  #connection(): Promise<pg.Client> {
    if (this.#client) return this.#client;
    const client = new pg.Client({ connectionString: this.#url, keepAlive: true, application_name: 'berth-singletons' });
    const lost = () => {
      // Locks go with the session: none is held any more, and the next run reconnects.
      if (this.#client !== made) return;
      this.#client = null;
      this.#held.clear();
      client.end().catch(() => {});
    };
    client.on('error', lost);
    client.on('end', lost);
    const made: Promise<pg.Client> = client.connect().then(
      () => client,
      (err: unknown) => {
        lost();
        throw err;
      },
    );
    this.#client = made;
    return made;
  }
}
