import { z } from 'zod';
import { ErrorSchema, OrgRef, RunnerLabels } from '../../shared/api.ts';
import { CACHE_KINDS } from '../../shared/caches.ts';
import { conflict, invalid, notFound } from '../../shared/errors.ts';
import { newId } from '../../shared/ids.ts';
import type { App, AppDeps } from '../app.ts';
import { isUniqueViolation, type ProjectRow } from '../db/index.ts';
import { SECRET_NAME } from '../secrets/service.ts';
import { ForgeSettingsSchema } from '../../forges/index.ts';
import { ProjectWorkSettings, resolveProjectSpec } from '../tasks/index.ts';
import { assertNameFree, liveProject, mergePatch, PROJECT_NAME, removeProject } from '../projects.ts';
import { recordingRepoRefusals } from './repo-refusals.ts';
import { PrebuildSettings, WarmPoolStatus } from '../../shared/prebuilds.ts';
import { ruleOf } from '../triggers/schedules/rule.ts';
import { PrebuildView } from './prebuilds.ts';
import { MAX_WARM } from '../prebuilds/warm-pool.ts';

const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema };
const AgentDefaults = z.strictObject({ kind: z.enum(['builtin', 'command']).optional(), model: z.string().min(1).max(200).optional(), command: z.string().min(1).max(64 * 1024).optional() });
const Project = z.object({
  id: z.string(),
  name: z.string(),
  repoUrl: z.string().nullable(),
  defaultBranch: z.string(),
  secrets: z.array(z.string()),
  work: ProjectWorkSettings,
  forge: ForgeSettingsSchema,
  agent: AgentDefaults,
  registryLogins: z.record(z.string(), z.string()),
  runnerLabels: z.record(z.string(), z.string()).describe("labels the runner of each of its tasks must carry"),
  caches: z.array(z.enum(CACHE_KINDS)).describe('package caches its environments mount'),
  prebuild: PrebuildSettings.describe('when its prebuilds are made and how many are kept'),
  warm: z.number().describe('environments kept started from its newest prebuild for tasks to claim (its warm pool)'),
  createdAt: z.string(),
  archivedAt: z.string().nullable().describe('set when the project was removed while tasks refer to it'),
});
const Receives = z
  .object({
    variables: z.array(z.string()).describe('secrets its environments get as environment variables'),
    egress: z.array(z.string()).describe('egress-only secrets the egress proxy adds to their requests'),
  })
  .describe("the project's own secrets and the org secrets it names: nothing else");
const ResolvedSpec = z.object({
  branch: z.string(),
  commit: z.string(),
  file: z.enum(['berth.yaml', 'devcontainer.json']).nullable().describe("the repository's file, or null when it has none"),
  spec: z.object({
    image: z.string().nullable(),
    user: z.string().nullable(),
    env: z.record(z.string(), z.string()),
    setup: z.array(z.string()),
    check: z.string().nullable(),
    limits: z.object({ cpus: z.number().optional(), memory: z.string().optional() }),
    allowDomains: z.array(z.string()),
    workspaceFolder: z.string().nullable(),
    forwardPorts: z.array(z.union([z.number(), z.string()])),
    volumes: z.array(z.object({ name: z.string(), target: z.string() })),
    build: z.record(z.string(), z.unknown()).optional().describe('the image is built from the repository (its Dockerfile, a compose build, features) when the project names none'),
  }),
  sources: z.record(z.string(), z.string()).describe('per field: the file (and compose service), "project setting" or "Berth default"'),
  notes: z.array(z.string()),
});
const ProjectName = z.string().regex(PROJECT_NAME, 'lower-case letters, digits, . _ -');
const RepoUrl = z.string({ error: 'a project needs its repository: give repoUrl (`berth project create NAME --repo URL`)' }).trim().min(1, 'a project needs its repository: give repoUrl').max(2048);
const SecretNames = z.array(z.string().regex(SECRET_NAME)).max(200);
const RegistryLogins = z
  .record(
    z.string().regex(/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?$/, 'a registry host, like ghcr.io or registry.corp:5000'),
    z.string().regex(SECRET_NAME, 'a secret name: letters, digits and _'),
  )
  .refine((r) => Object.keys(r).length <= 50, 'at most 50 registries')
  .describe("registry → the secret holding its login (USER:PASSWORD), for the images the project's environments pull; used on the runner only, sent to that registry only");
const Caches = z
  .array(z.enum(CACHE_KINDS, { error: `a cache is one of ${CACHE_KINDS.join(', ')}` }))
  .max(CACHE_KINDS.length)
  .transform((kinds) => [...new Set(kinds)])
  .describe("package caches its environments mount, kept per project and removed with it (npm, pip, cargo, go, apt); [] for none");
const Warm = z.number().int().min(0).max(MAX_WARM).describe(`environments kept started from its newest prebuild, so a task claims one instead of starting one (0 to ${MAX_WARM}; 0 for none)`);
const ProjectParams = OrgRef.extend({ name: z.string().max(100) });

/** Each field of a settings object may also be null: a PATCH that removes it (JSON merge patch). */
function clearable<T extends z.ZodRawShape>(o: z.ZodObject<T>) {
  return z.strictObject(Object.fromEntries(Object.entries(o.shape).map(([k, v]) => [k, (v as z.ZodType).nullable().optional()])) as unknown as { [K in keyof T]: z.ZodOptional<z.ZodNullable<T[K]>> });
}

function projectView(r: ProjectRow): z.infer<typeof Project> {
  return {
    id: r.id,
    name: r.name,
    repoUrl: r.repo_url,
    defaultBranch: r.default_branch,
    secrets: (r.settings.secrets ?? []).map((s) => s.name),
    work: r.settings.work ?? {},
    forge: r.settings.forge ?? {},
    agent: r.settings.agent ?? {},
    registryLogins: r.settings.registryLogins ?? {},
    runnerLabels: r.settings.runnerLabels ?? {},
    caches: r.settings.caches ?? [],
    prebuild: (({ since: _since, ...p }) => p)(r.settings.prebuild ?? {}),
    warm: r.settings.warm ?? 0,
    createdAt: new Date(r.created_at).toISOString(),
    archivedAt: r.archived_at ? new Date(r.archived_at).toISOString() : null,
  };
}

/** A schedule that parses, and when it was set: slots before then are not made up (prebuilds/schedule.ts). */
function checkedPrebuild(p: PrebuildSettings, before: (PrebuildSettings & { since?: string }) | undefined): PrebuildSettings & { since?: string } {
  if (p.schedule === undefined) return p;
  ruleOf(p.schedule, p.timezone, 'prebuild.schedule');
  const same = before?.schedule === p.schedule && before?.timezone === p.timezone && before.since;
  return { ...p, since: same ? before.since : new Date().toISOString() };
}

/** A merged settings object, checked against the same schema create uses. */
function merged<S extends z.ZodType>(schema: S, field: string, current: unknown, patch: unknown): z.infer<S> {
  const r = schema.safeParse(mergePatch(current ?? {}, patch));
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const path = [field, ...issue.path.map(String)].join('.');
  throw invalid(`${path}: ${issue.message}`, path);
}

/** Projects: a repository and how to work on it (environment, checks, agent, forge, secrets). */
export function projectRoutes(app: App, { secrets, db, repos, audit, environments, warmPools, prebuilds }: AppDeps): void {
  app.get('/api/orgs/:org/projects', {
    config: { permission: 'project.read' },
    schema: {
      tags: ['projects'],
      summary: 'Projects of the org',
      params: OrgRef,
      querystring: z.strictObject({ archived: z.enum(['0', '1', 'true', 'false']).optional().describe('also the removed projects that tasks still refer to') }),
      response: { 200: z.object({ items: z.array(Project) }), ...errors },
    },
    handler: async (req) => {
      let q = db.selectFrom('projects').selectAll().where('org_id', '=', req.scope.orgId);
      if (req.query.archived !== '1' && req.query.archived !== 'true') q = q.where('archived_at', 'is', null);
      return { items: (await q.orderBy('name').orderBy('created_at').execute()).map(projectView) };
    },
  });

  app.get('/api/orgs/:org/projects/:name', {
    config: { permission: 'project.read' },
    schema: {
      tags: ['projects'],
      summary: 'One project, with the names of exactly the secrets its environments receive',
      description: 'By name (live projects) or by id (an archived one too).',
      params: ProjectParams,
      querystring: z.strictObject({ usage: z.enum(['0', '1', 'true', 'false']).optional().describe('also the bytes its package caches hold (asks each runner)') }),
      response: {
        200: Project.extend({
          receives: Receives,
          cacheBytes: z.partialRecord(z.enum(CACHE_KINDS), z.number()).optional().describe('with ?usage=1: bytes each package cache holds, summed over the runners (each keeps its own)'),
          pool: WarmPoolStatus.optional(),
          prebuilds: z.object({ current: PrebuildView.nullable().describe('the newest ready prebuild: what its tasks start from'), latest: PrebuildView.nullable().describe('the newest attempt, when it is not the current one (queued, building or failed)') }).optional(),
        }),
        ...errors,
      },
    },
    handler: async (req) => {
      const r =
        (await db.selectFrom('projects').selectAll().where('org_id', '=', req.scope.orgId).where('id', '=', req.params.name).executeTakeFirst()) ??
        (await liveProject(db, req.scope.orgId, req.params.name));
      const usage = req.query.usage === '1' || req.query.usage === 'true';
      return {
        ...projectView(r),
        receives: r.archived_at ? { variables: [], egress: [] } : await secrets.namesFor(req.scope.orgId, r.id),
        ...(usage && { cacheBytes: await environments.cacheUsage(r.id) }),
        ...(warmPools && { pool: await warmPools.status(req.scope.orgId, r.id) }),
        ...(prebuilds && { prebuilds: await prebuilds.summary(r.id) }),
      };
    },
  });

  app.get('/api/orgs/:org/projects/:name/spec', {
    config: { permission: 'project.read' },
    schema: {
      tags: ['projects'],
      summary: "The environment the project's tasks get, each field with where it came from",
      description:
        "Reads the repository's berth.yaml or .devcontainer/devcontainer.json (and its compose file) from a fresh shallow clone of the default branch, puts the project's settings on top, and says for each field whether it came from a file (and which compose service), a project setting or Berth's default. `notes` lists what the repository asks for that Berth does not do.",
      params: ProjectParams,
      response: { 200: ResolvedSpec, ...errors, 503: ErrorSchema },
    },
    handler: async (req) => {
      const project = await liveProject(db, req.scope.orgId, req.params.name);
      const r = await resolveProjectSpec({ repos, secrets }, project);
      return { ...r, spec: { ...r.spec, build: r.spec.build && { ...r.spec.build } } };
    },
  });

  app.post('/api/orgs/:org/projects', {
    config: { permission: 'project.manage', audit: 'project.create' },
    schema: {
      tags: ['projects'],
      summary: 'Create a project: a repository and the secrets its environments receive',
      params: OrgRef,
      body: z.strictObject({
        name: ProjectName,
        repoUrl: RepoUrl.describe('the repository: an https URL, or a path on the server (an instance administrator\'s)'),
        defaultBranch: z.string().max(200).optional(),
        secrets: SecretNames.optional().describe("names of the org's secrets its environments get (with the secrets set for the project itself; no others)"),
        work: ProjectWorkSettings.optional().describe("how to work on the repository: overrides its berth.yaml or devcontainer.json"),
        forge: ForgeSettingsSchema.optional().describe('the forge and the names of the secrets holding its credentials'),
        agent: AgentDefaults.optional().describe("defaults for the project's tasks"),
        registryLogins: RegistryLogins.optional(),
        runnerLabels: RunnerLabels.optional().describe('labels the runner of each of its tasks must carry (`{"gpu": "true"}`)'),
        caches: Caches.optional(),
        warm: Warm.optional(),
        prebuild: PrebuildSettings.optional(),
      }),
      response: { 201: Project, ...errors },
    },
    handler: async (req, reply) => {
      const id = newId('prj');
      // A project's repository follows the one-off rule: a path on this host is an instance administrator's.
      await recordingRepoRefusals(audit, req.scope, 'project.create', req.body.repoUrl, async () => {
        await repos.name(req.body.repoUrl, req.caller, 'repoUrl');
        if (req.body.forge?.apiUrl) await repos.nameApi(req.body.forge.apiUrl);
      });
      const settings = {
        secrets: (req.body.secrets ?? []).map((name) => ({ name, as: 'env' as const })),
        work: req.body.work ?? {},
        forge: req.body.forge ?? {},
        agent: req.body.agent ?? {},
        ...(req.body.registryLogins && { registryLogins: req.body.registryLogins }),
        ...(req.body.runnerLabels && { runnerLabels: req.body.runnerLabels }),
        ...(req.body.caches?.length && { caches: req.body.caches }),
        ...(req.body.warm && { warm: req.body.warm }),
        ...(req.body.prebuild && { prebuild: checkedPrebuild(req.body.prebuild, undefined) }),
      };
      try {
        const row = await db
          .insertInto('projects')
          .values({ id, org_id: req.scope.orgId, name: req.body.name, repo_url: req.body.repoUrl, default_branch: req.body.defaultBranch ?? 'main', settings: JSON.stringify(settings) })
          .returningAll()
          .executeTakeFirstOrThrow();
        return reply.code(201).send(projectView(row));
      } catch (err) {
        if (isUniqueViolation(err)) throw conflict(`a project named '${req.body.name}' exists`);
        throw err;
      }
    },
  });

  app.patch('/api/orgs/:org/projects/:name', {
    config: { permission: 'project.manage', audit: 'project.update' },
    schema: {
      tags: ['projects'],
      summary: 'Change a project: any setting create takes',
      description:
        'Fields not given stay as they are. work, forge and agent merge as a JSON merge patch (RFC 7396): a field set to null goes back to ' +
        "the repository's file or the default; secrets replaces the list. A new repoUrl or forge.apiUrl passes the same checks as on create.",
      params: ProjectParams,
      body: z.strictObject({
        name: ProjectName.optional().describe('a new name'),
        repoUrl: RepoUrl.optional(),
        defaultBranch: z.string().min(1).max(200).optional(),
        secrets: SecretNames.optional(),
        work: clearable(ProjectWorkSettings).nullable().optional(),
        forge: clearable(ForgeSettingsSchema).nullable().optional(),
        agent: clearable(AgentDefaults).nullable().optional(),
        registryLogins: RegistryLogins.optional().describe('replaces the whole map; {} removes them all'),
        runnerLabels: RunnerLabels.optional().describe('replaces the whole map; {} removes them all'),
        caches: Caches.optional().describe('replaces the list; [] stops mounting them (their contents stay until the project is removed)'),
        warm: Warm.optional().describe('environments its warm pool keeps; lowering it removes the extras, 0 empties it'),
        prebuild: clearable(PrebuildSettings).nullable().optional().describe('merged as a JSON merge patch; null for the defaults (no schedule, keep 3)'),
      }),
      response: { 200: Project, ...errors },
    },
    handler: async (req) => {
      const row = await liveProject(db, req.scope.orgId, req.params.name);
      const b = req.body;
      if (Object.values(b).every((v) => v === undefined)) throw invalid('nothing to change: give at least one setting (`berth project update --help` lists them)');
      const s = row.settings;
      const settings = {
        ...s,
        secrets: b.secrets === undefined ? s.secrets : b.secrets.map((name) => ({ name, as: 'env' as const })),
        work: b.work === undefined ? s.work : b.work === null ? {} : merged(ProjectWorkSettings, 'work', s.work, b.work),
        forge: b.forge === undefined ? s.forge : b.forge === null ? {} : merged(ForgeSettingsSchema, 'forge', s.forge, b.forge),
        agent: b.agent === undefined ? s.agent : b.agent === null ? {} : merged(AgentDefaults, 'agent', s.agent, b.agent),
        registryLogins: b.registryLogins ?? s.registryLogins,
        runnerLabels: b.runnerLabels ?? s.runnerLabels,
        caches: b.caches ?? s.caches,
        warm: b.warm ?? s.warm,
        prebuild: b.prebuild === undefined ? s.prebuild : b.prebuild === null ? undefined : checkedPrebuild(merged(PrebuildSettings, 'prebuild', (({ since: _s, ...p }) => p)(s.prebuild ?? {}), b.prebuild), s.prebuild),
      };
      // The same rules as create: a path on this host is an instance administrator's (issue #11, finding 4).
      await recordingRepoRefusals(audit, req.scope, 'project.update', b.repoUrl ?? b.forge?.apiUrl ?? undefined, async () => {
        if (b.repoUrl !== undefined) await repos.name(b.repoUrl, req.caller, 'repoUrl');
        if (b.forge?.apiUrl) await repos.nameApi(b.forge.apiUrl);
      });
      if (b.name !== undefined && b.name !== row.name) await assertNameFree(db, req.scope.orgId, b.name, row.id);
      try {
        const updated = await db
          .updateTable('projects')
          .set({
            ...(b.name !== undefined && { name: b.name }),
            ...(b.repoUrl !== undefined && { repo_url: b.repoUrl }),
            ...(b.defaultBranch !== undefined && { default_branch: b.defaultBranch }),
            settings: JSON.stringify(settings),
          })
          .where('id', '=', row.id)
          .where('archived_at', 'is', null)
          .returningAll()
          .executeTakeFirst();
        if (!updated) throw notFound(`no project '${req.params.name}': \`berth project list\` shows them`);
        if (b.warm !== undefined) warmPools?.wake();
        return projectView(updated);
      } catch (err) {
        if (isUniqueViolation(err)) throw conflict(`a project named '${b.name}' exists`);
        throw err;
      }
    },
  });

  app.delete('/api/orgs/:org/projects/:name', {
    config: { permission: 'project.manage', audit: 'project.delete' },
    schema: {
      tags: ['projects'],
      summary: 'Remove a project with no environments',
      description:
        'A project no task used is deleted. One with tasks is archived instead: its tasks keep their history, it leaves the list ' +
        '(`?archived=1` shows it) and every lookup by name, its secrets are deleted, and its name is free for a new project. Its named volumes are deleted either way.',
      params: ProjectParams,
      response: { 200: z.object({ removed: z.enum(['deleted', 'archived']), tasks: z.number().describe('tasks that refer to it') }), ...errors },
    },
    handler: async (req) => {
      const { id } = await liveProject(db, req.scope.orgId, req.params.name);
      const removed = await removeProject(db, req.scope.orgId, req.params.name);
      // Its warm pool's environments go with it (removeProject does not count them).
      await warmPools?.drain(id);
      // No environment uses it any more (removeProject refuses otherwise), and none will.
      await environments.removeVolumes(id);
      return removed;
    },
  });
}
