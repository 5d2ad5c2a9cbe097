// Generic webhooks (`berth trigger`): a URL and a secret any system (CI, Sentry, PagerDuty)
// posts JSON to, and a goal template its payload fills in. What the API takes and shows.
import { z } from 'zod';
import { NAME_PATTERN, OrgRef } from './api.ts';

export const WEBHOOK_TRIGGER_AUTHS = ['hmac', 'bearer'] as const;
export type WebhookTriggerAuth = (typeof WEBHOOK_TRIGGER_AUTHS)[number];

/** Where a trigger's deliveries go, after the public URL: `PUBLIC/api/webhooks/triggers/whk_…`. */
export const WEBHOOK_TRIGGER_PATH = '/api/webhooks/triggers/';
/** HMAC auth: `sha256=` and the hex HMAC-SHA256 of the raw body under the secret. */
export const SIGNATURE_HEADER = 'x-berth-signature-256';
/** The sender's delivery id (either header); a second delivery with the same id starts nothing. */
export const DELIVERY_HEADERS = ['x-berth-delivery', 'idempotency-key'] as const;
/** The largest JSON body a trigger takes (413 past it). */
export const MAX_TRIGGER_BODY_BYTES = 64 * 1024;
/** Each value filled into a goal is cut to this many characters, and the goal to MAX_TRIGGER_GOAL. */
export const MAX_TEMPLATE_VALUE = 4 * 1024;
export const MAX_TRIGGER_GOAL = 32 * 1024;
export const MAX_TRIGGER_RATE = 10_000;

/** `{{body.a.b}}`, `{{body.items.0.name}}`, `{{headers.x-foo}}`: a path into the delivery, nothing else. */
export const TEMPLATE_FIELD = /\{\{\s*([^{}]*?)\s*\}\}/g;
export const TEMPLATE_PATH = /^(body|headers)((?:\.[A-Za-z0-9_$@-]+)*)$/;

/** What is wrong with a goal template, or undefined when every `{{…}}` in it names a path into the delivery. */
export function templateProblem(template: string): string | undefined {
  for (const m of template.matchAll(TEMPLATE_FIELD)) {
    if (!TEMPLATE_PATH.test(m[1]!)) return `{{${m[1]}}} is not a field: use {{body.a.b}}, {{body.items.0.name}} or {{headers.x-name}}`;
  }
  return undefined;
}

export const WebhookTriggerRef = OrgRef.extend({ id: z.string().min(1).max(100).describe('trigger id (whk_…) or name') });

export const CreateWebhookTriggerBody = z.strictObject({
  name: z.string().regex(NAME_PATTERN, 'use lower-case letters, digits and dashes (at most 63), starting with a letter or digit'),
  project: z.string().min(1).max(100).describe('project name or id the tasks run on'),
  goalTemplate: z
    .string()
    .trim()
    .min(1, 'say what the agent should do')
    .max(16 * 1024)
    .superRefine((t, ctx) => {
      const p = templateProblem(t);
      if (p) ctx.addIssue({ code: 'custom', message: p });
    })
    .describe('the goal, with {{body.path}} and {{headers.name}} filled in from each delivery'),
  auth: z.enum(WEBHOOK_TRIGGER_AUTHS).default('hmac').describe(`'hmac' (${SIGNATURE_HEADER}: sha256=HEX over the body) or 'bearer' (Authorization: Bearer SECRET)`),
  ratePerMinute: z.number().int().min(1).max(MAX_TRIGGER_RATE).default(60).describe('deliveries a minute it takes; more get 429'),
});
export type CreateWebhookTriggerBody = z.input<typeof CreateWebhookTriggerBody>;

export const WebhookTrigger = z.object({
  id: z.string(),
  name: z.string(),
  project: z.string().describe('project name'),
  goalTemplate: z.string(),
  auth: z.enum(WEBHOOK_TRIGGER_AUTHS),
  ratePerMinute: z.number(),
  url: z.string().describe('where deliveries are posted'),
  createdBy: z.string(),
  createdAt: z.string(),
});
export type WebhookTrigger = z.infer<typeof WebhookTrigger>;

/** Create and rotate answer with the secret: the only time it is shown. */
export const WebhookTriggerWithSecret = WebhookTrigger.extend({ secret: z.string().describe('shown once; only its sealed form is kept') });
export type WebhookTriggerWithSecret = z.infer<typeof WebhookTriggerWithSecret>;

export const WebhookTriggerDelivery = z.object({
  delivery: z.string(),
  receivedAt: z.string(),
  outcome: z.string().nullable().describe('null while it is being handled'),
  taskId: z.string().nullable(),
});
export type WebhookTriggerDelivery = z.infer<typeof WebhookTriggerDelivery>;

export const WebhookTriggerDetail = WebhookTrigger.extend({ deliveries: z.array(WebhookTriggerDelivery).describe('the latest deliveries, newest first') });
export type WebhookTriggerDetail = z.infer<typeof WebhookTriggerDetail>;

export const WebhookTriggerList = z.object({ items: z.array(WebhookTrigger) });
export type WebhookTriggerList = z.infer<typeof WebhookTriggerList>;

/** What a delivery is answered with (202): on record, its task queued asynchronously. */
export const WebhookTriggerAccepted = z.object({
  delivery: z.string(),
  duplicate: z.boolean().describe('a delivery with this id was already taken: nothing new starts'),
});
export type WebhookTriggerAccepted = z.infer<typeof WebhookTriggerAccepted>;
