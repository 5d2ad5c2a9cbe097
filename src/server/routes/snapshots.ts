// Snapshots (`berth env snapshot`, `berth snapshot list|show|rm`), forks (`berth env fork`)
// and environments made from a snapshot (`berth env create --from`).
import { atLeast } from '../authz.ts';
import { Environment, EnvironmentRef, ErrorSchema, OrgRef } from '../../shared/api.ts';
import { CreateFromSnapshotBody, CreateSnapshotBody, ForkEnvironmentBody, ForkResult, ListSnapshotsQuery, Snapshot, SnapshotList, SnapshotRef } from '../../shared/api-snapshots.ts';
import type { SnapshotService } from '../snapshots/service.ts';
import type { App } from '../app.ts';

const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema, 503: ErrorSchema };
const tags = ['snapshots'];

export function snapshotRoutes(app: App, { snapshots }: { snapshots: SnapshotService }): void {
  app.post('/api/orgs/:org/environments/:id/snapshot', {
    // Its owner's or an admin's, as an export is: a snapshot holds every file, secrets written into them too.
    config: { permission: 'environment.write', audit: 'environment.snapshot', ownership: 'owner' },
    schema: {
      tags,
      summary: "Freeze an environment's files as a snapshot",
      description:
        'Running or stopped. A running environment is paused (its processes frozen) for the moment of the freeze and goes on. ' +
        "On a runner with the btrfs state store nothing is copied: the snapshot is a read-only copy-on-write subvolume, made in milliseconds whatever the workspace holds.",
      params: EnvironmentRef,
      body: CreateSnapshotBody.nullish(),
      response: { 201: Snapshot, ...errors },
    },
    handler: async (req, reply) => {
      const made = await snapshots.create(req.scope, req.params.id, { name: req.body?.name });
      req.auditDetails = { snapshot: made.id, name: made.name, bytes: made.bytes, copied: made.copied, pausedMs: made.pausedMs };
      return reply.code(201).send(made);
    },
  });

  app.post('/api/orgs/:org/environments/:id/fork', {
    config: { permission: 'environment.write', audit: 'environment.fork', ownership: 'owner' },
    schema: {
      tags,
      summary: 'Snapshot an environment and make environments from it',
      description:
        "Each new environment has every file of the source at the snapshot's moment; writes of one never show in another, in the source or in the snapshot. " +
        "They get the source's limits, project and user; their policy and secrets are their own, as any new environment's.",
      params: EnvironmentRef,
      body: ForkEnvironmentBody.nullish(),
      response: { 201: ForkResult, ...errors },
    },
    handler: async (req, reply) => {
      const body = ForkEnvironmentBody.parse(req.body ?? {});
      const made = await snapshots.fork(req.scope, req.params.id, body, { mayWiden: atLeast(req.scope.role, 'admin'), role: req.scope.role });
      req.auditDetails = { snapshot: made.snapshot.id, environments: made.environments.map((e) => e.id) };
      return reply.code(201).send(made);
    },
  });

  app.get('/api/orgs/:org/snapshots', {
    config: { permission: 'environment.read' },
    schema: { tags, summary: "The org's snapshots", params: OrgRef, querystring: ListSnapshotsQuery, response: { 200: SnapshotList, ...errors } },
    handler: async (req) => ({ items: await snapshots.list(req.scope, req.query) }),
  });

  app.get('/api/orgs/:org/snapshots/:snapshot', {
    config: { permission: 'environment.read' },
    schema: { tags, summary: 'One snapshot', params: SnapshotRef, response: { 200: Snapshot, ...errors } },
    handler: async (req) => snapshots.show(req.scope, req.params.snapshot),
  });

  app.delete('/api/orgs/:org/snapshots/:snapshot', {
    config: { permission: 'environment.write', audit: 'snapshot.delete' },
    schema: {
      tags,
      summary: 'Remove a snapshot',
      description: "Its maker's or an admin's (a prebuild's: an admin's). Refused (409) while a project's current prebuild or an environment being made uses it; environments made from it keep their files.",
      params: SnapshotRef,
      response: { 200: Snapshot, ...errors },
    },
    handler: async (req) => snapshots.remove(req.scope, req.params.snapshot),
  });

  app.post('/api/orgs/:org/snapshots/:snapshot/environments', {
    config: { permission: 'environment.write', audit: 'environment.create' },
    schema: {
      tags,
      summary: 'Make an environment from a snapshot',
      description: "On the snapshot's runner, with its image and files; its limits, project, policy and secrets are this request's, as any create's.",
      params: SnapshotRef,
      body: CreateFromSnapshotBody,
      response: { 201: Environment, ...errors },
    },
    handler: async (req, reply) => {
      const made = await snapshots.createEnvironment(req.scope, req.params.snapshot, req.body, { mayWiden: atLeast(req.scope.role, 'admin'), role: req.scope.role });
      req.auditDetails = { snapshot: req.params.snapshot, environment: made.id };
      return reply.code(201).send(made);
    },
  });
}
