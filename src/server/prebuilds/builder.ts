// Builds queued prebuilds, one at a time per control plane: claims a row (FOR UPDATE SKIP
// LOCKED), heartbeats while it works, clones the project's default branch on the host, makes
// an environment (Berth's own: owner 'system'; the requester is the row's created_by), copies
// the checkout in, runs the setup, freezes it with SnapshotService (kind 'prebuild') and
// removes the environment. Written first, settled last: a row is ready only once its snapshot
// is; a builder that stops heartbeating (kill -9) has its row failed and its environment and
// any snapshot it made removed by the next builder that looks (recover).
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { sql } from 'kysely';
import { parseSize } from '../../shared/units.ts';
import { Redactor } from '../../shared/redact.ts';
import type { Db, ProjectRow } from '../db/index.ts';
import type { EnvironmentService } from '../environments/service.ts';
import type { SecretService } from '../secrets/service.ts';
import type { SnapshotService } from '../snapshots/service.ts';
import type { RunnerPool } from '../runners/pool.ts';
import type { RepoAccess } from '../../forges/index.ts';
import type { SpecImageDeps } from '../tasks/spec-image.ts';
import { buildSpecImage } from '../tasks/spec-image.ts';
import { cloneProject } from '../tasks/project-spec.ts';
import { mergeSpec, readRepoSpec } from '../tasks/repo-config.ts';
import { copyRepoIn } from '../tasks/copy-in.ts';
import { workEnvironmentBody } from '../tasks/work-environment.ts';
import { runIn } from '../tasks/sandbox.ts';
import { repoNameOf } from '../tasks/change-text.ts';
import { snapshotNameOf, systemScope, type PrebuildRow, type PrebuildService } from './service.ts';
import { specKey } from './spec-key.ts';
import { ScheduledPrebuilds } from './schedule.ts';

/** Lines of setup output kept on the row. */
const LOG_LINES = 200;
const SETUP_TIMEOUT_MS = 30 * 60_000;

export interface PrebuildBuilderDeps {
  db: Db;
  prebuilds: PrebuildService;
  environments: EnvironmentService;
  snapshots: SnapshotService;
  secrets: SecretService;
  repos: RepoAccess;
  runners: RunnerPool;
  logger: Logger;
  /** Host directory for the clones (DATA_DIR/prebuilds). */
  workDir: string;
  images?: SpecImageDeps | undefined;
  /** How often a builder says it is alive, and after how long without that it is dead. */
  heartbeatMs?: number;
  staleAfterMs?: number;
  /** How often queued rows, dead builders, schedules and expiry are looked at. */
  pollMs?: number;
  now?: () => Date;
  /** Told when one of a project's prebuilds becomes ready (warm pools roll to it). */
  onReady?: ((projectId: string) => void) | undefined;
}

class BuildFailed extends Error {}

const buildEnvName = (prebuildId: string) => `prebuild-${prebuildId.slice(4).toLowerCase()}`.slice(0, 63);

export class PrebuildBuilder {
  readonly #d: PrebuildBuilderDeps;
  /** This process, as claimed_by says. */
  readonly replica = `replica_${randomBytes(6).toString('hex')}`;
  readonly #schedules: ScheduledPrebuilds;
  #timer: NodeJS.Timeout | undefined;
  #busy: Promise<void> | null = null;
  #again = false;
  #closed = false;
  #abort = new AbortController();

  constructor(deps: PrebuildBuilderDeps) {
    this.#d = deps;
    this.#schedules = new ScheduledPrebuilds({ db: deps.db, prebuilds: deps.prebuilds, logger: deps.logger, now: deps.now ?? (() => new Date()) });
    deps.prebuilds.onQueued = () => this.poke();
  }

  start(): void {
    const loop = () => {
      if (this.#closed) return;
      this.poke();
      this.#timer = setTimeout(loop, this.#d.pollMs ?? 5_000);
      this.#timer.unref();
    };
    loop();
  }

  async stop(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#abort.abort(new Error('the control plane is stopping'));
    await this.#busy?.catch(() => {});
  }

  /** Looks now: a queued prebuild starts without waiting for the poll. */
  poke(): void {
    if (this.#closed) return;
    if (this.#busy) {
      this.#again = true;
      return;
    }
    this.#busy = this.#pass()
      .catch((err: unknown) => this.#d.logger.error({ err }, 'prebuilds: a pass failed'))
      .finally(() => {
        this.#busy = null;
        if (this.#again && !this.#closed) {
          this.#again = false;
          this.poke();
        }
      });
  }

  /** Resolves once nothing is queued or building here (tests, benches). */
  async idle(): Promise<void> {
    while (this.#busy) await this.#busy;
  }

  async #pass(): Promise<void> {
    await this.recover();
    await this.#schedules.fire();
    // maxAge passes with time, not only with builds: every project with more than its newest.
    const many = await this.#d.db.selectFrom('prebuilds').select('project_id').where('state', '=', 'ready').groupBy('project_id').having((eb) => eb.fn.countAll(), '>', 1).execute();
    for (const { project_id } of many) await this.#d.prebuilds.expire(project_id).catch((err: unknown) => this.#d.logger.warn({ err, project: project_id }, 'prebuilds: expiry failed'));
    for (let row = await this.#claim(); row && !this.#closed; row = await this.#claim()) {
      await this.#build(row);
      await this.#d.prebuilds.expire(row.project_id).catch((err: unknown) => this.#d.logger.warn({ err, project: row.project_id }, 'prebuilds: expiry failed'));
    }
  }

  async #claim(): Promise<PrebuildRow | undefined> {
    const { rows } = await sql<PrebuildRow>`
      update prebuilds set state = 'building', claimed_by = ${this.replica}, heartbeat_at = now(), started_at = now()
      where id = (select id from prebuilds where state = 'queued' order by created_at, id limit 1 for update skip locked)
      returning *`.execute(this.#d.db);
    return rows[0];
  }

  /**
   * Prebuilds whose builder stopped heartbeating: failed, their build environment and any
   * snapshot they made removed. Nothing half-made stays: a row is only ever ready with its snapshot.
   */
  async recover(): Promise<number> {
    const staleAfter = this.#d.staleAfterMs ?? 60_000;
    const cutoff = new Date((this.#d.now?.() ?? new Date()).getTime() - staleAfter);
    const dead = await this.#d.db
      .selectFrom('prebuilds')
      .selectAll()
      .where('state', '=', 'building')
      .where((eb) => eb.or([eb('heartbeat_at', 'is', null), eb('heartbeat_at', '<', cutoff)]))
      .execute();
    for (const row of dead) {
      const taken = await this.#d.db
        .updateTable('prebuilds')
        .set({ state: 'failed', state_reason: `interrupted: the control plane building it stopped (last heard from ${row.heartbeat_at ? new Date(row.heartbeat_at).toISOString() : 'never'}); run \`berth prebuild\` again`, finished_at: new Date(), claimed_by: this.replica })
        .where('id', '=', row.id)
        .where('state', '=', 'building')
        .where('claimed_by', 'is not distinct from', row.claimed_by)
        .executeTakeFirst();
      if (Number(taken.numUpdatedRows) === 0) continue;
      await this.#cleanUp(row);
      this.#d.logger.warn({ prebuild: row.id }, 'prebuilds: failed a prebuild whose builder stopped');
    }
    return dead.length;
  }

  /** Removes what a build left: its environment and a snapshot it made (found by name). */
  async #cleanUp(row: Pick<PrebuildRow, 'id' | 'org_id' | 'environment_id'>): Promise<void> {
    const scope = systemScope(row.org_id);
    // Made but not yet written on the row: found by its name.
    const environmentId = row.environment_id ?? (await this.#d.db.selectFrom('environments').select('id').where('org_id', '=', row.org_id).where('name', '=', buildEnvName(row.id)).where('state', '!=', 'deleted').executeTakeFirst())?.id;
    if (environmentId) await this.#d.environments.remove(scope, environmentId).catch((err: unknown) => this.#d.logger.warn({ err, prebuild: row.id }, 'prebuilds: could not remove a build environment'));
    const snap = await this.#d.db.selectFrom('snapshots').select(['id', 'runner_id']).where('org_id', '=', row.org_id).where('name', '=', snapshotNameOf(row.id)).where('deleted_at', 'is', null).executeTakeFirst();
    if (snap) await this.#d.prebuilds.removeSnapshot(snap.id, snap.runner_id);
  }

  async #build(row: PrebuildRow): Promise<void> {
    const d = this.#d;
    const log: string[] = [];
    const redactor = { current: new Redactor([]) };
    const keep = (text: string) => {
      for (const line of redactor.current.redact(text).split('\n')) if (line) log.push(line.slice(0, 2000));
      log.splice(0, Math.max(0, log.length - LOG_LINES));
    };
    const patch = (p: Record<string, unknown>) => d.db.updateTable('prebuilds').set({ ...p, heartbeat_at: new Date() }).where('id', '=', row.id).where('claimed_by', '=', this.replica).where('state', '=', 'building').executeTakeFirst();
    const beat = setInterval(() => void patch({ log: JSON.stringify(log) }).catch(() => {}), d.heartbeatMs ?? 5_000);
    const dir = join(d.workDir, row.id);
    const scope = systemScope(row.org_id);
    let environmentId: string | null = null;
    try {
      const project = await d.db.selectFrom('projects').selectAll().where('id', '=', row.project_id).executeTakeFirst();
      if (!project || project.archived_at) throw new BuildFailed('the project was removed');
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true });
      const repoDir = join(dir, 'repo');
      let cloned: Awaited<ReturnType<typeof cloneProject>>;
      try {
        cloned = await cloneProject(d, project, repoDir, { signal: this.#abort.signal });
      } catch (err) {
        throw new BuildFailed(`could not clone ${project.repo_url}: ${(err as Error).message}`);
      }
      const secretValues = [...(await d.secrets.forProject(row.org_id, project.id)), ...cloned.secrets.map((value) => ({ name: 'forge credentials', value }))];
      redactor.current = new Redactor(secretValues);
      keep(`cloned ${cloned.branch} at ${cloned.baseSha.slice(0, 12)}`);
      await patch({ commit_sha: cloned.baseSha, branch: cloned.branch });

      let spec;
      try {
        spec = mergeSpec(await readRepoSpec(repoDir), project.settings.work ?? {});
      } catch (err) {
        throw new BuildFailed((err as Error).message);
      }
      const runner = await d.runners.place({ labels: project.settings.runnerLabels, memoryBytes: spec.limits.memory === undefined ? 0 : (parseSize(spec.limits.memory) ?? 0) });
      if (spec.build) {
        if (!d.images) throw new BuildFailed('this control plane does not build devcontainer images: name an image in devcontainer.json or the project settings');
        const built = await buildSpecImage(d.images, { orgId: row.org_id, project: project.name, runner, repoDir, spec, signal: this.#abort.signal, onLog: keep }).catch((err: Error) => {
          throw new BuildFailed(`the devcontainer image could not be built: ${err.message}`);
        });
        spec.image = built!.name;
      }
      const key = specKey(spec);
      const env = await this.#makeEnvironment(row, project, spec, runner.id);
      environmentId = env;
      const root = spec.workspaceFolder ?? `/workspace/${repoNameOf(project.repo_url!)}`;
      const copied = await copyRepoIn(d.environments, scope, env, { repoDir, root, user: spec.user, signal: this.#abort.signal });
      if (!copied.ok) throw new BuildFailed(`could not copy the repository into the environment: ${copied.stderr.toString('utf8').slice(-2000).trim()}`);

      for (const cmd of spec.setup) {
        keep(`$ ${cmd}`);
        const r = await runIn(d.environments, scope, env, ['sh', '-c', 'exec 2>&1; ' + cmd], { cwd: root, env: spec.env, timeoutMs: SETUP_TIMEOUT_MS, signal: this.#abort.signal, maxOutput: 256 * 1024 });
        keep(r.stdout.toString('utf8'));
        if (r.exitCode !== 0) throw new BuildFailed(`setup command \`${cmd}\` exited with ${r.exitCode}${r.timedOut ? ' (timed out)' : ''}: fix it in ${spec.source} or the project's settings`);
      }

      // Frozen under a name that leads back to this row, so a killed builder's snapshot is found.
      const snapshot = await d.snapshots.create(scope, env, { name: snapshotNameOf(row.id), kind: 'prebuild', projectId: project.id, createdBy: 'system' });
      const done = await patch({ state: 'ready', snapshot_id: snapshot.id, spec_key: key, runner_id: runner.id, finished_at: new Date(), log: JSON.stringify(log), state_reason: null });
      if (Number(done.numUpdatedRows) === 0) {
        // Declared dead meanwhile (a stalled heartbeat): the row says failed, so its snapshot goes.
        await d.prebuilds.removeSnapshot(snapshot.id, runner.id);
      } else d.onReady?.(project.id);
    } catch (err) {
      const reason = err instanceof BuildFailed ? err.message : `prebuild failed: ${(err as Error).message}`;
      if (!(err instanceof BuildFailed)) d.logger.error({ err, prebuild: row.id }, 'prebuilds: build failed');
      await patch({ state: 'failed', state_reason: redactor.current.redact(reason).slice(0, 4000), finished_at: new Date(), log: JSON.stringify(log) }).catch(() => {});
      // A snapshot made before the failure (the ready write failed) goes with it.
      await this.#cleanUp({ id: row.id, org_id: row.org_id, environment_id: null });
    } finally {
      clearInterval(beat);
      if (environmentId) await d.environments.remove(scope, environmentId).catch((err: unknown) => d.logger.warn({ err, prebuild: row.id }, 'prebuilds: could not remove the build environment'));
      await rm(dir, { recursive: true, force: true }).catch(() => {});
    }
  }

  /** Written on the row before it is made, so a killed builder's environment is found and removed. */
  async #makeEnvironment(row: PrebuildRow, project: ProjectRow, spec: ReturnType<typeof mergeSpec>, runnerId: string): Promise<string> {
    const d = this.#d;
    const name = buildEnvName(row.id);
    const env = await d.environments.create(systemScope(row.org_id), workEnvironmentBody(spec, { name, project: project.id }), { runnerId });
    await d.db.updateTable('prebuilds').set({ environment_id: env.id, runner_id: runnerId }).where('id', '=', row.id).execute();
    return env.id;
  }
}
