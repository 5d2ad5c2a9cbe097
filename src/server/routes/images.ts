import { z } from 'zod';
import { ErrorSchema } from '../../shared/api.ts';
import type { App, AppDeps } from '../app.ts';
import { actorOf, forbidden } from '../authz.ts';

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
});
const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema };
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

export function imageRoutes(app: App, { images, authz, db, audit }: AppDeps): void {
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
      const imported = await images.importArchive(req.body.path, { name: req.body.name });
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
