// Where GitHub delivers: POST /api/webhooks/github, the GitHub App's webhook URL. The
// signature is checked over the bytes received before anything else (unsigned, wrong, or no
// App set up: 401, counted, nothing recorded); then the delivery is put on record under its
// X-GitHub-Delivery id (a redelivery does nothing) and answered at once. Who asked, which
// project and the task are worked out after (handle.ts).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { TriggerDeps } from '../index.ts';
import { readPayload } from './events.ts';
import type { GitHubAppSecrets, GitHubAppSettings } from './settings.ts';
import { signedBy } from './verify.ts';
import { holdsNul } from '../payload.ts';

export const GITHUB_WEBHOOK_PATH = '/api/webhooks/github';
export const SOURCE = 'github';

/** GitHub's delivery ids are UUIDs (GUIDs); anything else of a sane size is taken too. */
const DELIVERY_ID = /^[A-Za-z0-9._:-]{1,100}$/;
const EVENT = /^[a-z_]{1,60}$/;

export function githubWebhook(deps: TriggerDeps, scope: FastifyInstance): void {
  const counted = (outcome: string) => deps.counted(SOURCE, outcome);
  const refuse = (reply: FastifyReply, status: 400 | 401, kind: string, message: string) => reply.code(status).send({ error: { kind, message } });
  const invalid = (reply: FastifyReply, message: string) => {
    counted('invalid');
    return refuse(reply, 400, 'invalid', message);
  };

  scope.post(GITHUB_WEBHOOK_PATH, { config: { audit: 'task.trigger' } }, async (req: FastifyRequest, reply: FastifyReply) => {
    const header = (name: string) => (typeof req.headers[name] === 'string' ? (req.headers[name] as string) : undefined);
    const integration = await deps.integrations.get<GitHubAppSettings, GitHubAppSecrets>('github');
    const body = Buffer.isBuffer(req.body) ? req.body : undefined;
    if (!integration || !(await signedBy(integration.secrets.webhookSecret, body, header('x-hub-signature-256')))) {
      counted('unauthenticated');
      return refuse(
        reply,
        401,
        'unauthorized',
        integration
          ? "the X-Hub-Signature-256 header is missing or does not sign this body with the App's webhook secret: set the App's webhook secret to the one given to `berth integration github --webhook-secret-file`"
          : 'no GitHub App is set up on this Berth: an instance administrator runs `berth integration github`',
      );
    }

    const event = header('x-github-event');
    const deliveryId = header('x-github-delivery');
    if (!event || !EVENT.test(event)) return invalid(reply, 'no X-GitHub-Event header naming the event: Berth takes webhooks as GitHub sends them');
    if (!deliveryId || !DELIVERY_ID.test(deliveryId)) return invalid(reply, 'no X-GitHub-Delivery header with the delivery id: Berth takes webhooks as GitHub sends them');
    let doc: unknown;
    try {
      doc = JSON.parse(body!.toString('utf8'));
    } catch {
      return invalid(reply, 'the body is not JSON: set the App\'s webhook content type to application/json');
    }
    if (!doc || typeof doc !== 'object' || Array.isArray(doc)) return invalid(reply, 'the body is not a GitHub event: a JSON object is expected');
    if (event === 'ping') {
      counted('ping');
      return reply.code(200).send({ ok: true, zen: 'Berth hears you' });
    }
    const read = readPayload(event, doc);
    if (read.error !== undefined) return invalid(reply, read.error);
    // PostgreSQL's jsonb cannot keep NUL, and GitHub never sends it.
    if (holdsNul(read.payload)) return invalid(reply, 'the payload holds NUL characters');

    const fresh = await deps.queue.accept({ source: SOURCE, deliveryId, event, payload: read.payload });
    counted(fresh ? 'accepted' : 'replayed');
    return fresh ? reply.code(202).send({ accepted: deliveryId }) : reply.code(200).send({ duplicate: true });
  });
}
