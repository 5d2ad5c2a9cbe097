import { Readable } from 'node:stream';
import { z } from 'zod';
import { AuditEntry, ErrorSchema, OrgRef } from '../../shared/api.ts';
import type { App, AppDeps } from '../app.ts';

const tags = ['audit'];
const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema };

const Filters = z.strictObject({
  since: z.iso.datetime({ offset: true }).optional().describe('ISO time: entries at or after it'),
  until: z.iso.datetime({ offset: true }).optional(),
  actor: z.string().max(200).optional(),
  action: z.string().max(200).optional(),
  environment: z.string().max(100).optional().describe('environment id'),
});

const filtersOf = (q: z.infer<typeof Filters>) => ({
  since: q.since ? new Date(q.since) : undefined,
  until: q.until ? new Date(q.until) : undefined,
  actor: q.actor,
  action: q.action,
  environmentId: q.environment,
});

export function auditRoutes(app: App, { audit }: AppDeps): void {
  app.get('/api/orgs/:org/audit', {
    config: { permission: 'audit.read' },
    schema: {
      tags,
      summary: "Page through the org's audit log, newest first",
      params: OrgRef,
      querystring: Filters.extend({
        limit: z.coerce.number().int().min(1).max(1000).default(100),
        cursor: z.string().max(100).optional(),
      }),
      response: { 200: z.object({ items: z.array(AuditEntry), nextCursor: z.string().nullable() }), ...errors },
    },
    handler: async (req) => audit.list(req.scope.orgId, { ...filtersOf(req.query), limit: req.query.limit, cursor: req.query.cursor }),
  });

  app.get('/api/orgs/:org/audit/verify', {
    config: { permission: 'audit.read' },
    schema: {
      tags,
      summary: "Check the org's hash chain: an edited or deleted entry breaks it",
      params: OrgRef,
      response: {
        200: z.object({ ok: z.boolean(), entries: z.number(), firstBadSeq: z.number().optional(), reason: z.string().optional() }),
        ...errors,
      },
    },
    handler: async (req) => audit.verify(req.scope.orgId),
  });

  app.get('/api/orgs/:org/audit/export', {
    config: { permission: 'audit.read' },
    schema: {
      tags,
      summary: 'The audit log as JSON Lines, oldest first (for a SIEM or an archive)',
      params: OrgRef,
      querystring: Filters,
      response: errors,
    },
    handler: async (req, reply) => {
      const lines = audit.exportJsonl(req.scope.orgId, filtersOf(req.query));
      return reply.type('application/x-ndjson').send(Readable.from(lines) as never);
    },
  });
}
