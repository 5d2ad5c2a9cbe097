import { z } from 'zod';
import { ErrorSchema, OrgRef } from '../../shared/api.ts';
import { ModelSettings, ModelSettingsBody, ModelSettingsView, ProjectModelRef } from '../../shared/api-models.ts';
import type { App } from '../app.ts';
import type { ModelSettingsService } from '../models/service.ts';

const tags = ['models'];
const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema };

/**
 * The model an org's and each project's tasks use instead of the instance default. Viewers
 * see the provider, base URL, model and the key secret's NAME; admins set them. The key is a
 * secret, read only by Berth on the host.
 */
export function modelRoutes(app: App, models: ModelSettingsService): void {
  app.get('/api/orgs/:org/models', {
    config: { permission: 'model.read' },
    schema: { tags, summary: "The org's model settings and every project's that has its own", params: OrgRef, response: { 200: z.object({ items: z.array(ModelSettings) }), ...errors } },
    handler: async (req) => ({ items: await models.list(req.scope.orgId) }),
  });

  const scopes = [
    { url: '/api/orgs/:org/model', params: OrgRef, what: "the org's", fallback: "the instance's", project: (_p: object): string | undefined => undefined },
    { url: '/api/orgs/:org/projects/:name/model', params: ProjectModelRef, what: "a project's", fallback: "the org's, else the instance's", project: (p: object): string | undefined => (p as { name: string }).name },
  ];
  for (const s of scopes) {
    app.get(s.url, {
      config: { permission: 'model.read' },
      schema: { tags, summary: `${s.what} own model settings, and whose its tasks use`, params: s.params, response: { 200: ModelSettingsView, ...errors } },
      handler: async (req) => models.show(req.scope.orgId, s.project(req.params as object)),
    });
    app.put(s.url, {
      config: { permission: 'model.manage', audit: 'model.set' },
      schema: { tags, summary: `Set ${s.what} model: provider, base URL, model and the name of the secret holding the key`, params: s.params, body: ModelSettingsBody, response: { 200: ModelSettings, ...errors } },
      handler: async (req) => models.set(req.scope.orgId, req.body as ModelSettingsBody, req.scope.actor, s.project(req.params as object)),
    });
    app.delete(s.url, {
      config: { permission: 'model.manage', audit: 'model.delete' },
      schema: { tags, summary: `Remove ${s.what} model settings: its tasks fall back to ${s.fallback}`, params: s.params, response: { 204: z.null(), ...errors } },
      handler: async (req, reply) => {
        await models.remove(req.scope.orgId, s.project(req.params as object));
        return reply.code(204).send(null);
      },
    });
  }
}
