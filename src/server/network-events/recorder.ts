import type { Logger } from 'pino';
import { notFound } from '../../shared/errors.ts';
import type { AuditLog } from '../audit/index.ts';
import type { Db } from '../db/index.ts';
import type { Scope } from '../authz.ts';
import { assertEnvironmentAccess } from '../ownership.ts';
import type { NetworkEventView } from '../../shared/api.ts';
import type { TaskEvents } from '../tasks/index.ts';
import type { NetworkEvent, NetworkEventSink } from '../policy/types.ts';
import { DenialWindows, type DenialWindow } from './coalesce.ts';
import { Redactor, type RedactSecret } from '../../shared/redact.ts';
import type { DenialObserver } from './storms.ts';

/** Where the recorder learns which values an environment holds (SecretService). */
export interface SecretSource {
  forProject(orgId: string, projectId: string): Promise<RedactSecret[]>;
}

interface Owner {
  orgId: string;
  projectId: string | null;
  taskId: string | null;
  /** An environment without a task may get one a moment after it starts: asked again after this. */
  until: number;
}

/** Stands in for a redactor when the secrets could not be read: it keeps nothing of what it is given. */
const WITHHOLD: Pick<Redactor, 'redact'> = { redact: (s) => (s === '' ? s : '[withheld]') };

const cap = (s: string | null | undefined, n: number) => (s == null ? null : s.length > n ? s.slice(0, n) : s);

/** A refusal as the audit log and the transcript see it, with its owner. */
interface Denial {
  e: NetworkEvent;
  owner: Owner;
}

/** How long repeats of one refusal are counted before the count is written. */
export const DENIAL_WINDOW_MS = 60_000;

/**
 * Keeps what every environment's egress proxy let through or refused, and what its
 * firewall refused. record() only queues (the proxy may emit hundreds a second and must
 * never wait on the database); the queue is written in multi-row inserts every
 * flushIntervalMs or when a batch is full. Every event is a row. A refusal also goes to
 * the audit log and, for a task's environment, to the task's transcript: the first of
 * its kind (environment, host, port, rule) in a minute at once, its repeats in that
 * minute as one entry with `repeated` when the minute is up (or on close).
 */
export class NetworkEventRecorder implements NetworkEventSink {
  readonly #db: Db;
  readonly #audit: AuditLog;
  readonly #taskEvents: TaskEvents | undefined;
  readonly #log: Logger;
  readonly #maxBatch: number;
  readonly #maxQueue: number;
  #queue: NetworkEvent[] = [];
  #dropped = 0;
  #flushing: Promise<void> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;
  readonly #owners = new Map<string, Owner | null>();
  readonly #secrets: SecretSource | undefined;
  /** Per environment, its secrets' redactor, asked again after a few seconds (a secret set meanwhile). */
  readonly #redactors = new Map<string, { redactor: Redactor; until: number }>();
  readonly #windows: DenialWindows<Denial>;
  readonly #now: () => number;
  readonly #denials: DenialObserver | undefined;
  /** Told of every event as it comes (the metrics' counters), dropped ones too. */
  readonly #counted: ((e: NetworkEvent) => void) | undefined;

  /** @param opts.denialWindowMs how long repeats are counted (DENIAL_WINDOW_MS); @param opts.now the clock (tests). */
  /** @param opts.secrets what the environments hold: a request that carries a value out is recorded with `[secret:NAME]` in its place. */
  /** @param opts.denials told of what tasks' environments were refused and let through (denial storms). */
  constructor(opts: { db: Db; audit: AuditLog; taskEvents?: TaskEvents; secrets?: SecretSource | undefined; logger: Logger; flushIntervalMs?: number; maxBatch?: number; maxQueue?: number; denialWindowMs?: number; now?: () => number; denials?: DenialObserver | undefined; counted?: ((e: NetworkEvent) => void) | undefined }) {
    this.#counted = opts.counted;
    this.#db = opts.db;
    this.#denials = opts.denials;
    this.#secrets = opts.secrets;
    this.#audit = opts.audit;
    this.#taskEvents = opts.taskEvents;
    this.#log = opts.logger;
    this.#maxBatch = opts.maxBatch ?? 500;
    this.#maxQueue = opts.maxQueue ?? 100_000;
    this.#windows = new DenialWindows({ windowMs: opts.denialWindowMs ?? DENIAL_WINDOW_MS });
    this.#now = opts.now ?? Date.now;
    this.#timer = setInterval(() => void this.flush(), opts.flushIntervalMs ?? 250);
    this.#timer.unref();
  }

  record(e: NetworkEvent): void {
    this.#counted?.(e);
    // A flood the database cannot keep up with costs events, not the runner's memory.
    if (this.#queue.length >= this.#maxQueue) {
      this.#dropped += 1;
      return;
    }
    this.#queue.push(e);
    if (this.#queue.length === this.#maxBatch) void this.flush();
  }

  /** Writes everything queued so far, and the counts of windows that ran out; resolves when it is stored. */
  flush(opts: { closeWindows?: boolean } = {}): Promise<void> {
    this.#flushing = this.#flushing.then(async () => {
      // Counts first: a window that ran out before this batch came closes before it opens another.
      await this.#writeRepeats(this.#windows.close(this.#now(), opts.closeWindows));
      while (this.#queue.length) {
        const batch = this.#queue.splice(0, this.#maxBatch);
        try {
          await this.#write(batch);
        } catch (err) {
          this.#log.error({ err, events: batch.length }, 'could not store network events');
        }
      }
      if (this.#dropped) {
        this.#log.warn({ dropped: this.#dropped }, 'network events came faster than they could be stored; some were dropped');
        this.#dropped = 0;
      }
    });
    return this.#flushing;
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.flush();
    await this.flush({ closeWindows: true });
  }

  async #write(batch: NetworkEvent[]): Promise<void> {
    const owners = await this.#ownersOf(batch.map((e) => e.environmentId));
    const rows = [];
    const denied: Denial[] = [];
    const now = this.#now();
    for (const raw of batch) {
      const owner = owners.get(raw.environmentId);
      if (!owner) continue; // removed, or never ours
      // A refused request is how a value would leave: its host and path are written redacted.
      const r = await this.#redactorFor(raw.environmentId, owner);
      const e = r ? { ...raw, host: r.redact(raw.host), path: raw.path == null ? raw.path : r.redact(raw.path), error: raw.error == null ? raw.error : r.redact(raw.error) } : raw;
      rows.push({
        org_id: owner.orgId,
        environment_id: e.environmentId,
        at: e.at,
        kind: e.kind,
        host: cap(e.host, 253)!,
        port: e.port,
        method: cap(e.method, 32),
        path: cap(e.path, 2048),
        allowed: e.allowed,
        rule: cap(e.rule, 500)!,
        status: e.status,
        bytes_up: Math.max(0, Math.round(e.bytesUp)),
        bytes_down: Math.max(0, Math.round(e.bytesDown)),
        duration_ms: Math.max(0, Math.round(e.durationMs)),
        error: cap(e.error, 500),
        packets: e.packets === undefined ? null : Math.max(0, Math.round(e.packets)),
      });
      if (owner.taskId && this.#denials) {
        if (e.allowed) this.#denials.allowed(owner.taskId, now);
        else this.#denials.refused(owner.taskId, e.environmentId, { host: e.host, port: e.port, rule: e.rule }, now);
      }
      if (!e.allowed && this.#windows.note(`${e.environmentId}\0${e.host}\0${e.port}\0${e.rule}`, { e, owner }, e.packets ?? 0, now)) denied.push({ e, owner });
    }
    if (rows.length) await this.#db.insertInto('network_events').values(rows).execute();
    await Promise.all(denied.map((d) => this.#writeDenial(d)));
  }

  /** Each window's repeats as one entry (and one transcript line). */
  async #writeRepeats(windows: DenialWindow<Denial>[]): Promise<void> {
    await Promise.all(
      windows.map((w) =>
        this.#writeDenial(w.first, { repeated: w.repeated, ...(w.first.e.packets === undefined ? {} : { packets: w.packets }), since: new Date(w.openedAt).toISOString() }).catch((err: unknown) =>
          this.#log.error({ err }, 'could not write the count of repeated network denials'),
        ),
      ),
    );
  }

  async #writeDenial({ e, owner }: Denial, repeats?: { repeated: number; packets?: number; since: string }): Promise<void> {
    const what = { kind: e.kind, method: e.method, host: e.host, port: e.port, path: cap(e.path, 2048), rule: e.rule, ...(e.packets === undefined ? {} : { packets: e.packets }), ...repeats };
    await this.#audit.append({ orgId: owner.orgId, actor: `environment:${e.environmentId}`, action: 'network.denied', target: `${e.host}:${e.port}`, environmentId: e.environmentId, details: what });
    if (owner.taskId && this.#taskEvents) {
      await this.#taskEvents.append(owner.taskId, { type: 'network', allowed: false, host: e.host, port: e.port, method: e.method, path: cap(e.path, 2048), rule: e.rule, ...(repeats && { repeated: repeats.repeated }) });
    }
  }

  async #ownersOf(ids: string[]): Promise<Map<string, Owner | null>> {
    const now = Date.now();
    const unknown = [...new Set(ids)].filter((id) => {
      const o = this.#owners.get(id);
      return o === undefined || (o !== null && o.until < now);
    });
    if (unknown.length) {
      const rows = await this.#db
        .selectFrom('environments')
        .leftJoin('tasks', 'tasks.environment_id', 'environments.id')
        .select(['environments.id', 'environments.org_id', 'environments.project_id', 'tasks.id as task_id'])
        .where('environments.id', 'in', unknown)
        .execute();
      if (this.#owners.size > 50_000) this.#owners.clear();
      for (const id of unknown) this.#owners.set(id, null);
      for (const r of rows) this.#owners.set(r.id, { orgId: r.org_id, projectId: r.project_id, taskId: r.task_id, until: r.task_id ? Infinity : now + 5_000 });
    }
    return this.#owners;
  }

  async #redactorFor(environmentId: string, owner: Owner): Promise<Pick<Redactor, 'redact'> | null> {
    if (!this.#secrets || !owner.projectId) return null;
    const now = Date.now();
    const known = this.#redactors.get(environmentId);
    if (known && known.until > now) return known.redactor;
    let redactor: Redactor;
    try {
      redactor = new Redactor(await this.#secrets.forProject(owner.orgId, owner.projectId));
    } catch (err) {
      // Without the values nothing could be redacted: the fields that could carry one are left out.
      this.#log.error({ err, environment: environmentId }, 'could not read the secrets to redact network events with');
      return WITHHOLD;
    }
    if (this.#redactors.size > 10_000) this.#redactors.clear();
    this.#redactors.set(environmentId, { redactor, until: now + 5_000 });
    return redactor;
  }

  /** The environment's events, newest first. */
  async list(scope: Scope, environmentRef: string, opts: { limit: number; denied?: boolean | undefined; before?: string | undefined }): Promise<{ environmentId: string; items: NetworkEventView[] }> {
    const { orgId } = scope;
    await this.flush();
    const env = await this.#db
      .selectFrom('environments')
      .select(['id', 'name', 'owner_id', 'task_id'])
      .where('org_id', '=', orgId)
      .where((eb) => eb.or([eb('id', '=', environmentRef), eb('name', '=', environmentRef)]))
      .orderBy('created_at', 'desc')
      .executeTakeFirst();
    if (!env) throw notFound(`no environment '${environmentRef}': \`berth env list\` shows them`);
    // What an environment reached is for those who may use it (ownership.ts).
    await assertEnvironmentAccess(this.#db, scope, env, 'shared');
    let q = this.#db.selectFrom('network_events').selectAll().where('environment_id', '=', env.id).where('org_id', '=', orgId);
    if (opts.denied) q = q.where('allowed', '=', false);
    if (opts.before) q = q.where('at', '<', new Date(opts.before));
    const rows = await q.orderBy('at', 'desc').orderBy('id', 'desc').limit(opts.limit).execute();
    return {
      environmentId: env.id,
      items: rows.map((r) => ({
        at: new Date(r.at).toISOString(),
        kind: r.kind,
        method: r.method,
        host: r.host,
        port: r.port,
        path: r.path,
        allowed: r.allowed,
        rule: r.rule,
        status: r.status,
        bytesUp: Number(r.bytes_up),
        bytesDown: Number(r.bytes_down),
        durationMs: r.duration_ms,
        error: r.error,
        packets: r.packets,
      })),
    };
  }
}
