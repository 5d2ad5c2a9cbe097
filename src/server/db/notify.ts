// Notifications between control-plane replicas on one PostgreSQL (LISTEN/NOTIFY). Writers
// send them with pg_notify in the statement or transaction that makes the change (so a
// notification never announces a row that is not committed); each replica listens on one
// dedicated connection. Payloads stay small (ids): listeners read the rows themselves.
import type { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import type { Logger } from 'pino';

/** The channels Berth notifies on. */
export const CHANNELS = {
  /** A task's transcript grew: payload `taskId:seq`. */
  taskEvents: 'berth_task_events',
  /** Something the egress policy cache is made from changed (sent by triggers, migration 0018). */
  policy: 'berth_policy',
  /** A task was queued or cancelled, or a campaign's task ended: payload `state:taskId` (a trigger, migrations 0022 and 0026). */
  tasks: 'berth_tasks',
} as const;

type Channel = (typeof CHANNELS)[keyof typeof CHANNELS];
type Handler = (payload: string) => void;

export interface ChangeFeed {
  /** True when notifications reach other processes (PostgreSQL); false on PGlite, where there is only this one. */
  readonly shared: boolean;
  /** Calls `fn` with the payload of every notification on `channel`, this process's own included. */
  listen(channel: Channel, fn: Handler): () => void;
  /**
   * Calls `fn` after the listening connection came back from a loss: whatever was notified
   * meanwhile was missed, so listeners read again what they follow.
   */
  onResume(fn: () => void): () => void;
  close(): Promise<void>;
}

const FIRST_RETRY_MS = 100;
const MAX_RETRY_MS = 5_000;

/** PostgreSQL: one connection of its own that LISTENs, reconnected with backoff when it drops. */
export class PostgresFeed implements ChangeFeed {
  readonly shared = true;
  readonly #url: string;
  readonly #log: Pick<Logger, 'warn' | 'info'>;
  readonly #handlers = new Map<string, Set<Handler>>();
  readonly #resumed = new Set<() => void>();
  #client: pg.Client | null = null;
  /** The LISTENs sent on `#client`, one after another: a pg client runs one query at a time (pg@9 refuses a second). */
  #listens: Promise<void> = Promise.resolve();
  #retryMs = FIRST_RETRY_MS;
  #retry: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(opts: { url: string; logger: Pick<Logger, 'warn' | 'info'> }) {
    this.#url = opts.url;
    this.#log = opts.logger;
  }

  /** Connects the first time; a failure here stops the start (the database was just reachable). */
  async start(): Promise<void> {
    await this.#connect();
  }

  listen(channel: Channel, fn: Handler): () => void {
    let set = this.#handlers.get(channel);
    if (!set) {
      set = new Set();
      this.#handlers.set(channel, set);
      const client = this.#client;
      if (client) {
        // After the LISTENs before it: channels first listened to together would otherwise be two queries at once.
        this.#listens = this.#listens.then(() => client.query(`LISTEN ${channel}`)).then(
          () => {},
          (err: Error) => this.#lost(client, err),
        );
      }
    }
    set.add(fn);
    return () => set.delete(fn);
  }

  onResume(fn: () => void): () => void {
    this.#resumed.add(fn);
    return () => this.#resumed.delete(fn);
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retry);
    const client = this.#client;
    this.#client = null;
    await client?.end().catch(() => {});
  }

  async #connect(): Promise<void> {
    // keepAlive: a connection the network silently dropped is found out, not trusted for hours.
    const client = new pg.Client({ connectionString: this.#url, keepAlive: true, application_name: 'berth-listen' });
    client.on('error', (err) => this.#lost(client, err));
    client.on('end', () => this.#lost(client, new Error('connection ended')));
    client.on('notification', (n) => {
      for (const fn of this.#handlers.get(n.channel) ?? []) {
        try {
          fn(n.payload ?? '');
        } catch (err) {
          this.#log.warn({ err, channel: n.channel }, 'a notification listener failed');
        }
      }
    });
    try {
      await client.connect();
      for (const channel of this.#handlers.keys()) await client.query(`LISTEN ${channel}`);
    } catch (err) {
      client.removeAllListeners('end');
      await client.end().catch(() => {});
      throw err;
    }
    if (this.#closed) {
      await client.end().catch(() => {});
      return;
    }
    this.#client = client;
    this.#listens = Promise.resolve();
  }

  #lost(client: pg.Client, err: Error): void {
    if (this.#client !== client || this.#closed) return;
    this.#client = null;
    client.end().catch(() => {});
    this.#log.warn({ err: err.message }, 'lost the PostgreSQL connection that listens for changes; reconnecting');
    this.#reconnectSoon();
  }

  #reconnectSoon(): void {
    if (this.#closed) return;
    const delay = this.#retryMs;
    this.#retryMs = Math.min(MAX_RETRY_MS, this.#retryMs * 2);
    this.#retry = setTimeout(() => {
      this.#connect().then(
        () => {
          if (this.#closed) return;
          this.#retryMs = FIRST_RETRY_MS;
          this.#log.info({}, 'listening for changes again; reading what was missed');
          for (const fn of this.#resumed) fn();
        },
        () => this.#reconnectSoon(),
      );
    }, delay);
    this.#retry.unref();
  }
}

/**
 * PGlite: one process, one connection. Its LISTEN hears the notifications the process's own
 * statements send (the triggers'), handed over when the statement returns; nothing is ever missed.
 */
export class EmbeddedFeed implements ChangeFeed {
  readonly shared = false;
  readonly #pglite: PGlite;

  constructor(pglite: PGlite) {
    this.#pglite = pglite;
  }

  listen(channel: Channel, fn: Handler): () => void {
    const unlisten = this.#pglite.listen(channel, fn);
    return () => void unlisten.then((stop) => (this.#pglite.closed ? undefined : stop())).catch(() => {});
  }

  onResume(): () => void {
    return () => {};
  }

  async close(): Promise<void> {}
}
