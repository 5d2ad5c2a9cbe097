// Where GitLab delivers: POST /api/webhooks/gitlab from any project or group webhook whose
// secret token is the integration's. The token is checked first (a wrong or missing one:
// 401, counted, nothing else); then the event is put on record under GitLab's event UUID (a
// retry or a second hook for the same event does nothing) and answered at once. Who asked,
// which project, and the task are worked out after (handle.ts).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { TriggerDeps } from '../index.ts';
import { GitLabHook, HANDLED_KINDS } from './payloads.ts';
import { gitlabConfig } from './settings.ts';
import { holdsNul } from '../payload.ts';
import { sameSecret } from '../secret.ts';

export const GITLAB_WEBHOOK_PATH = '/api/webhooks/gitlab';
export const SOURCE = 'gitlab';

/** GitLab's event UUIDs and idempotency keys are UUIDs; anything else of a sane size is taken too. */
const DELIVERY_ID = /^[A-Za-z0-9._:-]{1,100}$/;

export function gitlabWebhook(deps: TriggerDeps, scope: FastifyInstance): void {
  const counted = (outcome: string) => deps.counted(SOURCE, outcome);
  const refuse = (reply: FastifyReply, status: 400 | 401 | 404, kind: string, message: string) => reply.code(status).send({ error: { kind, message } });
  const invalid = (reply: FastifyReply, message: string) => {
    counted('invalid');
    return refuse(reply, 400, 'invalid', message);
  };

  scope.post(GITLAB_WEBHOOK_PATH, { config: { audit: 'task.trigger' } }, async (req: FastifyRequest, reply: FastifyReply) => {
    const header = (name: string) => (typeof req.headers[name] === 'string' ? (req.headers[name] as string) : undefined);
    const integration = await deps.integrations.get('gitlab');
    const config = integration && gitlabConfig(integration.settings, integration.secrets);
    if (!config) {
      counted('unconfigured');
      return refuse(reply, 404, 'not_found', 'GitLab is not set up on this Berth: an instance administrator runs `berth integration gitlab`');
    }
    const token = header('x-gitlab-token');
    if (token === undefined || !sameSecret(token, config.webhookToken)) {
      counted('unauthenticated');
      return refuse(reply, 401, 'unauthorized', 'the X-Gitlab-Token header is missing or is not this Berth\'s webhook secret token: set the webhook\'s secret token to the one given to `berth integration gitlab --webhook-token-file`');
    }

    // One event fires every hook that matches it (a project's and its group's) with one event
    // UUID, and a retry keeps it: it names the event. Newer GitLabs also send Idempotency-Key.
    const eventUuid = header('x-gitlab-event-uuid');
    const idempotencyKey = header('idempotency-key');
    const deliveryId = eventUuid ?? idempotencyKey;
    if (!deliveryId || !DELIVERY_ID.test(deliveryId)) return invalid(reply, 'no X-Gitlab-Event-UUID (or Idempotency-Key) header naming the event: Berth takes webhooks as GitLab sends them');

    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    let doc: unknown;
    try {
      doc = JSON.parse(body.toString('utf8'));
    } catch {
      return invalid(reply, 'the body is not JSON');
    }
    const kind = doc && typeof doc === 'object' && !Array.isArray(doc) ? (doc as { object_kind?: unknown }).object_kind : undefined;
    if (typeof kind !== 'string') return invalid(reply, 'the body is not a GitLab event: it has no object_kind');
    if (!HANDLED_KINDS.has(kind)) {
      counted('ignored');
      return reply.code(202).send({ ignored: `Berth acts on issue, note (comment) and push events only, not ${kind.slice(0, 50)}` });
    }
    if (holdsNul(doc)) return invalid(reply, 'the payload holds NUL characters or is nested more than 64 deep');
    const parsed = GitLabHook.safeParse(doc);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      return invalid(reply, `not a ${kind} event as GitLab sends one: ${issue?.path.join('.')}: ${issue?.message}`);
    }

    const event = (header('x-gitlab-event') ?? `${kind} hook`).slice(0, 100);
    // "Resend request" in GitLab's hook log sends a new event UUID with the old idempotency
    // key: on record too (done at once: there is nothing to handle under it).
    if (eventUuid && idempotencyKey && idempotencyKey !== eventUuid && DELIVERY_ID.test(idempotencyKey)) {
      const key = `idempotency:${idempotencyKey}`;
      if (!(await deps.deliveries.record(SOURCE, key, event, null))) {
        counted('replayed');
        return reply.code(202).send({ duplicate: deliveryId });
      }
      await deps.deliveries.finish(SOURCE, key, { outcome: `the idempotency key of event ${eventUuid}` });
    }
    const fresh = await deps.queue.accept({ source: SOURCE, deliveryId, event, payload: { ...parsed.data, delivery: { eventUuid: deliveryId, idempotencyKey: idempotencyKey ?? null } } });
    counted(fresh ? 'accepted' : 'replayed');
    return reply.code(202).send(fresh ? { accepted: deliveryId } : { duplicate: deliveryId });
  });
}
