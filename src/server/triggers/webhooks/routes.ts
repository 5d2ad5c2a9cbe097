// The org's API for its generic webhook triggers. Making, removing and rotating one is for
// those who manage projects (it starts tasks on one as its creator); anyone in the org may
// see them, never their secrets.
import { z } from 'zod';
import { ErrorSchema, OrgRef } from '../../../shared/api.ts';
import { CreateWebhookTriggerBody, WebhookTrigger, WebhookTriggerDetail, WebhookTriggerList, WebhookTriggerRef, WebhookTriggerWithSecret } from '../../../shared/api-webhook-triggers.ts';
import type { App } from '../../app.ts';
import type { TriggerRates } from './rate.ts';
import type { WebhookTriggerStore } from './store.ts';

const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema };
const tags = ['triggers'];

export function webhookTriggerRoutes(app: App, { store, rates }: { store: WebhookTriggerStore; rates: TriggerRates }): void {
  app.post('/api/orgs/:org/triggers', {
    config: { permission: 'project.manage', audit: 'trigger.create' },
    schema: {
      tags,
      summary: 'Make a generic webhook trigger: its URL and secret (shown this once)',
      params: OrgRef,
      body: CreateWebhookTriggerBody,
      response: { 201: WebhookTriggerWithSecret, ...errors },
    },
    handler: async (req, reply) => {
      const made = await store.create(req.scope, req.body);
      req.auditDetails = { name: made.name, project: made.project, auth: made.auth, ratePerMinute: made.ratePerMinute };
      return reply.code(201).send(made);
    },
  });

  app.get('/api/orgs/:org/triggers', {
    config: { permission: 'project.read' },
    schema: { tags, summary: "The org's generic webhook triggers (never their secrets)", params: OrgRef, response: { 200: WebhookTriggerList, ...errors } },
    handler: async (req) => ({ items: await store.list(req.scope.orgId) }),
  });

  app.get('/api/orgs/:org/triggers/:id', {
    config: { permission: 'project.read' },
    schema: { tags, summary: 'One trigger and its latest deliveries', params: WebhookTriggerRef, response: { 200: WebhookTriggerDetail, ...errors } },
    handler: async (req) => store.show(req.scope.orgId, req.params.id),
  });

  app.delete('/api/orgs/:org/triggers/:id', {
    config: { permission: 'project.manage', audit: 'trigger.delete' },
    schema: { tags, summary: 'Remove a trigger: its URL answers 404 from now on', params: WebhookTriggerRef, response: { 200: WebhookTrigger, ...errors } },
    handler: async (req) => {
      const removed = await store.remove(req.scope.orgId, req.params.id);
      rates.forget(removed.id);
      req.auditDetails = { name: removed.name, trigger: removed.id };
      return removed;
    },
  });

  app.post('/api/orgs/:org/triggers/:id/rotate', {
    config: { permission: 'project.manage', audit: 'trigger.rotate' },
    schema: {
      tags,
      summary: 'Give a trigger a new secret (shown this once); the old one stops working at once',
      params: WebhookTriggerRef,
      body: z.strictObject({}).optional(),
      response: { 200: WebhookTriggerWithSecret, ...errors },
    },
    handler: async (req) => {
      const rotated = await store.rotate(req.scope.orgId, req.params.id);
      req.auditDetails = { name: rotated.name, trigger: rotated.id };
      return rotated;
    },
  });
}
