import type { Logger } from 'pino';
import { BerthError, conflict, invalid, notFound } from '../../shared/errors.ts';
import { atLeast, roleRank, ROLES, type Scope } from '../authz.ts';
import { assertEnvironmentAccess } from '../ownership.ts';
import type { Db, PolicyScopeKind, Role } from '../db/index.ts';
import { CHANNELS, type ChangeFeed } from '../db/notify.ts';
import { namedSecrets, receivesSecret, type EgressSecret, type SecretService } from '../secrets/service.ts';
import { credentialValue } from './credentials.ts';
import { checkDomains, HTTP_METHODS } from './domains.ts';
import { isPreset, PRESET_NAMES } from './presets.ts';
import { EMPTY_FIELDS, projectLayer, resolvePolicy, wideningOf, wideningOver, type Layer, type PolicyFields } from './resolve.ts';
import { applyMirrorPatch, mirrorCredentials, resolveMirrors, type MirrorPatch, type ResolvedMirror } from './mirrors.ts';
import { fieldsOf, readPolicy, writePolicy, type PolicyRow } from './store.ts';
import type { PackageMirror } from '../../runner/mirrors.ts';
import type { EgressPolicy, PolicySource } from './types.ts';

/** Which scope a call is about: the org, a project (id or name) or an environment (id or name). */
export type PolicyTarget = { kind: 'org' } | { kind: 'project'; ref: string } | { kind: 'environment'; ref: string };

/** A change to one scope: a field given is set (null: no longer set here), a field left out is kept. */
export type PolicyPatch = Partial<Omit<PolicyFields, 'mirrors'>> & { mirrors?: MirrorPatch | null | undefined };

export interface PolicyView extends PolicyFields {
  scope: PolicyScopeKind;
  /** The project's name or the environment's id; null for the org. */
  target: string | null;
  updatedAt: string;
  updatedBy: string;
  /** The role that set it: widening or removing it needs that role. */
  setByRole: Role;
}

/** The resolved policy as the API shows it: credentials by name and host, never their values. */
export interface EffectivePolicy extends Omit<EgressPolicy, 'credentials'> {
  credentials: { name: string; host: string; pathPrefix: string; header: string }[];
  /** The package mirrors environments here are pointed at, and who set each. */
  mirrors: ResolvedMirror[];
}

const MAX_DOMAINS = 1000;

/** What the cache was last loaded with. */
interface Snapshot {
  environments: Map<string, { orgId: string; projectId: string | null }>;
  policies: Map<string, PolicyFields>;
  projects: Map<string, { name: string; workDomains: string[]; secretNames: ReadonlySet<string> }>;
  secrets: EgressSecret[];
}

const key = (orgId: string, kind: PolicyScopeKind, id: string) => `${orgId}\u0000${kind}\u0000${id}`;

/** How long after a change notification the cache reloads: a burst of changes costs one load. */
const CHANGE_DEBOUNCE_MS = 20;

/**
 * Egress policies of orgs, projects and environments: changed through the API, read by
 * the runner's egress proxy on every connection. policyFor answers from memory: a change
 * made here is loaded before the call that made it returns. Every write to what the cache
 * is made from (policies, projects, secrets, environments, a task's environment) sends a
 * notification from a trigger (migration 0018), on any replica and at commit; each replica
 * reloads on it, a few ms later, and every 30 s in case one was missed. Without a feed the
 * cache reloads every second.
 */
export class PolicyService implements PolicySource {
  readonly #db: Db;
  readonly #secrets: SecretService;
  readonly #log: Logger;
  readonly #intervalMs: number;
  #snapshot: Snapshot = { environments: new Map(), policies: new Map(), projects: new Map(), secrets: [] };
  readonly #resolved = new Map<string, EgressPolicy>();
  #loading: Promise<void> | null = null;
  #queued: Promise<void> | null = null;
  #timer: NodeJS.Timeout | undefined;
  #lastMissReload = 0;
  readonly #changes: ChangeFeed | undefined;
  readonly #unlisten: (() => void)[] = [];
  #soon: NodeJS.Timeout | undefined;

  constructor(opts: { db: Db; secrets: SecretService; logger: Logger; changes?: ChangeFeed; reloadIntervalMs?: number }) {
    this.#db = opts.db;
    this.#secrets = opts.secrets;
    this.#log = opts.logger;
    this.#changes = opts.changes;
    this.#intervalMs = opts.reloadIntervalMs ?? (opts.changes ? 30_000 : 1_000);
  }

  /** Loads the cache and keeps it current; resolves once it is first loaded. */
  async start(): Promise<void> {
    // Listening before the first load: a change committed while it reads is not lost.
    if (this.#changes && !this.#unlisten.length) {
      this.#unlisten.push(
        this.#changes.listen(CHANNELS.policy, () => this.#reloadSoon()),
        this.#changes.onResume(() => this.#reloadSoon()),
      );
    }
    await this.reload();
    this.#timer ??= setInterval(() => void this.reload().catch(() => {}), this.#intervalMs);
    this.#timer.unref();
  }

  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    clearTimeout(this.#soon);
    for (const stop of this.#unlisten.splice(0)) stop();
  }

  #reloadSoon(): void {
    this.#soon ??= setTimeout(() => {
      this.#soon = undefined;
      void this.reload().catch(() => {});
    }, CHANGE_DEBOUNCE_MS);
    this.#soon.unref();
  }

  /** The environment's policy, from memory. An environment not loaded yet gets deny-all and a reload. */
  policyFor(environmentId: string): EgressPolicy {
    const hit = this.#resolved.get(environmentId);
    if (hit) return hit;
    const env = this.#snapshot.environments.get(environmentId);
    if (!env) {
      // Made on another replica a moment ago, or gone: look again soon, but a proxy asking
      // many times a second about a removed environment must not keep the database busy.
      if (Date.now() - this.#lastMissReload > 200) {
        this.#lastMissReload = Date.now();
        void this.reload().catch(() => {});
      }
      return resolvePolicy([]);
    }
    const policy = this.#resolve(environmentId, env);
    this.#resolved.set(environmentId, policy);
    return policy;
  }

  /**
   * A new environment, known at once without reading everything again (that would put a
   * full load on every create). Its own allow list, if it has one, needs a reload.
   */
  noteEnvironment(e: { id: string; orgId: string; projectId: string | null }): void {
    const add = () => {
      this.#snapshot.environments.set(e.id, { orgId: e.orgId, projectId: e.projectId });
      this.#resolved.delete(e.id);
    };
    add();
    // A load in flight may have read the table before this row: add it again when it lands.
    void this.#loading?.then(add, () => {});
    void this.#queued?.then(add, () => {});
  }

  /** Reads everything policyFor needs; concurrent callers share a load that starts after their call. */
  reload(): Promise<void> {
    if (this.#loading) {
      this.#queued ??= this.#loading.catch(() => {}).then(() => {
        this.#queued = null;
        return this.reload();
      });
      return this.#queued;
    }
    this.#loading = this.#load()
      .catch((err: unknown) => {
        this.#log.error({ err }, 'could not load egress policies; keeping the ones loaded before');
        throw err;
      })
      .finally(() => (this.#loading = null));
    return this.#loading;
  }

  async #load(): Promise<void> {
    const [policies, environments, projects, secrets] = await Promise.all([
      this.#db.selectFrom('network_policies').selectAll().execute(),
      // An environment a task made belongs to the task's project, also when it was made without one.
      this.#db
        .selectFrom('environments')
        .leftJoin('tasks', 'tasks.environment_id', 'environments.id')
        .select(['environments.id', 'environments.org_id', 'environments.project_id', 'tasks.project_id as task_project_id'])
        .where('environments.state', '<>', 'deleted')
        .execute(),
      this.#db.selectFrom('projects').select(['id', 'name', 'settings']).execute(),
      this.#secrets.egressSecrets(),
    ]);
    const next: Snapshot = { environments: new Map(), policies: new Map(), projects: new Map(), secrets };
    for (const p of policies) next.policies.set(key(p.org_id, p.scope_kind, p.scope_id), fieldsOf(p));
    for (const e of environments) next.environments.set(e.id, { orgId: e.org_id, projectId: e.project_id ?? e.task_project_id });
    for (const p of projects) next.projects.set(p.id, { name: p.name, workDomains: p.settings.work?.allowDomains ?? [], secretNames: namedSecrets(p.settings) });
    this.#snapshot = next;
    this.#resolved.clear();
  }

  #resolve(environmentId: string, env: { orgId: string; projectId: string | null }): EgressPolicy {
    const s = this.#snapshot;
    const layers = this.#snapshotLayers(environmentId, env);
    const project = env.projectId ? s.projects.get(env.projectId) : undefined;
    const named = env.projectId && project ? credentialsFor(s.secrets, env.orgId, env.projectId, project.secretNames) : [];
    return resolvePolicy(layers, withMirrorCredentials(named, mirrorCredentials(resolveMirrors(layers), s.secrets, env.orgId, project ? env.projectId : null)));
  }

  #snapshotLayers(environmentId: string, env: { orgId: string; projectId: string | null }): Layer[] {
    const s = this.#snapshot;
    const layers: Layer[] = [{ scope: 'environment', fields: s.policies.get(key(env.orgId, 'environment', environmentId)) ?? EMPTY_FIELDS }];
    const project = env.projectId ? s.projects.get(env.projectId) : undefined;
    if (env.projectId && project) layers.push(projectLayer(project.name, s.policies.get(key(env.orgId, 'project', env.projectId)), project.workDomains));
    layers.push({ scope: 'org', fields: s.policies.get(key(env.orgId, 'org', env.orgId)) ?? EMPTY_FIELDS });
    return layers;
  }

  /** The package mirrors the environment's tools are pointed at when it starts (runner/mirrors.ts); none for an environment not loaded. */
  mirrorsFor(environmentId: string): PackageMirror[] {
    const env = this.#snapshot.environments.get(environmentId);
    if (!env) return [];
    return resolveMirrors(this.#snapshotLayers(environmentId, env)).map(({ ecosystem, url }) => ({ ecosystem, url }));
  }

  /** Every scope of the org that has a policy. */
  async list(orgId: string): Promise<PolicyView[]> {
    const rows = await this.#db
      .selectFrom('network_policies')
      .leftJoin('projects', (j) => j.onRef('projects.id', '=', 'network_policies.scope_id').on('network_policies.scope_kind', '=', 'project'))
      .selectAll('network_policies')
      .select('projects.name as project_name')
      .where('network_policies.org_id', '=', orgId)
      .orderBy('network_policies.scope_kind')
      .orderBy('network_policies.scope_id')
      .execute();
    return rows.map((r) => viewOf(r, r.scope_kind === 'project' ? r.project_name : r.scope_kind === 'environment' ? r.scope_id : null));
  }

  /** What the target's own policy sets, and what applies there after inheriting. */
  async show(orgId: string, target: PolicyTarget): Promise<{ own: PolicyView | null; effective: EffectivePolicy }> {
    const t = await this.#target(orgId, target);
    const own = await readPolicy(this.#db, orgId, t.kind, t.scopeId);
    const layers = await this.#layers(orgId, t);
    const secrets = await this.#secrets.egressSecrets(orgId);
    const creds = t.projectId ? credentialsFor(secrets, orgId, t.projectId, await this.#namedBy(t.projectId)) : [];
    const mirrors = resolveMirrors(layers);
    const { credentials, ...rest } = resolvePolicy(layers, withMirrorCredentials(creds, mirrorCredentials(mirrors, secrets, orgId, t.projectId)));
    return {
      own: own ? viewOf(own, t.label) : null,
      effective: { ...rest, credentials: credentials.map(({ name, host, pathPrefix, header }) => ({ name, host, pathPrefix, header })), mirrors },
    };
  }

  /**
   * Changes one scope's policy. The org's and projects' need an admin; an environment's
   * may be changed by a member when it allows nothing its project and org do not. A policy
   * set by a higher role than the caller's may only be narrowed further: widening it (a
   * field set back to null, which inherits, counts) needs the role that set it.
   */
  async set(scope: Scope, target: PolicyTarget, patch: PolicyPatch): Promise<PolicyView> {
    const t = await this.#target(scope.orgId, target);
    await this.#assertMayChange(scope, t);
    const { mirrors: mirrorPatch, ...rest } = patch;
    const checked = checkPatch(rest);
    if (t.kind !== 'environment' && !atLeast(scope.role, 'admin')) {
      throw new BerthError('forbidden', `changing the ${t.kind}'s egress policy needs admin or above`);
    }
    if (mirrorPatch !== undefined && t.kind === 'environment') {
      throw invalid('package mirrors are set for the org or a project, not one environment: `berth policy set --mirror npm=URL` (org) or `berth policy set --project P --mirror npm=URL`', 'mirrors');
    }
    const row = await readPolicy(this.#db, scope.orgId, t.kind, t.scopeId);
    const fields: PolicyFields = { ...fieldsOf(row), ...checked };
    if (mirrorPatch !== undefined) {
      // The scope's own secret of that name, else the org's (a project's mirror); the org's for the org's.
      const secrets = (await this.#secrets.egressSecrets(scope.orgId)).filter((x) => x.projectId === null || (t.kind === 'project' && x.projectId === t.scopeId));
      const secretHost = (name: string) => (secrets.find((x) => x.name === name && x.projectId !== null) ?? secrets.find((x) => x.name === name))?.host;
      fields.mirrors = applyMirrorPatch(fieldsOf(row).mirrors, mirrorPatch, secretHost);
    }
    const next = resolvePolicy(await layersWith(this.#db, scope.orgId, t, fields));
    if (row && outranks(row.set_by_role, scope.role)) {
      const current = resolvePolicy(await layersWith(this.#db, scope.orgId, t, fieldsOf(row)));
      const why = wideningOver(next, current);
      if (why) throw new BerthError('forbidden', `${why}: ${setBy(t, row.set_by_role)}; as ${scope.role} you may only narrow it further`);
    } else if (t.kind === 'environment' && !atLeast(scope.role, 'admin')) {
      const inherited = resolvePolicy((await layersWith(this.#db, scope.orgId, t, EMPTY_FIELDS)).slice(1));
      const why = wideningOver(next, inherited);
      if (why) throw new BerthError('forbidden', `${why}: members may only narrow an environment's policy; an admin can widen it`);
    }
    // A narrowing by a lower role keeps the higher role's claim on the policy.
    const role = row && outranks(row.set_by_role, scope.role) ? row.set_by_role : scope.role;
    await writePolicy(this.#db, { orgId: scope.orgId, kind: t.kind, scopeId: t.scopeId, fields, actor: scope.actor, role });
    await this.reload();
    return viewOf((await readPolicy(this.#db, scope.orgId, t.kind, t.scopeId))!, t.label);
  }

  /** Removes one scope's policy: the next wider scope's applies. Needs the role that set it. */
  async clear(scope: Scope, target: PolicyTarget): Promise<void> {
    const t = await this.#target(scope.orgId, target);
    await this.#assertMayChange(scope, t);
    if (t.kind !== 'environment' && !atLeast(scope.role, 'admin')) throw new BerthError('forbidden', `changing the ${t.kind}'s egress policy needs admin or above`);
    const row = await readPolicy(this.#db, scope.orgId, t.kind, t.scopeId);
    if (!row) throw notFound(`the ${t.kind === 'org' ? 'org' : `${t.kind} '${t.label}'`} has no policy of its own`);
    if (outranks(row.set_by_role, scope.role)) {
      throw new BerthError('forbidden', `removing it would widen what it allows: ${setBy(t, row.set_by_role)}; as ${scope.role} you may only narrow it further (\`berth policy set\`)`);
    }
    // Only as it was read: a higher role's policy written meanwhile is not removed.
    const r = await this.#db.deleteFrom('network_policies').where('org_id', '=', scope.orgId).where('scope_kind', '=', t.kind).where('scope_id', '=', t.scopeId)
      .where('set_by_role', 'in', ROLES.filter((role) => !outranks(role, scope.role))).executeTakeFirst();
    if (r.numDeletedRows === 0n) throw conflict(`the ${t.kind === 'org' ? 'org' : `${t.kind} '${t.label}'`}'s policy changed meanwhile: look at it again (\`berth policy show\`)`);
    await this.reload();
  }

  /** An environment's policy is changed by those who may use the environment (ownership.ts). */
  async #assertMayChange(scope: Scope, t: { kind: PolicyScopeKind; scopeId: string }): Promise<void> {
    if (t.kind !== 'environment') return;
    const env = await this.#db.selectFrom('environments').select(['id', 'name', 'owner_id', 'task_id']).where('id', '=', t.scopeId).executeTakeFirstOrThrow();
    await assertEnvironmentAccess(this.#db, scope, env, 'shared');
  }

  async #target(orgId: string, target: PolicyTarget): Promise<{ kind: PolicyScopeKind; scopeId: string; label: string | null; projectId: string | null }> {
    if (target.kind === 'org') return { kind: 'org', scopeId: orgId, label: null, projectId: null };
    if (target.kind === 'project') {
      const p = await this.#db.selectFrom('projects').select(['id', 'name']).where('org_id', '=', orgId).where('archived_at', 'is', null)
        .where((eb) => eb.or([eb('id', '=', target.ref), eb('name', '=', target.ref)])).executeTakeFirst();
      if (!p) throw notFound(`no project '${target.ref}': \`berth project list\` shows them`);
      return { kind: 'project', scopeId: p.id, label: p.name, projectId: p.id };
    }
    const e = await this.#db
      .selectFrom('environments')
      .leftJoin('tasks', 'tasks.environment_id', 'environments.id')
      .select(['environments.id', 'environments.project_id', 'tasks.project_id as task_project_id'])
      .where('environments.org_id', '=', orgId)
      .where('environments.state', '<>', 'deleted')
      .where((eb) => eb.or([eb('environments.id', '=', target.ref), eb('environments.name', '=', target.ref)]))
      .executeTakeFirst();
    if (!e) throw notFound(`no environment '${target.ref}': \`berth env list\` shows them`);
    return { kind: 'environment', scopeId: e.id, label: e.id, projectId: e.project_id ?? e.task_project_id };
  }

  async #namedBy(projectId: string): Promise<ReadonlySet<string>> {
    return namedSecrets((await this.#db.selectFrom('projects').select('settings').where('id', '=', projectId).executeTakeFirst())?.settings);
  }

  /** The layers that apply at the target, narrowest first, read from the database. */
  async #layers(orgId: string, t: { kind: PolicyScopeKind; scopeId: string; projectId: string | null }): Promise<Layer[]> {
    return inheritedLayers(this.#db, orgId, t.projectId, t.kind === 'environment' ? t.scopeId : null);
  }
}

/** Narrowest first: the environment's (when given), its project's (when it has one), the org's. */
export async function inheritedLayers(db: Db, orgId: string, projectId: string | null, environmentId: string | null): Promise<Layer[]> {
  const layers: Layer[] = [];
  if (environmentId) layers.push({ scope: 'environment', fields: fieldsOf(await readPolicy(db, orgId, 'environment', environmentId)) });
  if (projectId) {
    const p = await db.selectFrom('projects').select(['name', 'settings']).where('id', '=', projectId).executeTakeFirst();
    if (p) layers.push(projectLayer(p.name, fieldsOf(await readPolicy(db, orgId, 'project', projectId)), p.settings.work?.allowDomains));
  }
  layers.push({ scope: 'org', fields: fieldsOf(await readPolicy(db, orgId, 'org', orgId)) });
  return layers;
}

/** The layers that apply at the target, narrowest first, with `own` as the target's own fields (what a change would make them). */
async function layersWith(db: Db, orgId: string, t: { kind: PolicyScopeKind; projectId: string | null }, own: PolicyFields): Promise<Layer[]> {
  const layers: Layer[] = [];
  if (t.kind === 'environment') layers.push({ scope: 'environment', fields: own });
  if (t.projectId) {
    const p = await db.selectFrom('projects').select(['name', 'settings']).where('id', '=', t.projectId).executeTakeFirst();
    const fields = t.kind === 'project' ? own : fieldsOf(await readPolicy(db, orgId, 'project', t.projectId));
    if (p) layers.push(projectLayer(p.name, fields, p.settings.work?.allowDomains));
  }
  layers.push({ scope: 'org', fields: t.kind === 'org' ? own : fieldsOf(await readPolicy(db, orgId, 'org', orgId)) });
  return layers;
}

/** Whether a policy set by `setter` is beyond what `caller` may widen or remove. */
const outranks = (setter: Role, caller: Role) => roleRank(setter) > roleRank(caller);

function setBy(t: { kind: PolicyScopeKind; label: string | null }, role: Role): string {
  const what = t.kind === 'org' ? "the org's policy" : `the ${t.kind} ${t.label}'s policy`;
  return `${what} was set by ${role === 'admin' || role === 'owner' ? `an ${role}` : `a ${role}`}, and only ${role === 'owner' ? 'an owner' : `${role}s and above`} may widen or remove it`;
}

/** The environment's own allow list given at create: checked, and (unless `mayWiden`) refused if it allows more than its project and org. */
export async function checkCreateAllowList(db: Db, orgId: string, projectId: string | null, domains: readonly string[], mayWiden = false): Promise<string[]> {
  const list = checkDomains(domains, 'allowDomains');
  if (mayWiden) return list;
  const inherited = resolvePolicy(await inheritedLayers(db, orgId, projectId, null));
  const why = wideningOf({ ...EMPTY_FIELDS, allowDomains: list }, inherited);
  if (why) throw invalid(`${why}: a member's --allow-domain may only narrow it (an admin may widen it, here or with \`berth policy set --env\`)`, 'allowDomains');
  return list;
}

/**
 * A one-off task's environment's allow list: the org's (its domains and presets, as they are
 * now) with the task's own domains added, as a project's work.allowDomains add to its project's.
 * The environment's own list replaces what it inherits, so it carries the org's along.
 */
export async function oneOffAllowList(db: Db, orgId: string, extra: readonly string[]): Promise<{ allowDomains: string[]; presets: string[] }> {
  const org = resolvePolicy(await inheritedLayers(db, orgId, null, null));
  return { allowDomains: [...new Set([...org.allowDomains, ...checkDomains(extra)])], presets: org.presets };
}

/** Stores the environment's own allow list (from create), with the role of who made it; `presets` kept beside it (a one-off task's). */
export async function storeEnvironmentAllowList(db: Db, orgId: string, environmentId: string, domains: string[], actor: string, role: Role, presets: string[] | null = null): Promise<void> {
  await writePolicy(db, { orgId, kind: 'environment', scopeId: environmentId, fields: { ...EMPTY_FIELDS, allowDomains: domains, presets }, actor, role });
}

function checkPatch(patch: PolicyPatch): PolicyPatch {
  const out: PolicyPatch = {};
  if (patch.allowDomains !== undefined) {
    if (patch.allowDomains && patch.allowDomains.length > MAX_DOMAINS) throw invalid(`at most ${MAX_DOMAINS} domains`, 'allowDomains');
    out.allowDomains = patch.allowDomains === null ? null : checkDomains(patch.allowDomains);
  }
  if (patch.presets !== undefined) {
    const bad = patch.presets?.find((p) => !isPreset(p));
    if (bad !== undefined) throw invalid(`no preset '${bad}': the presets are ${PRESET_NAMES.join(', ')}`, 'presets');
    out.presets = patch.presets === null ? null : [...new Set(patch.presets)];
  }
  if (patch.allowPorts !== undefined) {
    const bad = patch.allowPorts?.find((p) => !Number.isInteger(p) || p < 1 || p > 65535);
    if (bad !== undefined) throw invalid(`${bad} is not a port: ports are whole numbers from 1 to 65535`, 'allowPorts');
    out.allowPorts = patch.allowPorts === null ? null : [...new Set(patch.allowPorts)].sort((a, b) => a - b);
  }
  if (patch.allowMethods !== undefined) {
    const methods = patch.allowMethods?.map((m) => m.toUpperCase()) ?? null;
    const bad = methods?.find((m) => !(HTTP_METHODS as readonly string[]).includes(m));
    if (bad !== undefined) throw invalid(`'${bad}' is not an HTTP method: use ${HTTP_METHODS.join(', ')}`, 'allowMethods');
    out.allowMethods = methods === null ? null : [...new Set(methods)];
  }
  if (patch.maxConnections !== undefined) {
    const n = patch.maxConnections;
    if (n !== null && (!Number.isInteger(n) || n < 1 || n > 65536)) throw invalid('the connection cap is a whole number from 1 to 65536', 'maxConnections');
    out.maxConnections = n;
  }
  return out;
}

/** The egress-only secrets the project receives (its own over the org's it names), as headers for the proxy. */
function credentialsFor(secrets: EgressSecret[], orgId: string, projectId: string, named: ReadonlySet<string>): EgressPolicy['credentials'] {
  const byName = new Map<string, EgressSecret>();
  for (const s of secrets) {
    if (s.orgId !== orgId || !receivesSecret(projectId, named, s)) continue;
    if (!byName.has(s.name) || s.projectId) byName.set(s.name, s);
  }
  return [...byName.values()].map((s) => ({ host: s.host, pathPrefix: s.pathPrefix, header: s.header, value: credentialValue(s.format, s.value), name: s.name }));
}

/** The project's named credentials and the mirrors', a mirror's not repeating one already there. */
function withMirrorCredentials(named: EgressPolicy['credentials'], mirrors: EgressPolicy['credentials']): EgressPolicy['credentials'] {
  return [...named, ...mirrors.filter((m) => !named.some((n) => n.name === m.name && n.host === m.host))];
}

function viewOf(r: PolicyRow, target: string | null): PolicyView {
  return { scope: r.scope_kind, target, ...fieldsOf(r), updatedAt: new Date(r.updated_at).toISOString(), updatedBy: r.updated_by, setByRole: r.set_by_role };
}
