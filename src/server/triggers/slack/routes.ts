// Where Slack delivers: the slash command's Request URL and the Events API's. Each request is
// checked against the signing secret first (a bad or stale one: 401, counted, nothing else),
// put on record (a retry of the same trigger_id or event_id does nothing) and answered at
// once: Slack waits three seconds. Who asked and which project is worked out after
// (start-task.ts).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { TriggerDeps } from '../index.ts';
import { slackApp } from './client.ts';
import { AppMention, EventCallback, SlashCommand, UrlVerification, type SlackRequest } from './payloads.ts';
import { USAGE } from './request-text.ts';
import { verifySlackSignature } from './verify.ts';

export const COMMANDS_PATH = '/api/webhooks/slack/commands';
export const EVENTS_PATH = '/api/webhooks/slack/events';
/** A slash command is a few hundred bytes and an event a few kilobytes; Slack caps a message at 40,000 characters. */
const BODY_LIMIT = 1024 * 1024;

export function slackWebhooks(deps: TriggerDeps, scope: FastifyInstance): void {
  const counted = (outcome: string) => deps.counted('slack', outcome);

  /** The body if Slack signed it with this app's secret, recently; else the answer is sent and null returned. */
  async function signed(req: FastifyRequest, reply: FastifyReply): Promise<Buffer | null> {
    const app = await slackApp(deps.integrations);
    if (!app) {
      counted('ignored');
      await reply.code(404).send({ error: { kind: 'not_found', message: 'Slack is not set up on this Berth: an instance administrator runs `berth integration slack`' } });
      return null;
    }
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const header = (name: string) => (typeof req.headers[name] === 'string' ? (req.headers[name] as string) : undefined);
    const now = deps.now?.() ?? new Date();
    if (!verifySlackSignature({ signingSecret: app.secrets.signingSecret, timestamp: header('x-slack-request-timestamp'), signature: header('x-slack-signature'), body, now })) {
      counted('unauthenticated');
      await reply.code(401).send({ error: { kind: 'unauthorized', message: 'the request is not signed with this Slack app\'s signing secret, or its timestamp is more than five minutes off' } });
      return null;
    }
    return body;
  }

  const invalid = (reply: FastifyReply, message: string) => {
    counted('invalid');
    return reply.code(400).send({ error: { kind: 'invalid', message } });
  };

  scope.post(COMMANDS_PATH, { bodyLimit: BODY_LIMIT, config: { audit: 'task.trigger' } }, async (req, reply) => {
    const body = await signed(req, reply);
    if (!body) return reply;
    const form = Object.fromEntries(new URLSearchParams(body.toString('utf8')));
    // Slack checks the certificate of a command's URL now and then: a 200 is all it wants.
    if (form.ssl_check === '1') return reply.code(200).send();
    const parsed = SlashCommand.safeParse(form);
    if (!parsed.success) return invalid(reply, `not a slash command as Slack sends one: ${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}`);
    const c = parsed.data;
    const text = c.text.trim();
    if (!text || /^help$/i.test(text)) {
      counted('ignored');
      return { response_type: 'ephemeral', text: USAGE };
    }
    const request: SlackRequest = { kind: 'command', team: c.team_id, user: c.user_id, channel: c.channel_id, text, requestId: c.trigger_id, threadTs: null };
    const fresh = await deps.queue.accept({ source: 'slack', deliveryId: `command:${c.trigger_id}`, event: 'command', payload: request });
    counted(fresh ? 'accepted' : 'replayed');
    return { response_type: 'ephemeral', text: fresh ? 'On it: a message in this channel will follow the task (or I will tell you here why it cannot start).' : 'Already on it.' };
  });

  scope.post(EVENTS_PATH, { bodyLimit: BODY_LIMIT, config: { audit: 'task.trigger' } }, async (req, reply) => {
    const body = await signed(req, reply);
    if (!body) return reply;
    let doc: unknown;
    try {
      doc = JSON.parse(body.toString('utf8'));
    } catch {
      return invalid(reply, 'the body is not JSON');
    }
    const type = (doc as { type?: unknown } | null)?.type;
    if (type === 'url_verification') {
      const v = UrlVerification.safeParse(doc);
      if (!v.success) return invalid(reply, 'a url_verification without a challenge');
      return { challenge: v.data.challenge };
    }
    if (type !== 'event_callback') {
      // app_rate_limited and whatever Slack adds later: nothing to do.
      counted('ignored');
      return reply.code(200).send();
    }
    const envelope = EventCallback.safeParse(doc);
    if (!envelope.success) return invalid(reply, `not an event_callback as Slack sends one: ${envelope.error.issues[0]?.path.join('.')}: ${envelope.error.issues[0]?.message}`);
    const { event, event_id, team_id } = envelope.data;
    // Only people's mentions start tasks: a bot's (Berth's own among them) and edited messages do not.
    if (event.type !== 'app_mention' || event.bot_id || event.subtype) {
      counted('ignored');
      return reply.code(200).send();
    }
    const mention = AppMention.safeParse(event);
    if (!mention.success) return invalid(reply, `not an app_mention as Slack sends one: ${mention.error.issues[0]?.path.join('.')}: ${mention.error.issues[0]?.message}`);
    const m = mention.data;
    const request: SlackRequest = { kind: 'mention', team: team_id, user: m.user, channel: m.channel, text: m.text, requestId: event_id, threadTs: m.thread_ts ?? m.ts };
    // A retry (X-Slack-Retry-Num) carries the same event_id: on record already, it does nothing.
    const fresh = await deps.queue.accept({ source: 'slack', deliveryId: `event:${event_id}`, event: 'app_mention', payload: request });
    counted(fresh ? 'accepted' : 'replayed');
    return reply.code(200).send();
  });
}
