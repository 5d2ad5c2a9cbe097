import { z } from 'zod';
import { ErrorSchema, OrgRef } from '../../shared/api.ts';
import type { App, AppDeps } from '../app.ts';
import { SECRET_NAME } from '../secrets/service.ts';

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

/** Secrets (write-only values); the projects that name which secrets their environments get are in projects.ts. */
export function secretRoutes(app: App, { secrets }: AppDeps): void {
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
}
