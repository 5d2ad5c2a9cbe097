import { availableParallelism } from 'node:os';
import { sql } from 'kysely';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { EnvironmentLimits } from '../../shared/environment.ts';
import type { CreateEnvironmentBody, Environment, EnvironmentDetail, EnvironmentList } from '../../shared/api.ts';
import { canTransition, LOSABLE, type EnvironmentState } from '../../shared/environment.ts';
import { BerthError, conflict, invalid, notFound, unavailable } from '../../shared/errors.ts';
import { isEnvironmentId, newId, randomName } from '../../shared/ids.ts';
import { formatDuration } from '../../shared/units.ts';
import type { CacheKind } from '../../shared/caches.ts';
import { DEFAULT_IMAGE, type CommandOptions, type EnvironmentSpec, type ResolvedUser, type Runner, type RunningCommand } from '../../runner/index.ts';
import type { RunnerPool } from '../runners/pool.ts';
import type { AuditEntry, AuditLog } from '../audit/index.ts';
import { commandRecord, intentRecord } from './command-record.ts';
import type { CommandIntent } from '../../shared/audit-words.ts';
import type { Scope } from '../authz.ts';
import { assertEnvironmentAccess, environmentOwnership, granteeOf, ownerIdOf, type Ownership } from '../ownership.ts';
import { projectIdOf } from '../projects.ts';
import { projectRegistryLogin } from './registry-logins.ts';
import { isUniqueViolation, type Db, type EnvironmentRow, type EnvironmentUpdate, type Role } from '../db/index.ts';
import { redactCommand, type SecretService } from '../secrets/service.ts';
import { Redactor, type RedactSecret } from '../../shared/redact.ts';
import { limitsOf, toApi } from './convert.ts';
import { afterPageCursor, encodePageCursor, pageKey } from '../db/page.ts';
import { limitsFrom } from './limits.ts';
import { checkCreateAllowList, storeEnvironmentAllowList } from '../policy/index.ts';

/** Files a new environment starts with (an import): written on its runner before its first start. */
export interface Seed {
  /** The image they were made on: the one it resolves to must be it. */
  imageDigest: string;
  write(runner: Runner, spec: EnvironmentSpec): Promise<void>;
}

/** What an export says of the environment it copies. */
export interface ExportedEnvironment {
  id: string;
  name: string;
  image: string;
  imageDigest: string | null;
  limits: EnvironmentLimits;
  user: string | null;
}

/** What listeners learn of a new environment. */
export interface CreatedEnvironment {
  id: string;
  orgId: string;
  projectId: string | null;
  /** It was created with its own allow list (a policy row was written). */
  ownPolicy: boolean;
}

/**
 * How a stopped environment that a person reaches for (exec, a terminal, a copy) starts by
 * itself, unless its org turned auto-start off (exec's `how.autoStart`).
 */
export interface AutoStart {
  /** How it was reached, for the audit entry. */
  via: 'exec' | 'terminal' | 'copy';
  /** Called with its name just before it starts, so the caller can say so. */
  starting(name: string): void;
}

/** Times create, start and exec (observability/index.ts): called as each begins, its result as it ends. */
export type OperationTimer = (operation: 'create' | 'start' | 'exec', environmentId: string) => (error?: unknown) => void;

export interface ListOptions {
  state?: EnvironmentState | undefined;
  limit: number;
  cursor?: string | undefined;
  includeDeleted?: boolean | undefined;
}

/**
 * Environments as the API sees them: the rows in the database and the runner that
 * makes them real. Every state change is written before the runner acts on it, so a
 * restart can tell what was under way (see reconcile).
 */
export class EnvironmentService {
  readonly #db: Db;
  readonly #runners: RunnerPool;
  readonly #log: Logger;
  readonly #hostCpus: number;
  readonly #audit: AuditLog;
  readonly #secrets: SecretService;
  /** One operation at a time per environment: start, stop and rm never interleave. */
  readonly #locks = new Map<string, Promise<unknown>>();
  /** Commands running per environment; an environment with one is not idle. */
  readonly #activeCommands = new Map<string, number>();
  /**
   * When each environment last ran a command, kept here and written to the database by
   * the sweep rather than twice per command: the idle clock needs minutes, not milliseconds.
   */
  readonly #lastActive = new Map<string, Date>();
  /** Each environment's user as ids, for the start it was looked up in. */
  readonly #users = new Map<string, { key: string; user: ResolvedUser }>();
  /** Told of each new environment before it starts (the egress policy cache loads it). */
  readonly #onCreated: ((e: CreatedEnvironment) => Promise<void>)[] = [];

  readonly #timer: OperationTimer | undefined;

  constructor(opts: { db: Db; runners: RunnerPool; logger: Logger; audit: AuditLog; secrets: SecretService; hostCpus?: number; timer?: OperationTimer | undefined }) {
    this.#timer = opts.timer;
    this.#db = opts.db;
    this.#secrets = opts.secrets;
    this.#audit = opts.audit;
    this.#runners = opts.runners;
    this.#log = opts.logger;
    this.#hostCpus = opts.hostCpus ?? availableParallelism();
  }

  /**
   * @param opts.mayWiden the caller may widen the egress policy (an admin): its allow list is not held to the inherited one.
   * @param opts.role the caller's role, recorded with the allow list: widening or removing it later needs that role.
   * @param opts.hostPaths the caller is an instance administrator, whose `image` may be a path on the server. Nobody
   *   else's may (a repository's berth.yaml or devcontainer image, as the task pipeline passes it, never is).
   * @param opts.runnerId the runner it must go to (a task's: the runner that claimed it); else placement chooses.
   * @param opts.pool a warm pool's (prebuilds/warm-pool.ts): nobody's until a task claims it.
   */
  async create(scope: Scope, body: CreateEnvironmentBody, opts: { mayWiden?: boolean; hostPaths?: boolean; role?: Role; presets?: string[]; runnerId?: string | undefined; seed?: Seed | undefined; snapshotId?: string | undefined; pool?: { projectId: string; prebuildId: string } | undefined } = {}): Promise<Environment> {
    const { orgId } = scope;
    // Everything that can be refused is checked before anything is written.
    const limits = limitsFrom(body, this.#hostCpus);
    const name = body.name ?? randomName('env');
    if (await this.#byName(orgId, name)) throw conflict(`the name '${name}' is taken: choose another with --name`);
    const projectId = body.project ? await projectIdOf(this.#db, orgId, body.project) : null;
    // Names resolve within the org first, then the instance's images; what it pulls is named in the org only.
    // A project's registry logins, each for its own registry only (registry-logins.ts).
    const login = projectId ? projectRegistryLogin(this.#db, this.#secrets, orgId, projectId) : undefined;
    // The runner it will live on for life: its files are there.
    const runner = opts.runnerId ? this.#runners.get(opts.runnerId, opts.snapshotId ? 'the snapshot' : 'the task') : await this.#runners.place({ labels: body.runnerLabels, memoryBytes: limits.memoryBytes });
    // The claim held the task's expected memory there; what its spec asks for must fit too (never overcommitted).
    if (opts.runnerId) await this.#runners.assertFits(opts.runnerId, limits.memoryBytes, scope.task?.id);
    const image = await runner.images.resolve(body.image ?? DEFAULT_IMAGE, { org: orgId, hostPaths: opts.hostPaths === true, login });
    if (opts.seed && image.digest !== opts.seed.imageDigest) {
      throw invalid(`image '${image.name}' is ${image.digest} on runner '${runner.name}', but the environment was exported on ${opts.seed.imageDigest}: its files belong on that image. Pull or import that image first (berth image import)`);
    }
    // Its own egress allow list, if given, may only narrow what its project and org allow (unless an admin made it).
    const allowDomains = body.allowDomains ? await checkCreateAllowList(this.#db, orgId, projectId, body.allowDomains, opts.mayWiden) : undefined;

    const id = newId('env');
    try {
      await this.#db
        .insertInto('environments')
        .values({
          id,
          org_id: orgId,
          project_id: projectId,
          name,
          image: image.name,
          image_digest: image.digest,
          state: 'creating',
          cpus: limits.cpus,
          memory_bytes: String(limits.memoryBytes),
          disk_bytes: String(limits.diskBytes),
          pids_limit: limits.pidsLimit,
          idle_timeout_ms: limits.idleTimeoutMs === null ? null : String(limits.idleTimeoutMs),
          max_lifetime_ms: limits.maxLifetimeMs === null ? null : String(limits.maxLifetimeMs),
          // Its maker's (a task's environment: the task owner's), to use and to share (ownership.ts).
          owner_id: opts.pool ? null : ownerIdOf(scope),
          task_id: scope.task?.id ?? null,
          run_as: body.user ?? null,
          forward_ports: JSON.stringify(body.forwardPorts ?? []),
          volumes: JSON.stringify(body.volumes ?? []),
          runner_id: runner.id,
          snapshot_id: opts.snapshotId ?? null,
          pool_project_id: opts.pool?.projectId ?? null,
          pool_prebuild_id: opts.pool?.prebuildId ?? null,
        })
        .execute();
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`the name '${name}' is taken: choose another with --name`);
      throw err;
    }
    // Recorded with the creator's role: a member may not later undo an admin's list (policy/service.ts).
    if (allowDomains) await storeEnvironmentAllowList(this.#db, orgId, id, allowDomains, 'environment.create', opts.role ?? (opts.mayWiden ? 'admin' : 'member'), opts.presets ?? null);
    for (const listener of this.#onCreated) await listener({ id, orgId, projectId, ownPolicy: Boolean(allowDomains) });
    return this.#withLock(id, async () => {
      const row = await this.#get(orgId, id);
      if (opts.seed) await this.#seed(row, opts.seed);
      return this.#view(scope, await this.#bringUp(row, 'creating'));
    });
  }

  /** Deletes the named volumes kept for `owner` (a removed project's id). */
  async removeVolumes(owner: string): Promise<void> {
    // A project's environments may have been on any runner: each keeps its own copy.
    for (const runner of this.#runners.all()) await runner.removeVolumes(owner);
  }

  /** Bytes of each package cache kept for `owner` (a project's id), summed over the runners that answer (each keeps its own copy). */
  async cacheUsage(owner: string): Promise<Partial<Record<CacheKind, number>>> {
    const total: Partial<Record<CacheKind, number>> = {};
    for (const runner of this.#runners.all()) {
      const usage = await runner.cacheUsage(owner).catch((err: unknown) => {
        this.#log.warn({ err, runner: runner.id, owner }, 'package cache sizes not known');
        return {};
      });
      for (const [kind, bytes] of Object.entries(usage) as [CacheKind, number][]) total[kind] = (total[kind] ?? 0) + bytes;
    }
    return total;
  }

  /** The runner the environment lives on (for the task gateway's socket). */
  async runnerOf(environmentId: string): Promise<Runner> {
    const row = await this.#db.selectFrom('environments').select(['runner_id', 'name']).where('id', '=', environmentId).executeTakeFirstOrThrow();
    return this.#runner(row);
  }

  /** Its runner, here or through the replica that holds it. */
  #runner(row: Pick<EnvironmentRow, 'runner_id' | 'name'>): Promise<Runner> {
    return this.#runners.resolve(row.runner_id, `environment '${row.name}'`);
  }

  /** Calls `listener` with each new environment's id, after its row is written and before it starts. */
  onCreated(listener: (e: CreatedEnvironment) => Promise<void>): void {
    this.#onCreated.push(listener);
  }

  /** Every environment of the org (members and viewers see them all; using one is another matter). */
  async list(scope: Scope, opts: ListOptions): Promise<EnvironmentList> {
    let q = this.#db.selectFrom('environments').selectAll().select(pageKey('environments')).where('org_id', '=', scope.orgId);
    if (opts.state) q = q.where('state', '=', opts.state);
    else if (!opts.includeDeleted) q = q.where('state', '<>', 'deleted');
    if (opts.cursor) q = q.where(afterPageCursor('environments', opts.cursor));
    const rows = await q.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(opts.limit + 1).execute();
    const page = rows.slice(0, opts.limit);
    const last = page.at(-1);
    const ownership = await environmentOwnership(this.#db, scope, page);
    const runners = await this.#runnerNames(page);
    return { items: page.map((r) => toApi(r, ownership.get(r.id)!, runners.get(this.#runners.idOf(r.runner_id) ?? ''))), nextCursor: rows.length > opts.limit && last ? encodePageCursor(last.page_key, last.id) : null };
  }

  /** Environments on one runner that exist (not deleted) and those running, over every org. */
  async counts(runnerId: string): Promise<{ running: number; total: number }> {
    let q = this.#db
      .selectFrom('environments')
      .select([sql<string>`count(*) filter (where state = 'running')`.as('running'), sql<string>`count(*)`.as('total')])
      .where('state', '<>', 'deleted');
    q = this.#runners.idOf(null) === runnerId ? q.where((eb) => eb.or([eb('runner_id', '=', runnerId), eb('runner_id', 'is', null)])) : q.where('runner_id', '=', runnerId);
    const row = await q.executeTakeFirstOrThrow();
    return { running: Number(row.running), total: Number(row.total) };
  }

  async show(scope: Scope, ref: string): Promise<EnvironmentDetail> {
    const row = await this.#getFor(scope, ref, 'org');
    const view = await this.#view(scope, row);
    const lastOomKillAt = row.last_oom_kill_at ? new Date(row.last_oom_kill_at).toISOString() : null;
    if (row.state !== 'running' && row.state !== 'stopped') return { ...view, usage: null, lastOomKillAt };
    // Its runner out of reach (gone, or held by a replica this one cannot reach) hides only the usage: the rest is on record here.
    const usage = await (async () => (await this.#runner(row)).usage(row.id, row.state === 'running'))().catch((err: unknown) => {
      if (err instanceof BerthError && err.kind === 'unavailable') return null;
      throw err;
    });
    return { ...view, usage, lastOomKillAt };
  }

  async start(scope: Scope, ref: string): Promise<Environment> {
    const { id, org_id: orgId } = await this.#getFor(scope, ref, 'shared');
    const started = await this.#withLock(id, async () => {
      const row = await this.#get(orgId, id);
      if (row.state === 'running') return row;
      this.#expect(row, 'starting', 'start');
      return this.#bringUp(await this.#transition(row, 'starting'), 'starting');
    });
    return this.#view(scope, started);
  }

  async stop(scope: Scope, ref: string, reason: string | null = null): Promise<Environment> {
    const { id, org_id: orgId } = await this.#getFor(scope, ref, 'shared');
    return this.#view(scope, await this.#stop(orgId, id, reason));
  }

  async #stop(orgId: string, id: string, reason: string | null): Promise<EnvironmentRow> {
    return this.#withLock(id, async () => {
      const row = await this.#get(orgId, id);
      if (row.state === 'stopped') return row;
      this.#expect(row, 'stopping', 'stop');
      const stopping = await this.#transition(row, 'stopping', { state_reason: reason });
      await (await this.#runner(row)).stop(id);
      return this.#transition(stopping, 'stopped', { state_reason: reason });
    });
  }

  /**
   * Pause keeps a running environment's processes and memory (CRIU), resume brings them back.
   * No runner can yet (checkpoint.ts): each refuses, saying why and what would make it work,
   * and a `paused` state comes with the first that can.
   */
  async pause(scope: Scope, ref: string, verb: 'pause' | 'resume'): Promise<never> {
    const { id, org_id: orgId } = await this.#getFor(scope, ref, 'shared');
    const row = await this.#get(orgId, id);
    if (row.state === 'lost') throw this.#lostError(row, verb);
    if (verb === 'pause' && row.state !== 'running') throw conflict(`cannot pause environment '${row.name}' while it is ${row.state}: only a running one has processes to keep`);
    const runner = await this.#runner(row);
    await (verb === 'pause' ? runner.pause(id) : runner.resume(id));
    throw new BerthError('internal', `runner '${runner.name}' says it ${verb}d environment '${row.name}', but this Berth has no paused state to record: stop it with \`berth env stop\``);
  }

  /**
   * @param opts.forget for a `lost` environment only: marks it deleted without its runner, whose
   *   host may never come back (its files stay there, for whoever runs that host to remove).
   */
  async remove(scope: Scope, ref: string, opts: { forget?: boolean } = {}): Promise<Environment> {
    const { id, org_id: orgId } = await this.#getFor(scope, ref, 'owner');
    const removed = await this.#withLock(id, async () => {
      const row = await this.#get(orgId, id);
      if (opts.forget) {
        if (row.state !== 'lost') throw conflict(`environment '${row.name}' is ${row.state}, not lost: remove it without --forget (its runner frees its files)`);
        const runner = this.#runners.idOf(row.runner_id) ?? 'its runner';
        return this.#transition(row, 'deleted', { state_reason: `forgotten while runner ${runner} was away; its files may remain on that host` });
      }
      this.#expect(row, 'deleting', 'remove');
      const deleting = await this.#transition(row, 'deleting');
      await (await this.#runner(row)).remove(id);
      return this.#transition(deleting, 'deleted', { state_reason: null });
    });
    return this.#view(scope, removed);
  }

  /**
   * Lets a member of the org (`grantee`: an email or user id) or everyone in it (`org`) use
   * the environment as their role allows. Its owner's call, or an admin's.
   */
  async share(scope: Scope, ref: string, grantee: string): Promise<Environment> {
    const row = await this.#getFor(scope, ref, 'owner');
    if (row.state === 'deleted') throw conflict(`environment '${row.name}' is deleted: there is nothing to share`);
    const id = await granteeOf(this.#db, scope, grantee);
    await this.#db
      .insertInto('environment_shares')
      .values({ environment_id: row.id, org_id: row.org_id, grantee: id, created_by: scope.actor })
      .onConflict((oc) => oc.columns(['environment_id', 'grantee']).doNothing())
      .execute();
    return this.#view(scope, row);
  }

  /** Takes back a share: open terminals of the grantee are not ended, new calls are refused. */
  async unshare(scope: Scope, ref: string, grantee: string): Promise<Environment> {
    const row = await this.#getFor(scope, ref, 'owner');
    const id = await granteeOf(this.#db, scope, grantee);
    const r = await this.#db.deleteFrom('environment_shares').where('environment_id', '=', row.id).where('grantee', '=', id).executeTakeFirst();
    if (r.numDeletedRows === 0n) throw notFound(`environment '${row.name}' is not shared with ${grantee === 'org' ? 'the org' : grantee}: \`berth env show ${row.name}\` says with whom it is`);
    return this.#view(scope, row);
  }

  /** The secrets an environment's commands receive: what is scanned for in files copied out of it. */
  async secretsOf(scope: Scope, ref: string): Promise<{ environmentId: string; secrets: RedactSecret[] }> {
    const row = await this.#getFor(scope, ref, 'shared');
    return { environmentId: row.id, secrets: row.project_id ? await this.#secrets.forProject(row.org_id, row.project_id) : [] };
  }

  /**
   * Starts a command in a running environment, counts it as activity and puts it on record.
   * `how.intent` (Berth's own callers only, never the API's) records what the command is for:
   * its end is on record as that action with the path (`file.written`, src/a.ts) instead of
   * `command.run`; its start is `command.start` as always, with the intent beside the argv.
   */
  async exec(scope: Scope, ref: string, opts: CommandOptions, how: { redact: boolean; intent?: CommandIntent | undefined; autoStart?: AutoStart | undefined; asRoot?: boolean | undefined } = { redact: true }): Promise<RunningCommand> {
    let row = await this.#getFor(scope, ref, 'shared');
    if (row.state === 'stopped' && how.autoStart) row = await this.#autoStart(scope, row, how.autoStart);
    if (row.state !== 'running') {
      if (row.state === 'lost') throw this.#lostError(row, 'run a command in');
      throw conflict(`environment '${row.name}' is ${row.state}${row.state === 'stopped' ? `: start it with \`berth env start ${row.name}\`` : ''}`);
    }
    // The project's secrets reach the command as environment variables, and its output
    // comes back with their values replaced by [secret:NAME].
    const secrets = row.project_id ? await this.#secrets.forProject(row.org_id, row.project_id) : [];
    const env = { ...opts.env };
    for (const s of secrets) env[s.name] ??= s.value;
    const redactor = new Redactor(secrets);
    // Every caller that runs a command comes through here (exec and its stream, terminals,
    // file copies, the task pipeline and agent tools), so this is where no command runs off
    // the record: argv the log cannot store is refused now, before anything is written.
    const record = commandRecord(opts, (a) => redactor.redact(a));
    const intent = how.intent ? intentRecord(how.intent, (a) => redactor.redact(a)) : undefined;
    const spec = await this.#spec(row);
    // Its user (a devcontainer's remoteUser), unless Berth itself needs its root (how.asRoot).
    const user = row.run_as && !how.asRoot ? await this.#runAs(row, spec) : undefined;
    const entry = (action: string, actor: string, details: Record<string, unknown>) => ({ orgId: row.org_id, actor, action, target: row.id, environmentId: row.id, details });
    // On record before it runs: a command whose entry cannot be written does not run.
    let start: AuditEntry;
    try {
      [start] = await Promise.all([
        this.#audit.append(entry('command.start', scope.actor, { ...record, ...(intent && { intent }) })),
        secrets.length ? this.#audit.append(entry('secret.read', `environment:${row.id}`, { names: secrets.map((s) => s.name) })) : undefined,
      ]);
    } catch (err) {
      if (err instanceof BerthError) throw err;
      this.#log.error({ err, environment: row.id }, 'could not record a command in the audit log: it was not run');
      throw unavailable('the command was not run: it could not be put on record in the audit log; try again, and ask an administrator to look at the server log if it persists');
    }
    const ended = (outcome: Record<string, unknown>) =>
      this.#audit.append(entry(intent?.action ?? 'command.run', scope.actor, { ...(intent && { path: intent.path }), ...record, startSeq: start.seq, ...outcome }));
    let started: RunningCommand;
    const timed = this.#timer?.('exec', row.id);
    try {
      started = (await this.#runner(row)).exec(spec, { ...opts, env, user });
    } catch (err) {
      timed?.(err);
      await ended({ exitCode: null, error: 'the command could not be started' }).catch((e) => this.#log.error({ err: e, environment: row.id }, 'could not record a command in the audit log'));
      throw err;
    }
    // File transfers are bytes, not output anyone reads as text: they pass untouched.
    const command = secrets.length && how.redact ? redactCommand(started, redactor) : started;
    this.#activeCommands.set(row.id, (this.#activeCommands.get(row.id) ?? 0) + 1);
    this.#lastActive.set(row.id, new Date());
    void command.exited
      .then(
        async (status) => {
          // `berth env show` tells when the OOM killer was last seen at work.
          if (status.message) {
            await this.#db
              .updateTable('environments')
              .set({ last_oom_kill_at: new Date() })
              .where('id', '=', row.id)
              .execute()
              .catch((err) => this.#log.warn({ err, environment: row.id }, 'could not record an OOM kill'));
          }
          await ended({ exitCode: status.exitCode, durationMs: Math.round(status.durationMs), timedOut: status.timedOut, ...(status.message && { oomKilled: status.oomKilled === true, message: status.message }) });
        },
        () => ended({ exitCode: null, error: 'the command could not be followed to its end' }),
      )
      // The command has run and its start is on record; only its outcome is lost.
      .catch((err) => this.#log.error({ err, environment: row.id }, 'could not record the end of a command in the audit log'))
      .finally(() => {
        timed?.();
        this.#activeCommands.set(row.id, (this.#activeCommands.get(row.id) ?? 1) - 1);
        this.#lastActive.set(row.id, new Date());
      });
    return command;
  }

  /**
   * Starts a stopped environment for a command a person asked for, unless its org turned
   * auto-start off. On record as `environment.start` with `auto: true` before it starts.
   * Returns the environment as it is now (another caller may have started it meanwhile).
   */
  async #autoStart(scope: Scope, row: EnvironmentRow, how: AutoStart): Promise<EnvironmentRow> {
    const org = await this.#db.selectFrom('orgs').select('auto_start').where('id', '=', row.org_id).executeTakeFirstOrThrow();
    if (!org.auto_start) {
      throw conflict(`environment '${row.name}' is stopped, and this org does not start environments by themselves (auto-start is off): start it with \`berth env start ${row.name}\``);
    }
    return this.#withLock(row.id, async () => {
      const current = await this.#get(row.org_id, row.id);
      if (current.state !== 'stopped') return current;
      try {
        await this.#audit.append({ orgId: row.org_id, actor: scope.actor, action: 'environment.start', target: row.id, environmentId: row.id, details: { auto: true, via: how.via } });
      } catch (err) {
        if (err instanceof BerthError) throw err;
        this.#log.error({ err, environment: row.id }, 'could not record an automatic start in the audit log: the environment was not started');
        throw unavailable(`environment '${row.name}' is stopped and was not started: its start could not be put on record in the audit log; try again, and ask an administrator to look at the server log if it persists`);
      }
      how.starting(current.name);
      return this.#bringUp(await this.#transition(current, 'starting'), 'starting');
    });
  }

  /**
   * Makes the database and the host agree after a restart. Transitions that were in
   * flight are finished or failed; nothing is left half-made or reported as running
   * when it is not.
   */
  async reconcile(runnerId: string, opts: { onlyLost?: boolean } = {}): Promise<void> {
    let q = this.#db.selectFrom('environments').selectAll().where('state', '<>', 'deleted');
    // A runner that reconnects: only what its absence made lost (its in-flight work is its own).
    if (opts.onlyLost) q = q.where('state', '=', 'lost');
    q = this.#runners.idOf(null) === runnerId ? q.where((eb) => eb.or([eb('runner_id', '=', runnerId), eb('runner_id', 'is', null)])) : q.where('runner_id', '=', runnerId);
    const rows = await q.execute();
    for (const row of rows) {
      try {
        await this.#withLock(row.id, async () => this.#reconcileOne(opts.onlyLost ? await this.#get(row.org_id, row.id) : row));
      } catch (err) {
        this.#log.error({ err, environment: row.id }, 'could not reconcile environment');
      }
    }
  }

  async #reconcileOne(row: EnvironmentRow): Promise<void> {
    const runner = await this.#runner(row);
    const actual = await runner.status(row.id);
    const log = (to: string) => this.#log.info({ environment: row.id, from: row.state, actual, to }, 'reconciled environment');
    switch (row.state) {
      case 'creating':
        await runner.remove(row.id);
        await this.#transition(row, 'failed', { state_reason: 'interrupted while being created: remove it and create a new one' });
        return log('failed');
      case 'deleting':
        await runner.remove(row.id);
        await this.#transition(row, 'deleted', { state_reason: null });
        return log('deleted');
      case 'stopping':
        await runner.stop(row.id);
        await this.#transition(row, 'stopped');
        return log('stopped');
      case 'starting':
      case 'running':
        if (actual === 'running') {
          if (row.state === 'starting') await this.#transition(row, 'running', { started_at: new Date() });
          return;
        }
        await runner.stop(row.id);
        await this.#set(row, 'stopped', { state_reason: 'its processes ended while the runner was down (host restart?): start it again' });
        return log('stopped');
      case 'stopped':
      case 'failed':
        if (actual !== 'absent') await runner.stop(row.id);
        return;
      case 'lost': {
        // Its runner is back: as found there.
        const name = (await this.#runnerNames([row])).get(runner.id) ?? runner.id;
        if (actual === 'running') await this.#transition(row, 'running', { state_reason: null });
        else if (actual === 'stopped') await this.#transition(row, 'stopped', { state_reason: `runner '${name}' came back with it stopped: start it again` });
        else await this.#transition(row, 'failed', { state_reason: `runner '${name}' came back without it (its files are gone there): remove it and create a new one` });
        return log(actual === 'absent' ? 'failed' : actual);
      }
    }
  }

  /**
   * Its runner went offline: each of its environments (but the deleted and the failed) is
   * lost, with the reason, until the runner is back and reconcile() says what became of it.
   * Returns the ids made lost.
   */
  async markLost(runnerId: string, reason: string): Promise<string[]> {
    let q = this.#db.updateTable('environments').set({ state: 'lost', state_reason: reason, updated_at: new Date() }).where('state', 'in', LOSABLE);
    q = this.#runners.idOf(null) === runnerId ? q.where((eb) => eb.or([eb('runner_id', '=', runnerId), eb('runner_id', 'is', null)])) : q.where('runner_id', '=', runnerId);
    const rows = await q.returning('id').execute();
    return rows.map((r) => r.id);
  }

  /** Stops environments that have been idle or alive too long. Returns the ids stopped. */
  async sweep(now = new Date()): Promise<string[]> {
    await this.flushActivity();
    const rows = await this.#db.selectFrom('environments').selectAll().where('state', '=', 'running').execute();
    const stopped: string[] = [];
    for (const row of rows) {
      const limits = limitsOf(row);
      const since = (d: Date | string | null) => (d === null ? 0 : now.getTime() - new Date(d).getTime());
      let reason: string | null = null;
      if (limits.maxLifetimeMs !== null && since(row.started_at) >= limits.maxLifetimeMs) {
        reason = `reached its maximum lifetime of ${formatDuration(limits.maxLifetimeMs)}`;
      } else if (
        limits.idleTimeoutMs !== null &&
        !this.#activeCommands.get(row.id) &&
        since(row.last_active_at ?? row.started_at) >= limits.idleTimeoutMs
      ) {
        reason = `idle for ${formatDuration(limits.idleTimeoutMs)}`;
      }
      if (!reason) continue;
      try {
        await this.#stop(row.org_id, row.id, reason);
        stopped.push(row.id);
        this.#log.info({ environment: row.id, reason }, 'stopped environment');
      } catch (err) {
        this.#log.error({ err, environment: row.id }, 'could not stop environment');
      }
    }
    return stopped;
  }

  async #bringUp(row: EnvironmentRow, from: 'creating' | 'starting'): Promise<EnvironmentRow> {
    const timed = this.#timer?.(from === 'creating' ? 'create' : 'start', row.id);
    try {
      await (await this.#runner(row)).start(await this.#spec(row, { caches: true }));
      timed?.();
    } catch (err) {
      timed?.(err);
      this.#log.error({ err, environment: row.id }, 'environment failed to start');
      const message = err instanceof Error ? err.message : String(err);
      if (from === 'creating') await this.#runner(row).then((r) => r.remove(row.id)).catch(() => {});
      else await this.#runner(row).then((r) => r.stop(row.id)).catch(() => {});
      await this.#transition(row, 'failed', { state_reason: message });
      if (err instanceof BerthError) throw err;
      throw unavailable(`environment '${row.name}' could not start: ${message}`);
    }
    const now = new Date();
    return this.#transition(row, 'running', { started_at: now, last_active_at: now, state_reason: null });
  }

  /** What the runner needs; at a start (`caches`), also the project's package caches as its settings name them now. */
  async #spec(row: EnvironmentRow, opts: { caches?: boolean } = {}): Promise<EnvironmentSpec> {
    const image = await (await this.#runner(row)).images.get(row.image, { org: row.org_id });
    if (!image || (row.image_digest && image.digest !== row.image_digest)) {
      throw unavailable(`image '${row.image}' of environment '${row.name}' is no longer on this runner: import it again`);
    }
    const project = opts.caches && row.project_id ? await this.#db.selectFrom('projects').select('settings').where('id', '=', row.project_id).executeTakeFirst() : undefined;
    // Named volumes and caches are the project's (its environments share them), else the environment's own.
    return { id: row.id, hostname: row.name, image, limits: limitsOf(row), volumes: row.volumes ?? [], volumeOwner: row.project_id ?? row.id, caches: project?.settings.caches };
  }

  /**
   * The environment's user as ids, looked up inside it once per start (a setup command may add
   * the user, so a miss is not kept). Unknown: the command is refused with what to do.
   */
  async #runAs(row: EnvironmentRow, spec: EnvironmentSpec): Promise<ResolvedUser> {
    const key = `${row.id}:${row.run_as}:${row.started_at ? new Date(row.started_at).getTime() : ''}`;
    const known = this.#users.get(row.id);
    if (known?.key === key) return known.user;
    let user: ResolvedUser;
    try {
      user = await (await this.#runner(row)).resolveUser(spec, row.run_as!);
    } catch (err) {
      if (err instanceof BerthError) throw invalid(`environment '${row.name}' cannot run commands as its user: ${err.message}`);
      throw err;
    }
    this.#users.set(row.id, { key, user });
    return user;
  }

  #expect(row: EnvironmentRow, to: EnvironmentState, verb: string): void {
    if (row.state === 'lost') throw this.#lostError(row, verb);
    if (!canTransition(row.state, to)) throw conflict(`cannot ${verb} environment '${row.name}' while it is ${row.state}`);
  }

  /** Refuses what cannot be done while the environment's runner is offline, saying which runner and what to do. */
  #lostError(row: EnvironmentRow, verb: string): BerthError {
    return unavailable(`cannot ${verb} environment '${row.name}': it is lost (${row.state_reason ?? 'its runner is offline'}); its files are on that runner, and it comes back when the runner does (\`berth runner list\` shows it)`);
  }

  async #transition(row: EnvironmentRow, to: EnvironmentState, patch: EnvironmentUpdate = {}): Promise<EnvironmentRow> {
    if (!canTransition(row.state, to)) throw new Error(`illegal environment transition ${row.state} -> ${to}`);
    return this.#set(row, to, patch);
  }

  async #set(row: EnvironmentRow, to: EnvironmentState, patch: EnvironmentUpdate = {}): Promise<EnvironmentRow> {
    // Only from the state it was read in: the runner sweep may have found it lost meanwhile.
    const updated = await this.#db
      .updateTable('environments')
      .set({ ...patch, state: to, updated_at: new Date() })
      .where('id', '=', row.id)
      .where('state', '=', row.state)
      .returningAll()
      .executeTakeFirst();
    if (!updated) {
      const now = await this.#db.selectFrom('environments').selectAll().where('id', '=', row.id).executeTakeFirstOrThrow();
      if (now.state === 'lost') throw this.#lostError(now, to === 'running' ? 'start' : 'change');
      throw conflict(`environment '${row.name}' changed meanwhile: it is ${now.state} now`);
    }
    return updated;
  }

  /** Writes the activity seen since the last flush; called by the sweep and at shutdown. */
  async flushActivity(): Promise<void> {
    // A command still running here is activity now: the sweep may run on another replica,
    // which cannot see this one's commands.
    for (const [id, n] of this.#activeCommands) if (n > 0) this.#lastActive.set(id, new Date());
    const pending = [...this.#lastActive];
    this.#lastActive.clear();
    for (const [id, at] of pending) {
      try {
        await this.#db.updateTable('environments').set({ last_active_at: at }).where('id', '=', id).execute();
      } catch (err) {
        this.#log.warn({ err, environment: id }, 'could not record activity');
      }
    }
  }


  async #byName(orgId: string, name: string): Promise<EnvironmentRow | undefined> {
    return this.#db
      .selectFrom('environments')
      .selectAll()
      .where('org_id', '=', orgId)
      .where('name', '=', name)
      .where('state', '<>', 'deleted')
      .executeTakeFirst();
  }

  /** The environment, if the caller may do `need` with it (ownership.ts): every public method reads through here. */
  async #getFor(scope: Scope, ref: string, need: Ownership): Promise<EnvironmentRow> {
    const row = await this.#get(scope.orgId, ref);
    await assertEnvironmentAccess(this.#db, scope, row, need);
    return row;
  }

  async #view(scope: Scope, row: EnvironmentRow): Promise<Environment> {
    const runners = await this.#runnerNames([row]);
    return toApi(row, (await environmentOwnership(this.#db, scope, [row])).get(row.id)!, runners.get(this.#runners.idOf(row.runner_id) ?? ''));
  }

  /** The names of the runners the environments live on, by runner id. */
  async #runnerNames(rows: Pick<EnvironmentRow, 'runner_id'>[]): Promise<Map<string, string>> {
    const ids = [...new Set(rows.map((r) => this.#runners.idOf(r.runner_id)).filter((id): id is string => id !== undefined))];
    if (!ids.length) return new Map();
    const found = await this.#db.selectFrom('runners').select(['id', 'name']).where('id', 'in', ids).execute();
    return new Map(found.map((r) => [r.id, r.name]));
  }

  async #get(orgId: string, ref: string): Promise<EnvironmentRow> {
    const row = isEnvironmentId(ref)
      ? await this.#db.selectFrom('environments').selectAll().where('org_id', '=', orgId).where('id', '=', ref).executeTakeFirst()
      : await this.#byName(orgId, ref);
    if (!row || (row.state === 'deleted' && !isEnvironmentId(ref))) {
      throw notFound(`no environment '${ref}': \`berth env list\` shows the ones you have`);
    }
    return row;
  }

  async #withLock<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.#locks.get(id) ?? Promise.resolve();
    const next = previous.catch(() => {}).then(fn);
    this.#locks.set(id, next);
    try {
      return await next;
    } finally {
      if (this.#locks.get(id) === next) this.#locks.delete(id);
    }
  }

  // ---- export and import (berth env export / import; environments/archive.ts frames them) ----

  /**
   * Its state as the runner streams it, read by `consume` while the environment's lock is held
   * (no start, stop or removal meanwhile). Its owner's or an admin's: it copies every file,
   * secrets written into them too.
   */
  async exportState<T>(scope: Scope, ref: string, consume: (env: ExportedEnvironment, state: Readable) => Promise<T>): Promise<T> {
    const { id, org_id: orgId } = await this.#getFor(scope, ref, 'owner');
    return this.#withLock(id, async () => {
      const row = await this.#get(orgId, id);
      if (row.state === 'lost') throw this.#lostError(row, 'export');
      if (row.state !== 'running' && row.state !== 'stopped') throw conflict(`environment '${row.name}' is ${row.state}: only a running or stopped one can be exported`);
      const runner = await this.#runner(row);
      return consume({ id, name: row.name, image: row.image, imageDigest: row.image_digest, limits: limitsOf(row), user: row.run_as }, runner.exportState(id));
    });
  }

  /**
   * Runs `fn` with the environment's runner while its lock is held (no start, stop or removal
   * meanwhile): a snapshot of its files. Its owner's or an admin's, as an export is: the files
   * may hold secrets written into them.
   */
  async holdFiles<T>(scope: Scope, ref: string, verb: string, fn: (env: ExportedEnvironment & { orgId: string; projectId: string | null; runnerId: string | null; running: boolean }, runner: Runner) => Promise<T>): Promise<T> {
    const { id, org_id: orgId } = await this.#getFor(scope, ref, 'owner');
    return this.#withLock(id, async () => {
      const row = await this.#get(orgId, id);
      if (row.state === 'lost') throw this.#lostError(row, verb);
      if (row.state !== 'running' && row.state !== 'stopped') throw conflict(`environment '${row.name}' is ${row.state}: only a running or stopped one can be ${verb === 'snapshot' ? 'snapshotted' : `${verb}ed`}`);
      const env = { id, orgId, name: row.name, image: row.image, imageDigest: row.image_digest, limits: limitsOf(row), user: row.run_as, projectId: row.project_id, runnerId: row.runner_id ?? null, running: row.state === 'running' };
      return fn(env, await this.#runner(row));
    });
  }

  /** Writes a new environment's files through its seed; a refusal leaves it failed, with why, and nothing on its runner. */
  async #seed(row: EnvironmentRow, seed: Seed): Promise<void> {
    try {
      await seed.write(await this.#runner(row), await this.#spec(row));
    } catch (err) {
      await this.#transition(row, 'failed', { state_reason: `import failed: ${err instanceof Error ? err.message : String(err)}`.slice(0, 2000) });
      throw err;
    }
  }
}
