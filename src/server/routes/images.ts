import { z } from 'zod';
import { ErrorSchema } from '../../shared/api.ts';
import type { App, AppDeps } from '../app.ts';
import { forbidden } from '../authz.ts';

const Image = z.object({ name: z.string(), digest: z.string(), sizeBytes: z.number(), createdAt: z.string(), source: z.string() });
const ImportBody = z.strictObject({
  path: z.string().startsWith('/', 'must be an absolute path on the server').max(4096),
  name: z.string().regex(/^[a-z0-9][a-z0-9._/-]*(:[\w.-]+)?$/, 'use lower-case letters, digits, . _ / - and an optional :tag').max(255).optional(),
});
const errors = { 400: ErrorSchema, 401: ErrorSchema, 404: ErrorSchema };
const tags = ['images'];

const view = ({ name, digest, sizeBytes, createdAt, source }: z.infer<typeof Image>) => ({ name, digest, sizeBytes, createdAt, source });

export function imageRoutes(app: App, { images }: AppDeps): void {
  app.get('/api/images', {
    schema: { tags, summary: 'List the images on this runner', response: { 200: z.object({ items: z.array(Image) }), ...errors } },
    handler: async () => ({ items: (await images.list()).map(view) }),
  });

  app.post('/api/images/import', {
    config: { audit: 'image.import' },
    schema: {
      tags,
      summary: 'Import an OCI image layout or docker-save tarball from a path on the server',
      body: ImportBody,
      response: { 201: Image, ...errors },
    },
    handler: async (req, reply) => {
      // Images are shared by every org on the runner, and the path is read on the server.
      if (!req.caller.instanceAdmin) throw forbidden('importing images needs an instance administrator (the user `berth up` made)');
      return reply.code(201).send(view(await images.importArchive(req.body.path, { name: req.body.name })));
    },
  });
}
