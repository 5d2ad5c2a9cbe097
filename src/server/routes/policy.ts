import { z } from 'zod';
import { EffectivePolicy as Effective, NetworkEventView, PolicyView } from '../../shared/api.ts';
import { EnvironmentRef, ErrorSchema, OrgRef } from '../../shared/api.ts';
import type { App, AppDeps } from '../app.ts';
import { HTTP_METHODS, MIRROR_ECOSYSTEMS, PRESET_NAMES, type PolicyTarget } from '../policy/index.ts';

const tags = ['policies'];
const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema };

// Loose types here, strict checks in the service: its messages say what is wrong and how to fix it.
const Patch = z.strictObject({
  allowDomains: z.array(z.string().max(300)).max(1000).nullable().optional().describe('exact names and *.example.com wildcards; no schemes, paths or IPs'),
  presets: z.array(z.string().max(40)).max(20).nullable().optional().describe(`package registries: ${PRESET_NAMES.join(', ')}`),
  allowPorts: z.array(z.number()).max(100).nullable().optional().describe('ports plain HTTP may use (null: any)'),
  allowMethods: z.array(z.string().max(20)).max(20).nullable().optional().describe(`methods plain HTTP may use (null: any): ${HTTP_METHODS.join(', ')}`),
  maxConnections: z.number().nullable().optional().describe('concurrent connections the environment may hold open'),
  mirrors: z
    .record(z.string().max(20), z.strictObject({ url: z.string().max(2000), secret: z.string().max(200).nullable().optional() }).nullable())
    .nullable()
    .optional()
    .describe(`package mirrors by ecosystem (${MIRROR_ECOSYSTEMS.join(', ')}), org and projects only: an ecosystem given is set (null: removed here), the others kept; null: none set here. secret: an egress-only secret for the mirror's host, which the egress proxy adds`),
});

/**
 * Egress policies of the org, its projects and its environments (the narrowest that sets
 * a field wins), and what environments' egress proxies let through or refused.
 */
export function policyRoutes(app: App, { policies, networkEvents }: Required<Pick<AppDeps, 'policies' | 'networkEvents'>>): void {
  app.get('/api/orgs/:org/policies', {
    config: { permission: 'policy.read' },
    schema: { tags, summary: 'Every scope of the org that has an egress policy of its own', params: OrgRef, response: { 200: z.object({ items: z.array(PolicyView) }), ...errors } },
    handler: async (req) => ({ items: await policies.list(req.scope.orgId) }),
  });

  app.get('/api/orgs/:org/policies/effective', {
    config: { permission: 'policy.read' },
    schema: {
      tags,
      summary: "A scope's own policy and what applies there after inheriting",
      params: OrgRef,
      querystring: z.strictObject({ project: z.string().max(100).optional(), environment: z.string().max(100).optional() }),
      response: { 200: z.object({ own: PolicyView.nullable(), effective: Effective }), ...errors },
    },
    handler: async (req) => {
      const { project, environment } = req.query;
      const target: PolicyTarget = environment ? { kind: 'environment', ref: environment } : project ? { kind: 'project', ref: project } : { kind: 'org' };
      return policies.show(req.scope.orgId, target);
    },
  });

  // An environment's policy is used like the environment (its owner, admins, those it is shared with); the org's and projects' are the org's.
  const scopes = [
    { url: '/api/orgs/:org/policies/org', params: OrgRef, permission: 'policy.manage', ownership: undefined, target: (): PolicyTarget => ({ kind: 'org' }) },
    {
      url: '/api/orgs/:org/policies/projects/:name',
      params: OrgRef.extend({ name: z.string().max(100) }),
      permission: 'policy.manage',
      ownership: undefined,
      target: (p: { name?: string }): PolicyTarget => ({ kind: 'project', ref: p.name! }),
    },
    {
      url: '/api/orgs/:org/policies/environments/:id',
      params: OrgRef.extend({ id: z.string().max(100) }),
      // Members may narrow an environment's policy; the service refuses them anything wider.
      permission: 'policy.environment',
      ownership: 'shared',
      target: (p: { id?: string }): PolicyTarget => ({ kind: 'environment', ref: p.id! }),
    },
  ] as const;

  for (const s of scopes) {
    app.patch(s.url, {
      config: { permission: s.permission, audit: 'policy.set', ownership: s.ownership },
      schema: { tags, summary: 'Set fields of a scope\'s egress policy (null: no longer set here)', params: s.params, body: Patch, response: { 200: PolicyView, ...errors } },
      handler: async (req) => policies.set(req.scope, s.target(req.params as never), req.body),
    });
    app.delete(s.url, {
      config: { permission: s.permission, audit: 'policy.clear', ownership: s.ownership },
      schema: { tags, summary: "Remove a scope's egress policy: the next wider scope's applies", params: s.params, response: { 204: z.null(), ...errors } },
      handler: async (req, reply) => {
        await policies.clear(req.scope, s.target(req.params as never));
        return reply.code(204).send(null);
      },
    });
  }

  app.get('/api/orgs/:org/environments/:id/network', {
    // What it reached is for those who may use it (its owner, admins and owners, those it is shared with: a viewer too, when shared).
    config: { permission: 'environment.read', ownership: 'shared' },
    schema: {
      tags: ['environments'],
      summary: "What the environment's egress proxy let through or refused, newest first",
      description: 'For its owner, admins and owners of the org, and those it is shared with (`berth env share`); others get 403.',
      params: EnvironmentRef,
      querystring: z.strictObject({
        limit: z.coerce.number().int().min(1).max(1000).default(100),
        denied: z.enum(['true', 'false']).optional().describe('only refusals'),
        before: z.iso.datetime({ offset: true }).optional().describe('events before this time (the next page)'),
      }),
      response: { 200: z.object({ environmentId: z.string(), items: z.array(NetworkEventView) }), ...errors },
    },
    handler: async (req) => networkEvents.list(req.scope, req.params.id, { limit: req.query.limit, denied: req.query.denied === 'true', before: req.query.before }),
  });
}
