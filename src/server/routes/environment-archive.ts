// `berth env export` / `berth env import`: an environment's files as one archive
// (environments/archive.ts), and a new environment made from one on any runner.
import type { Readable } from 'node:stream';
import { createReadStream } from 'node:fs';
import { atLeast } from '../authz.ts';
import { CreateEnvironmentBody, Environment, EnvironmentRef, ErrorSchema, OrgRef, RunnerLabels } from '../../shared/api.ts';
import { ImportEnvironmentQuery, type EnvironmentManifest } from '../../shared/api-environment-archive.ts';
import { limitsBody, limitsFrom } from '../environments/limits.ts';
import { invalid } from '../../shared/errors.ts';
import { spoolExport, spoolImport } from '../environments/archive.ts';
import type { App, AppDeps } from '../app.ts';

const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema, 503: ErrorSchema };
const tags = ['environments'];

export function environmentArchiveRoutes(app: App, { environments }: AppDeps): void {
  app.get('/api/orgs/:org/environments/:id/export', {
    // Its owner's or an admin's: the archive holds every file, secrets written into them too.
    config: { permission: 'environment.write', audit: 'environment.export', ownership: 'owner' },
    schema: {
      tags,
      summary: "Export an environment's files as one archive",
      description:
        'A tar: `manifest.json` (format version, name, image reference and digest, limits, the size and sha256 of the state) then `state.tar`, ' +
        "the environment's own layer (owners, modes, links, xattrs). A running environment is frozen while its files are read, then goes on.",
      params: EnvironmentRef,
      response: errors,
    },
    handler: async (req, reply) => {
      const spooled = await spoolExport(environments, req.scope, req.params.id);
      req.auditDetails = { bytes: spooled.manifest.state.bytes, sha256: spooled.manifest.state.sha256 };
      const archive = spooled.archive();
      reply.raw.once('close', () => {
        archive.destroy();
        void spooled.discard();
      });
      return reply.type('application/x-tar').header('content-disposition', `attachment; filename="${spooled.manifest.environment.name}.berth.tar"`).send(archive as never);
    },
  });

  app.post('/api/orgs/:org/environments/import', {
    config: { permission: 'environment.write', audit: 'environment.import' },
    schema: {
      tags,
      summary: 'Make a new environment from an export',
      description:
        'Send the archive `berth env export` wrote, with `Content-Type: application/x-tar`. It is checked whole first (the manifest, the state against its size and sha256, ' +
        'every entry: no absolute path or `..`, nothing through a link, no device): a damaged or hostile archive is refused (400) and nothing is made. ' +
        'The new environment gets a new id, the exported name unless `name` is given, the image the manifest names (it must resolve, for this org, to the same digest) ' +
        'and its limits, and is placed like any new environment.',
      params: OrgRef,
      querystring: ImportEnvironmentQuery,
      response: { 201: Environment, ...errors },
    },
    handler: async (req, reply) => {
      if (req.headers['content-type'] !== 'application/x-tar') throw invalid('send the export as a tar archive with Content-Type: application/x-tar', 'content-type');
      const labels = runnerLabels(req.query.runnerLabels);
      // Its settings are checked as the manifest arrives, before its state is read: a disk limit past the bounds does not get to fill ours.
      const bodyOf = (m: EnvironmentManifest) => {
        const body = CreateEnvironmentBody.safeParse({
          name: req.query.name ?? m.environment.name,
          image: m.image.ref,
          ...limitsBody(m.limits),
          ...(m.environment.user !== null && { user: m.environment.user }),
          ...(labels && { runnerLabels: labels }),
        });
        if (!body.success) throw invalid(`the export's settings are refused (${body.error.issues[0]?.path.join('.')}: ${body.error.issues[0]?.message})`);
        limitsFrom(body.data, Number.POSITIVE_INFINITY);
        return body.data;
      };
      const spooled = await spoolImport(req.body as Readable, bodyOf);
      try {
        const m = spooled.manifest;
        const created = await environments.create(req.scope, bodyOf(m), {
          // Like any create by this caller: the image resolves within the org, never a host path.
          mayWiden: false,
          hostPaths: false,
          role: req.scope.role,
          seed: { imageDigest: m.image.digest, write: (runner, spec) => runner.importState(spec, createReadStream(spooled.stateFile)) },
        });
        req.auditDetails = { from: m.environment.id, bytes: m.state.bytes, sha256: m.state.sha256 };
        return reply.code(201).send(created);
      } finally {
        await spooled.discard();
      }
    },
  });
}

function runnerLabels(raw: string | undefined): RunnerLabels | undefined {
  if (raw === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw invalid('runnerLabels must be a JSON object such as {"gpu":"true"}', 'runnerLabels');
  }
  const parsed = RunnerLabels.safeParse(value);
  if (!parsed.success) throw invalid(`runnerLabels: ${parsed.error.issues[0]?.message ?? 'invalid'}`, 'runnerLabels');
  return parsed.data;
}

