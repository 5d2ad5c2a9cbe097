import { Readable } from 'node:stream';
import { z } from 'zod';
import { AuditCheckpoint, AuditEntry, ErrorSchema, OrgRef } from '../../shared/api.ts';
import { BerthError, invalid } from '../../shared/errors.ts';
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

/** A checkpoint as `verify --since-checkpoint` sends it: the JSON of the file, `{"checkpoint": {...}}` or the bare object. */
function checkpointOf(text: string | undefined): AuditCheckpoint | undefined {
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw invalid('checkpoint is not JSON: pass the file `berth audit checkpoint` wrote', 'checkpoint');
  }
  const inner = typeof value === 'object' && value !== null && 'checkpoint' in value ? (value as { checkpoint: unknown }).checkpoint : value;
  const parsed = AuditCheckpoint.safeParse(inner);
  if (!parsed.success) throw invalid(`checkpoint: ${parsed.error.issues[0]?.path.join('.')} ${parsed.error.issues[0]?.message}: pass the file \`berth audit checkpoint\` wrote`, 'checkpoint');
  return parsed.data;
}

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
      summary: "Check the org's hash chain and its signed head: an edited or deleted entry breaks it",
      description:
        'Proves every entry up to the head is the one written and that the head was signed with the audit key. It cannot prove alone that ' +
        'the head is the newest ever signed (someone who kept an older signed head can cut the log back to it): pass a checkpoint taken earlier for that.',
      params: OrgRef,
      querystring: z.strictObject({
        checkpoint: z.string().max(2000).optional().describe('a checkpoint from GET …/audit/checkpoint, as JSON: the chain must still hold its entry'),
      }),
      response: {
        200: z.object({ ok: z.boolean(), entries: z.number(), firstBadSeq: z.number().optional(), reason: z.string().optional() }),
        ...errors,
      },
    },
    handler: async (req) => audit.verify(req.scope.orgId, { checkpoint: checkpointOf(req.query.checkpoint) }),
  });

  app.get('/api/orgs/:org/audit/checkpoint', {
    config: { permission: 'audit.read' },
    schema: {
      tags,
      summary: "The org's chain head, signed: keep it outside Berth to detect a later cut or rewrite",
      params: OrgRef,
      response: { 200: z.object({ checkpoint: AuditCheckpoint }), 409: ErrorSchema, ...errors },
    },
    handler: async (req) => ({ checkpoint: await audit.checkpoint(req.scope.orgId) }),
  });

  app.post('/api/orgs/:org/audit/reseal', {
    config: { permission: 'audit.reseal', audit: 'audit.reseal' },
    schema: {
      tags,
      summary: "Sign the org's chain head as it stands",
      description:
        'For a head left unsigned: written before Berth signed heads, by a server with another BERTH_AUDIT_KEY, or after a break verify reported. ' +
        'The caller vouches for the entries up to it, so check them first; the reseal itself is on record.',
      params: OrgRef,
      body: z.strictObject({}).nullish(),
      response: { 200: z.object({ seq: z.number(), hash: z.string() }), 409: ErrorSchema, ...errors },
    },
    handler: async (req) => audit.reseal(req.scope.orgId),
  });

  app.get('/api/orgs/:org/audit/export', {
    config: { permission: 'audit.read' },
    schema: {
      tags,
      summary: 'The audit log as JSON Lines, oldest first (for a SIEM or an archive)',
      description: 'The header x-berth-audit-checkpoint carries a signed checkpoint (JSON) of the chain as the export began.',
      params: OrgRef,
      querystring: Filters,
      response: errors,
    },
    handler: async (req, reply) => {
      // Taken before the export reads anything, so the export holds every entry it covers.
      const checkpoint = await audit.checkpoint(req.scope.orgId).catch((err: unknown) => {
        if (err instanceof BerthError && err.kind === 'conflict') return undefined; // unsigned head: verify says why
        throw err;
      });
      if (checkpoint) void reply.header('x-berth-audit-checkpoint', JSON.stringify(checkpoint));
      const lines = Readable.from(audit.exportJsonl(req.scope.orgId, filtersOf(req.query)));
      // A long export stops when its caller's token or role no longer allows it: the
      // transfer breaks, so a cut-off export never looks complete.
      const release = app.openStreams.watch(req, () => {
        lines.destroy();
        reply.raw.destroy();
      });
      lines.once('close', release);
      return reply.type('application/x-ndjson').send(lines as never);
    },
  });
}
