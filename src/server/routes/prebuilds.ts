// Prebuilds (`berth prebuild PROJECT`, `berth prebuild list PROJECT`): a project's repository
// cloned at its default branch's head, set up and snapshotted, for its tasks to start from.
import { z } from 'zod';
import { ErrorSchema, OrgRef } from '../../shared/api.ts';
import { PREBUILD_STATES } from '../../shared/prebuilds.ts';
import type { PrebuildService } from '../prebuilds/service.ts';
import type { App } from '../app.ts';

const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema };
const tags = ['prebuilds'];

export const PrebuildView = z.object({
  id: z.string(),
  project: z.string(),
  state: z.enum(PREBUILD_STATES),
  trigger: z.enum(['manual', 'schedule', 'push']),
  branch: z.string().nullable(),
  commit: z.string().nullable().describe('the commit it was built at (set once cloned)'),
  specKey: z.string().nullable().describe('a hash of the image, setup and workspace it was built for: a task whose spec differs does not use it'),
  snapshotId: z.string().nullable(),
  snapshotBytes: z.number().nullable(),
  runnerId: z.string().nullable().describe('the runner its snapshot lives on: only tasks there start from it'),
  stateReason: z.string().nullable(),
  log: z.array(z.string()).describe('the last lines of its setup output'),
  createdBy: z.string(),
  createdAt: z.string(),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
});
const ProjectParams = OrgRef.extend({ project: z.string().max(100) });

export function prebuildRoutes(app: App, { prebuilds }: { prebuilds: PrebuildService }): void {
  app.post('/api/orgs/:org/projects/:project/prebuilds', {
    // Running the project's setup is what a task does: a member may ask for it.
    config: { permission: 'task.create', audit: 'project.prebuild' },
    schema: {
      tags,
      summary: 'Queue a prebuild of the project',
      description: "Clones the default branch's head, runs the setup (devcontainer lifecycle commands, berth.yaml setup) in a new environment and snapshots it. The row is written first (queued); `GET .../prebuilds/:id` follows it to ready or failed.",
      params: ProjectParams,
      response: { 202: PrebuildView, ...errors },
    },
    handler: async (req, reply) => {
      const made = await prebuilds.queue(req.scope, req.params.project);
      req.auditDetails = { prebuild: made.id, project: made.project };
      return reply.code(202).send(made);
    },
  });

  app.get('/api/orgs/:org/projects/:project/prebuilds', {
    config: { permission: 'project.read' },
    schema: { tags, summary: "The project's prebuilds, newest first", params: ProjectParams, response: { 200: z.object({ items: z.array(PrebuildView) }), ...errors } },
    handler: async (req) => ({ items: await prebuilds.list(req.scope, req.params.project) }),
  });

  app.get('/api/orgs/:org/prebuilds/:id', {
    config: { permission: 'project.read' },
    schema: { tags, summary: 'One prebuild', params: OrgRef.extend({ id: z.string().max(100) }), response: { 200: PrebuildView, ...errors } },
    handler: async (req) => prebuilds.show(req.scope, req.params.id),
  });
}
