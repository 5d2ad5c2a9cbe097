// POST /api/webhooks/triggers/:id: a delivery from any system that holds a trigger's secret.
// Checked in order of cost to the sender's harm: the trigger exists (404), the body is small
// (413, before it is read), the secret (401, counted and nothing else), JSON (415, 400), the
// trigger's rate (429). Then it is on record (deps.queue.accept) and answered 202; the task is
// queued asynchronously (handle.ts). Nothing here answers 5xx for anything a sender sends.
import { createHash } from 'node:crypto';
import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import { DELIVERY_HEADERS, MAX_TEMPLATE_VALUE, MAX_TRIGGER_BODY_BYTES, SIGNATURE_HEADER, WEBHOOK_TRIGGER_PATH, type WebhookTriggerAccepted } from '../../../shared/api-webhook-triggers.ts';
import type { ErrorKind } from '../../../shared/errors.ts';
import type { DeliveryQueue } from '../queue.ts';
import type { TriggerRates } from './rate.ts';
import { sourceOf, type WebhookTriggerStore } from './store.ts';
import { verifyDelivery } from './verify.ts';
import { MAX_PAYLOAD_DEPTH, storable } from '../payload.ts';

/** What a delivery is recorded with: its parsed body and the headers a template may name. */
export interface TriggerPayload {
  body: unknown;
  headers: Record<string, string>;
}

/** Never kept with a delivery: they carry the secret or a session. */
const UNKEPT_HEADERS = new Set(['authorization', 'proxy-authorization', 'cookie', SIGNATURE_HEADER]);
const MAX_HEADERS = 100;
const DELIVERY_ID = /^[\x21-\x7e]{1,200}$/;
const JSON_TYPE = /^application\/(?:[\w.-]+\+)?json\s*(?:;|$)/i;

export interface ReceiveDeps {
  store: WebhookTriggerStore;
  rates: TriggerRates;
  queue: DeliveryQueue;
  counted: (source: string, outcome: string) => void;
  now: () => Date;
}

export function receiveRoute(scope: FastifyInstance, d: ReceiveDeps): void {
  void scope.register(async (s) => {
    // Past the limit the body is not read at all; the app's own handler would call this 400.
    s.setErrorHandler((err: FastifyError, _req, reply) => {
      if (err.code !== 'FST_ERR_CTP_BODY_TOO_LARGE') throw err;
      d.counted('webhook', 'too_large');
      return refuse(reply, 413, 'invalid', `the body is larger than ${MAX_TRIGGER_BODY_BYTES / 1024} KiB: send less (a trigger's template needs only a few fields)`);
    });

    s.post<{ Params: { id: string }; Body: Buffer | undefined }>(`${WEBHOOK_TRIGGER_PATH}:id`, {
      bodyLimit: MAX_TRIGGER_BODY_BYTES,
      // Its audit entry is the task's (task.trigger, written when the delivery starts one).
      config: { audit: 'task.trigger' },
      schema: { hide: true },
    }, async (req, reply) => {
      const found = /^whk_[0-9a-z]{12}$/.test(req.params.id) ? await d.store.forDelivery(req.params.id) : null;
      if (!found) {
        d.counted('webhook', 'unknown');
        return refuse(reply, 404, 'not_found', 'no such trigger: it was removed or never existed (`berth trigger list` shows the URLs)');
      }
      const { row, secret } = found;
      const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      const signature = req.headers[SIGNATURE_HEADER];
      if (!verifyDelivery(row.auth, secret, raw, { authorization: req.headers.authorization, signature: typeof signature === 'string' ? signature : undefined })) {
        d.counted('webhook', 'unauthenticated');
        return refuse(
          reply,
          401,
          'unauthorized',
          row.auth === 'hmac'
            ? `sign the body: ${SIGNATURE_HEADER}: sha256=<hex HMAC-SHA256 of the raw body under the trigger's secret>`
            : "send the trigger's secret: Authorization: Bearer <secret>",
        );
      }
      if (!JSON_TYPE.test(req.headers['content-type'] ?? '')) {
        d.counted('webhook', 'invalid');
        return refuse(reply, 415, 'invalid', 'send the body as JSON with Content-Type: application/json');
      }
      const body = parseBody(raw);
      if ('problem' in body) {
        d.counted('webhook', 'invalid');
        return refuse(reply, 400, 'invalid', body.problem);
      }
      const given = DELIVERY_HEADERS.map((h) => req.headers[h]).find((v) => typeof v === 'string');
      if (given !== undefined && !DELIVERY_ID.test(given)) {
        d.counted('webhook', 'invalid');
        return refuse(reply, 400, 'invalid', 'X-Berth-Delivery (or Idempotency-Key) is 1 to 200 printable ASCII characters without spaces');
      }
      const wait = d.rates.take(row.id, row.rate_per_minute);
      if (wait) {
        d.counted('webhook', 'rate_limited');
        void reply.header('retry-after', String(wait));
        return refuse(reply, 429, 'rate_limited', `this trigger takes at most ${row.rate_per_minute} deliveries a minute: try again in ${wait} s`);
      }
      const delivery = given ?? bodyDeliveryId(raw, d.now());
      const payload: TriggerPayload = { body: body.value, headers: keptHeaders(req.headers) };
      const accepted = await d.queue.accept({ source: sourceOf(row.id), deliveryId: delivery, event: 'delivery', payload });
      d.counted('webhook', accepted ? 'accepted' : 'replayed');
      const answer: WebhookTriggerAccepted = { delivery, duplicate: !accepted };
      return reply.code(202).send(answer);
    });
  });
}

function refuse(reply: FastifyReply, status: number, kind: ErrorKind, message: string): FastifyReply {
  return reply.code(status).send({ error: { kind, message } });
}

/**
 * Without a delivery id from the sender: the body's hash and the minute it came in. A sender's
 * retry of the same body within the minute is one delivery; the same body a minute later is a new one.
 */
function bodyDeliveryId(raw: Buffer, now: Date): string {
  return `body-${createHash('sha256').update(raw).digest('hex').slice(0, 32)}@${now.toISOString().slice(0, 16)}`;
}

/**
 * The body as JSON a database can hold: NUL and unpaired surrogates (which PostgreSQL's jsonb
 * refuses) become U+FFFD (payload.ts); what is too deep is refused: nothing a template names is that deep.
 */
function parseBody(raw: Buffer): { value: unknown } | { problem: string } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString('utf8'));
  } catch (err) {
    return { problem: `the body is not JSON (${(err as Error).message.slice(0, 200)})` };
  }
  try {
    return { value: storable(parsed) };
  } catch {
    return { problem: `the body is nested more than ${MAX_PAYLOAD_DEPTH} levels deep` };
  }
}

function keptHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const kept: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers).slice(0, MAX_HEADERS)) {
    if (value === undefined || UNKEPT_HEADERS.has(name)) continue;
    kept[name] = (Array.isArray(value) ? value.join(', ') : value).slice(0, MAX_TEMPLATE_VALUE);
  }
  return kept;
}
