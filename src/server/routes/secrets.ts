import { z } from 'zod';
import { ErrorSchema, OrgRef } from '../../shared/api.ts';
import { conflict, notFound } from '../../shared/errors.ts';
import { newId } from '../../shared/ids.ts';
import type { App, AppDeps } from '../app.ts';
import { isUniqueViolation, type ProjectRow } from '../db/index.ts';
import { SECRET_NAME } from '../secrets/service.ts';
import { ForgeSettingsSchema } from '../../forges/index.ts';
import { ProjectWorkSettings } from '../tasks/index.ts';
import { recordingRepoRefusals } from './repo-refusals.ts';

const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema };
const SecretMeta = z.object({
  name: z.string(),
  project: z.string().nullable(),
  updatedAt: z.string(),
  updatedBy: z.string(),
  egress: z.object({ host: z.string(), pathPrefix: z.string(), header: z.string() }).optional().describe('only for an egress-only secret'),
});
// Egress-only: never an environment variable; the egress proxy adds it to requests to this host.
const EgressMarking = z.strictObject({
  host: z.string().min(1).max(253),
  pathPrefix: z.string().max(1024).optional(),
  header: z.string().max(100).optional().describe('default Authorization'),
  format: z.string().max(1024).optional().describe("the header value, with {value} for the secret; default 'Bearer {value}'"),
});
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
  createdAt: z.string(),
});
const NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const Receives = z
  .object({
    variables: z.array(z.string()).describe('secrets its environments get as environment variables'),
    egress: z.array(z.string()).describe('egress-only secrets the egress proxy adds to their requests'),
  })
  .describe("the project's own secrets and the org secrets it names: nothing else");

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
    createdAt: new Date(r.created_at).toISOString(),
  };
}

/** Secrets (write-only values) and the projects that name which secrets their environments get. */
export function secretRoutes(app: App, { secrets, db, repos, audit }: AppDeps): void {
  app.get('/api/orgs/:org/secrets', {
    config: { permission: 'secret.read' },
    schema: { tags: ['secrets'], summary: 'Secret names and scopes; values are never returned', params: OrgRef, response: { 200: z.object({ items: z.array(SecretMeta) }), ...errors } },
    handler: async (req) => ({ items: await secrets.list(req.scope.orgId) }),
  });

  app.put('/api/orgs/:org/secrets/:name', {
    config: { permission: 'secret.manage', audit: 'secret.set' },
    schema: {
      tags: ['secrets'],
      summary: 'Set a secret for the org or one project',
      params: OrgRef.extend({ name: z.string().regex(SECRET_NAME, 'letters, digits and _') }),
      body: z.strictObject({ value: z.string().min(1).max(64 * 1024), project: z.string().max(100).optional(), egress: EgressMarking.optional() }),
      response: { 200: SecretMeta, ...errors },
    },
    handler: async (req) => secrets.set(req.scope.orgId, { name: req.params.name, value: req.body.value, project: req.body.project, actor: req.scope.actor, egress: req.body.egress }),
  });

  app.delete('/api/orgs/:org/secrets/:name', {
    config: { permission: 'secret.manage', audit: 'secret.delete' },
    schema: {
      tags: ['secrets'],
      summary: 'Delete a secret',
      params: OrgRef.extend({ name: z.string().max(128) }),
      querystring: z.strictObject({ project: z.string().max(100).optional() }),
      response: { 204: z.null(), ...errors },
    },
    handler: async (req, reply) => {
      await secrets.remove(req.scope.orgId, req.params.name, req.query.project);
      return reply.code(204).send(null);
    },
  });

  app.get('/api/orgs/:org/projects', {
    config: { permission: 'project.read' },
    schema: { tags: ['projects'], summary: 'Projects of the org', params: OrgRef, response: { 200: z.object({ items: z.array(Project) }), ...errors } },
    handler: async (req) => {
      const rows = await db.selectFrom('projects').selectAll().where('org_id', '=', req.scope.orgId).orderBy('name').execute();
      return { items: rows.map(projectView) };
    },
  });

  app.get('/api/orgs/:org/projects/:name', {
    config: { permission: 'project.read' },
    schema: {
      tags: ['projects'],
      summary: 'One project, with the names of exactly the secrets its environments receive',
      params: OrgRef.extend({ name: z.string().max(100) }),
      response: { 200: Project.extend({ receives: Receives }), ...errors },
    },
    handler: async (req) => {
      const r = await db.selectFrom('projects').selectAll().where('org_id', '=', req.scope.orgId)
        .where((eb) => eb.or([eb('id', '=', req.params.name), eb('name', '=', req.params.name)])).executeTakeFirst();
      if (!r) throw notFound(`no project '${req.params.name}': \`berth project list\` shows them`);
      return { ...projectView(r), receives: await secrets.namesFor(req.scope.orgId, r.id) };
    },
  });

  app.post('/api/orgs/:org/projects', {
    config: { permission: 'project.manage', audit: 'project.create' },
    schema: {
      tags: ['projects'],
      summary: 'Create a project: a repository and the secrets its environments receive',
      params: OrgRef,
      body: z.strictObject({
        name: z.string().regex(NAME, 'lower-case letters, digits, . _ -'),
        repoUrl: z.string().max(2048).optional(),
        defaultBranch: z.string().max(200).optional(),
        secrets: z.array(z.string().regex(SECRET_NAME)).max(200).optional().describe("names of the org's secrets its environments get (with the secrets set for the project itself; no others)"),
        work: ProjectWorkSettings.optional().describe("how to work on the repository: overrides its berth.yaml or devcontainer.json"),
        forge: ForgeSettingsSchema.optional().describe('the forge and the names of the secrets holding its credentials'),
        agent: AgentDefaults.optional().describe("defaults for the project's tasks"),
      }),
      response: { 201: Project, ...errors },
    },
    handler: async (req, reply) => {
      const id = newId('prj');
      // A project's repository follows the one-off rule: a path on this host is an instance administrator's.
      await recordingRepoRefusals(audit, req.scope, 'project.create', req.body.repoUrl ?? req.body.forge?.apiUrl, async () => {
        if (req.body.repoUrl) await repos.name(req.body.repoUrl, req.caller, 'repoUrl');
        if (req.body.forge?.apiUrl) await repos.nameApi(req.body.forge.apiUrl);
      });
      const settings = {
        secrets: (req.body.secrets ?? []).map((name) => ({ name, as: 'env' as const })),
        work: req.body.work ?? {},
        forge: req.body.forge ?? {},
        agent: req.body.agent ?? {},
      };
      try {
        await db
          .insertInto('projects')
          .values({
            id,
            org_id: req.scope.orgId,
            name: req.body.name,
            repo_url: req.body.repoUrl ?? null,
            default_branch: req.body.defaultBranch ?? 'main',
            settings: JSON.stringify(settings),
          })
          .execute();
      } catch (err) {
        if (isUniqueViolation(err)) throw conflict(`a project named '${req.body.name}' exists`);
        throw err;
      }
      return reply.code(201).send({
        id,
        name: req.body.name,
        repoUrl: req.body.repoUrl ?? null,
        defaultBranch: req.body.defaultBranch ?? 'main',
        secrets: req.body.secrets ?? [],
        work: settings.work,
        forge: settings.forge,
        agent: settings.agent,
        createdAt: new Date().toISOString(),
      });
    },
  });

  app.delete('/api/orgs/:org/projects/:name', {
    config: { permission: 'project.manage', audit: 'project.delete' },
    schema: { tags: ['projects'], summary: 'Delete a project with no environments', params: OrgRef.extend({ name: z.string().max(100) }), response: { 204: z.null(), ...errors } },
    handler: async (req, reply) => {
      const row = await db.selectFrom('projects').select('id').where('org_id', '=', req.scope.orgId).where('name', '=', req.params.name).executeTakeFirst();
      if (!row) throw notFound(`no project '${req.params.name}'`);
      const used = await db.selectFrom('environments').select('id').where('project_id', '=', row.id).where('state', '<>', 'deleted').executeTakeFirst();
      if (used) throw conflict(`project '${req.params.name}' still has environments: remove them first`);
      await db.transaction().execute(async (tx) => {
        await tx.deleteFrom('secrets').where('project_id', '=', row.id).execute();
        await tx.updateTable('environments').set({ project_id: null }).where('project_id', '=', row.id).execute();
        await tx.deleteFrom('projects').where('id', '=', row.id).execute();
      });
      return reply.code(204).send(null);
    },
  });
}
