// The schedule API: org-scoped, like tasks. Who may do what is in service.ts.
import { z } from 'zod';
import { ErrorSchema, OrgRef } from '../../../shared/api.ts';
import { CreateScheduleBody, ListSchedulesQuery, Schedule, ScheduleDetail, ScheduleList, ScheduleRef } from '../../../shared/api-schedules.ts';
import type { App } from '../../app.ts';
import type { ScheduleService } from './service.ts';

const tags = ['schedules'];
const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema };

export function scheduleRoutes(app: App, schedules: ScheduleService): void {
  app.post('/api/orgs/:org/schedules', {
    // An environment schedule needs environment.write as well, and the environment must be the caller's (service.ts).
    config: { permission: 'task.create', audit: 'schedule.create' },
    schema: {
      tags,
      summary: 'A cron rule that starts a task on a project, or stops or starts an environment',
      description: 'The rule has five fields and is read in `timezone` (IANA, default UTC), daylight-saving changes included. The schedule acts as its creator.',
      params: OrgRef,
      body: CreateScheduleBody,
      response: { 201: Schedule, ...errors },
    },
    handler: async (req, reply) => {
      const made = await schedules.create(req.scope, req.body);
      req.auditDetails = { kind: made.kind, cron: made.cron, timezone: made.timezone, project: made.project, environment: made.environmentId, action: made.action };
      return reply.code(201).send(made);
    },
  });

  app.get('/api/orgs/:org/schedules', {
    config: { permission: 'task.read' },
    schema: { tags, summary: "The org's schedules, oldest first, each with its next slot and latest firing", params: OrgRef, querystring: ListSchedulesQuery, response: { 200: ScheduleList, ...errors } },
    handler: async (req) => schedules.list(req.scope, req.query),
  });

  app.get('/api/orgs/:org/schedules/:id', {
    config: { permission: 'task.read' },
    schema: { tags, summary: 'One schedule, its next three slots and its latest firings', params: ScheduleRef, response: { 200: ScheduleDetail, ...errors } },
    handler: async (req) => schedules.show(req.scope, req.params.id),
  });

  app.delete('/api/orgs/:org/schedules/:id', {
    config: { permission: 'task.create', audit: 'schedule.delete' },
    schema: { tags, summary: 'Remove a schedule (its creator or an admin); its firings stay on record', params: ScheduleRef, response: { 204: z.null(), ...errors } },
    handler: async (req, reply) => {
      await schedules.remove(req.scope, req.params.id);
      return reply.code(204).send(null);
    },
  });

  app.post('/api/orgs/:org/schedules/:id/pause', {
    config: { permission: 'task.create', audit: 'schedule.pause' },
    schema: { tags, summary: 'Stop firing until resumed (its creator or an admin)', params: ScheduleRef, response: { 200: ScheduleDetail, ...errors } },
    handler: async (req) => schedules.pause(req.scope, req.params.id),
  });

  app.post('/api/orgs/:org/schedules/:id/resume', {
    config: { permission: 'task.create', audit: 'schedule.resume' },
    schema: { tags, summary: 'Fire again from the next slot; slots passed while paused are skipped', params: ScheduleRef, response: { 200: ScheduleDetail, ...errors } },
    handler: async (req) => schedules.resume(req.scope, req.params.id),
  });
}
