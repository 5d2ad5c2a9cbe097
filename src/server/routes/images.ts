import { z } from 'zod';
import { ErrorSchema, OrgRef } from '../../shared/api.ts';
import { invalid, notFound } from '../../shared/errors.ts';
import { isRegistryReference } from '../../runner/index.ts';
import type { App, AppDeps } from '../app.ts';
import { actorOf, forbidden } from '../authz.ts';
import { SECRET_NAME } from '../secrets/service.ts';
import { ImageProgressBoard } from './image-progress.ts';

const Image = z.object({
  name: z.string(),
  org: z.string().nullable().describe("the org whose image this is (it pulled it), by name; null for the instance's images, which every org may use"),
  digest: z.string(),
  sizeBytes: z.number(),
  createdAt: z.string(),
  source: z.string(),
});
const ImportBody = z.strictObject({
  path: z.string().startsWith('/', 'must be an absolute path on the server').max(4096),
  name: z.string().regex(/^[a-z0-9][a-z0-9._/-]*(:[\w.-]+)?$/, 'use lower-case letters, digits, . _ / - and an optional :tag').max(255).optional(),
  progress: z.uuid().optional().describe('an id to follow the import by at GET /api/images/progress/{id} while this request is open'),
});
const PullBody = z.strictObject({
  ref: z.string().min(1).max(1024).describe('a registry reference with its host, like docker.io/library/alpine:3.20'),
  authSecret: z.string().regex(SECRET_NAME).optional().describe("the org secret holding the registry login as USER:PASSWORD (or USER:TOKEN); needs a role that may manage secrets"),
  progress: z.uuid().optional().describe('an id to follow the pull by at GET /api/images/progress/{id} while this request is open'),
});
const Progress = z.object({
  phase: z.string(),
  message: z.string(),
  fraction: z.number().optional(),
  bytes: z.object({ done: z.number(), total: z.number().optional() }).optional().describe('bytes through so far in this step, and how many there are when known'),
});
const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 503: ErrorSchema };
const tags = ['images'];

interface StoredImage {
  name: string;
  org?: string;
  digest: string;
  sizeBytes: number;
  createdAt: string;
  source: string;
}
const view = ({ name, org, digest, sizeBytes, createdAt, source }: StoredImage, orgNames: ReadonlyMap<string, string>) => ({
  name,
  org: org === undefined ? null : (orgNames.get(org) ?? org),
  digest,
  sizeBytes,
  createdAt,
  source,
});

export function imageRoutes(app: App, { images, authz, db, audit, secrets }: AppDeps): void {
  const board = new ImageProgressBoard();

  app.post('/api/orgs/:org/images/pull', {
    config: { permission: 'environment.write', audit: 'image.pull' },
    schema: {
      tags,
      summary: "Pull an image from a registry into the org's images (a no-op when the org already has it)",
      params: OrgRef,
      body: PullBody,
      response: { 201: Image, ...errors },
    },
    handler: async (req, reply) => {
      const { ref, authSecret } = req.body;
      if (!isRegistryReference(ref)) throw invalid(`'${ref}' is not a registry reference: give the image with its registry host, like docker.io/library/alpine:3.20`, 'ref');
      let login: ((registry: string) => Promise<{ value: string; from: string }>) | undefined;
      if (authSecret !== undefined) {
        // The login goes to whichever registry the caller names: only someone who may set the org's secrets may send one there.
        await authz.scope(req.caller, req.params.org, 'secret.manage');
        const value = await secrets.forgeSecret(req.scope.orgId, null, authSecret);
        if (value === null) throw notFound(`no org secret '${authSecret}': store the registry login first, \`printf %s "$USER:$TOKEN" | berth secret set ${authSecret}\``);
        login = async () => ({ value, from: `secret ${authSecret}` });
      }
      req.auditDetails = { ref, ...(authSecret !== undefined && { authSecret }) };
      const { onProgress, done } = board.track(req.caller.tokenId, req.body.progress);
      const pulled = await images.resolve(ref, { org: req.scope.orgId, login, onProgress }).finally(done);
      return reply.code(201).send(view(pulled, new Map([[req.scope.orgId, req.scope.orgName]])));
    },
  });

  app.get('/api/images', {
    schema: {
      tags,
      summary: "List the images the caller may use: the instance's and those of the caller's orgs (an instance administrator sees every org's)",
      response: { 200: z.object({ items: z.array(Image) }), ...errors },
    },
    handler: async (req) => {
      // An org's images (what its people pulled) are its own business, like its environments.
      if (req.caller.instanceAdmin) {
        const orgNames = new Map((await db.selectFrom('orgs').select(['id', 'name']).execute()).map((o) => [o.id, o.name]));
        return { items: (await images.list()).map((i) => view(i, orgNames)) };
      }
      const orgs = await authz.orgsOf(req.caller);
      const orgNames = new Map(orgs.map((o) => [o.id, o.name]));
      return { items: (await images.list({ orgs: orgs.map((o) => o.id) })).map((i) => view(i, orgNames)) };
    },
  });

  app.get('/api/images/progress/:id', {
    schema: {
      tags,
      summary: 'How far the caller\'s pull or import with this progress id is (while its request is open)',
      params: z.object({ id: z.uuid() }),
      response: { 200: z.object({ progress: Progress.nullable().describe('null until the first step is reported') }), ...errors },
    },
    handler: async (req) => {
      const progress = board.read(req.caller.tokenId, req.params.id);
      if (progress === undefined) throw notFound(`no pull or import of yours is running under progress id ${req.params.id}`);
      return { progress };
    },
  });

  app.post('/api/images/import', {
    config: { audit: 'image.import' },
    schema: {
      tags,
      summary: 'Import an OCI image layout or docker-save tarball from a path on the server (instance administrators)',
      body: ImportBody,
      response: { 201: Image, ...errors },
    },
    handler: async (req, reply) => {
      // Images are shared by every org on the runner, and the path is read on the server.
      if (!req.caller.instanceAdmin) throw forbidden('importing images needs an instance administrator (the user `berth up` made)');
      const { onProgress, done } = board.track(req.caller.tokenId, req.body.progress);
      const imported = await images.importArchive(req.body.path, { name: req.body.name }, onProgress).finally(done);
      // An instance image is one every org may run, so each org's log says it arrived (the
      // audit hook records only calls scoped to one org). The host path stays out of it.
      const orgs = await db.selectFrom('orgs').select('id').execute();
      for (const { id } of orgs) {
        await audit.append({ orgId: id, actor: actorOf(req.caller), action: 'image.import', target: imported.name, details: { digest: imported.digest, source: imported.source, scope: 'instance' } });
      }
      return reply.code(201).send(view(imported, new Map()));
    },
  });
}
