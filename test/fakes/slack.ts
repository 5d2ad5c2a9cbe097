// A Slack for tests, both sides of the wire on loopback.
//
// The Web API methods Berth calls (auth.test, chat.postMessage, chat.update,
// chat.postEphemeral, users.info), under /api/ as on slack.com: form-encoded or JSON
// arguments, the bot token as `Authorization: Bearer` (or a `token` argument), and Slack's
// answers: HTTP 200 with `{ ok: true, … }`, or `{ ok: false, error: "invalid_auth" }` and the
// like. What was posted is kept in `messages`, the way a channel shows it.
//
// And what Slack sends to an app: slash commands (form-encoded) and Events API envelopes
// (JSON), signed as Slack signs them (`X-Slack-Signature: v0=HMAC-SHA256(v0:TS:BODY)`), with
// the payload shapes of Slack's documentation.
import { createHmac, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { closeServer, listen, sendJson } from './git-server.ts';

export interface FakeSlackUser {
  id: string;
  name: string;
  /** Shown only to a token with users:read.email. */
  email?: string;
  /** Slack's `is_email_confirmed`; true unless said otherwise. */
  emailConfirmed?: boolean;
  isBot?: boolean;
  deleted?: boolean;
}

export interface SlackMessageRecord {
  channel: string;
  ts: string;
  /** The thread it is in, when it is a reply. */
  threadTs: string | null;
  text: string;
  /** For an ephemeral message: the only user who sees it. */
  visibleTo: string | null;
  /** The texts it had before each chat.update, oldest first. */
  edits: string[];
}

export interface FakeSlack {
  url: string;
  /** `${url}/api/`: give it as the integration's apiUrl. */
  apiUrl: string;
  team: string;
  /** The app's bot user (auth.test's user_id). */
  botUser: string;
  botToken: string;
  signingSecret: string;
  users: Map<string, FakeSlackUser>;
  messages: SlackMessageRecord[];
  /** Every Web API call: method and Slack's `error`, if it answered with one. */
  calls: { method: string; error: string | null }[];
  /** Whether the token has users:read.email (a users.info then shows profile.email). */
  emailScope: boolean;
  /** Channels the app is not in (private ones it was not invited to): writing there is `not_in_channel`. */
  closedChannels: Set<string>;
  /** Sends a request to an app the way Slack does: signed (`signAs` a wrong secret to forge one, `at` a time to replay one). */
  deliver(url: string, body: string, o: { contentType: 'application/x-www-form-urlencoded' | 'application/json'; at?: Date; signAs?: string; retryNum?: number }): Promise<{ status: number; body: any }>;
  close(): Promise<void>;
}

export async function startFakeSlack(o: { team?: string; botUser?: string } = {}): Promise<FakeSlack> {
  const messages: SlackMessageRecord[] = [];
  const calls: FakeSlack['calls'] = [];
  let seq = 0;
  const nextTs = () => `${Math.floor(Date.now() / 1000)}.${String(++seq).padStart(6, '0')}`;

  const slack: FakeSlack = {
    url: '',
    apiUrl: '',
    team: o.team ?? 'T0001BERTH',
    botUser: o.botUser ?? 'U0BERTHBOT',
    botToken: `xoxb-${randomBytes(12).toString('hex')}`,
    signingSecret: randomBytes(16).toString('hex'),
    users: new Map(),
    messages,
    calls,
    emailScope: true,
    closedChannels: new Set(),
    async deliver(url, body, d) {
      const ts = String(Math.floor((d.at ?? new Date()).getTime() / 1000));
      const signature = `v0=${createHmac('sha256', d.signAs ?? slack.signingSecret).update(`v0:${ts}:${body}`).digest('hex')}`;
      const headers: Record<string, string> = { 'content-type': d.contentType, 'x-slack-request-timestamp': ts, 'x-slack-signature': signature, 'user-agent': 'Slackbot 1.0 (+https://api.slack.com/robots)' };
      if (d.retryNum) Object.assign(headers, { 'x-slack-retry-num': String(d.retryNum), 'x-slack-retry-reason': 'http_timeout' });
      const res = await fetch(url, { method: 'POST', headers, body });
      const text = await res.text();
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        // not JSON (an empty 200)
      }
      return { status: res.status, body: parsed };
    },
    close: () => closeServer(server),
  };

  type Args = Record<string, unknown>;
  const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
  const methods: Record<string, (a: Args) => Record<string, unknown>> = {
    'auth.test': () => ({ url: `https://berth-test.slack.com/`, team: 'Berth Test', user: 'berth', team_id: slack.team, user_id: slack.botUser, bot_id: 'B0BERTHBOT', is_enterprise_install: false }),
    'users.info': (a) => {
      const u = slack.users.get(str(a.user) ?? '');
      if (!u) return { error: 'user_not_found' };
      return {
        user: {
          id: u.id,
          team_id: slack.team,
          name: u.name,
          deleted: u.deleted ?? false,
          real_name: u.name,
          tz: 'Europe/Berlin',
          profile: { real_name: u.name, display_name: u.name, ...(slack.emailScope && u.email ? { email: u.email } : {}), team: slack.team },
          is_admin: false,
          is_owner: false,
          is_bot: u.isBot ?? false,
          is_app_user: false,
          updated: 1_700_000_000,
          is_email_confirmed: u.emailConfirmed ?? true,
        },
      };
    },
    'chat.postMessage': (a) => {
      const channel = str(a.channel);
      if (!channel) return { error: 'channel_not_found' };
      const text = str(a.text);
      if (!text && !a.blocks) return { error: 'no_text' };
      const ts = nextTs();
      const threadTs = str(a.thread_ts) ?? null;
      messages.push({ channel, ts, threadTs, text: text ?? '', visibleTo: null, edits: [] });
      return { channel, ts, message: { type: 'message', subtype: 'bot_message', text, ts, bot_id: 'B0BERTHBOT', ...(threadTs ? { thread_ts: threadTs } : {}) } };
    },
    'chat.update': (a) => {
      const m = messages.find((x) => x.channel === str(a.channel) && x.ts === str(a.ts) && !x.visibleTo);
      if (!m) return { error: 'message_not_found' };
      const text = str(a.text);
      if (!text && !a.blocks) return { error: 'no_text' };
      m.edits.push(m.text);
      m.text = text ?? '';
      return { channel: m.channel, ts: m.ts, text: m.text, message: { type: 'message', text: m.text, bot_id: 'B0BERTHBOT' } };
    },
    'chat.postEphemeral': (a) => {
      const channel = str(a.channel);
      const user = str(a.user);
      if (!channel) return { error: 'channel_not_found' };
      if (!user || !slack.users.has(user)) return { error: 'user_not_in_channel' };
      const text = str(a.text);
      if (!text && !a.blocks) return { error: 'no_text' };
      const ts = nextTs();
      messages.push({ channel, ts, threadTs: str(a.thread_ts) ?? null, text: text ?? '', visibleTo: user, edits: [] });
      return { message_ts: ts };
    },
  };

  async function readArgs(req: IncomingMessage): Promise<Args> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    if ((req.headers['content-type'] ?? '').startsWith('application/json')) {
      try {
        return (JSON.parse(text) as Args) ?? {};
      } catch {
        return {};
      }
    }
    return Object.fromEntries(new URLSearchParams(text));
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '').split('?')[0]!;
    const method = path.replace(/^\/api\//, '');
    const call = methods[method];
    const answer = (error: string | null, body: Record<string, unknown> = {}) => {
      calls.push({ method, error });
      sendJson(res, 200, error ? { ok: false, error } : { ok: true, ...body });
    };
    if (!path.startsWith('/api/') || !call) return answer('unknown_method');
    if (req.method !== 'POST' && req.method !== 'GET') return answer('method_not_supported_for_channel_type');
    const args = await readArgs(req);
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1] ?? str(args.token);
    if (!bearer) return answer('not_authed');
    if (bearer !== slack.botToken) return answer('invalid_auth');
    if (method.startsWith('chat.') && slack.closedChannels.has(str(args.channel) ?? '')) return answer('not_in_channel');
    const out = call(args);
    if (typeof out.error === 'string') return answer(out.error);
    answer(null, out);
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err) => sendJson(res, 500, { ok: false, error: 'fatal_error', detail: String(err) }));
  });
  const port = await listen(server);
  slack.url = `http://127.0.0.1:${port}`;
  slack.apiUrl = `${slack.url}/api/`;
  return slack;
}

/** A slash command's form body as Slack sends it (https://api.slack.com/interactivity/slash-commands#app_command_handling). */
export function slashCommandBody(slack: FakeSlack, o: { user: string; userName?: string; channel: string; text: string; triggerId?: string; command?: string }): string {
  return new URLSearchParams({
    token: 'gIkuvaNzQIHg97ATvDxqgjtO',
    team_id: slack.team,
    team_domain: 'berth-test',
    enterprise_id: '',
    enterprise_name: '',
    channel_id: o.channel,
    channel_name: 'dev',
    user_id: o.user,
    user_name: o.userName ?? 'someone',
    command: o.command ?? '/berth',
    text: o.text,
    api_app_id: 'A0BERTHAPP',
    is_enterprise_install: 'false',
    response_url: `${slack.url}/commands/${slack.team}/1234/${randomBytes(8).toString('hex')}`,
    trigger_id: o.triggerId ?? `${Date.now()}.${slack.team}.${randomBytes(8).toString('hex')}`,
  }).toString();
}

/** An Events API `event_callback` carrying an app_mention (https://api.slack.com/events/app_mention). */
export function appMentionBody(slack: FakeSlack, o: { user: string; channel: string; text: string; eventId?: string; ts?: string; threadTs?: string }): string {
  const ts = o.ts ?? `${Math.floor(Date.now() / 1000)}.${String(Math.floor(Math.random() * 1e6)).padStart(6, '0')}`;
  return JSON.stringify({
    token: 'ZZZZZZWSxiZZZ2yIvs3peJ',
    team_id: slack.team,
    api_app_id: 'A0BERTHAPP',
    event: {
      type: 'app_mention',
      user: o.user,
      text: `<@${slack.botUser}> ${o.text}`,
      ts,
      channel: o.channel,
      event_ts: ts,
      ...(o.threadTs ? { thread_ts: o.threadTs } : {}),
    },
    type: 'event_callback',
    event_id: o.eventId ?? `Ev${randomBytes(5).toString('hex').toUpperCase()}`,
    event_time: Math.floor(Date.now() / 1000),
    authorizations: [{ enterprise_id: null, team_id: slack.team, user_id: slack.botUser, is_bot: true, is_enterprise_install: false }],
    is_ext_shared_channel: false,
    event_context: `4-${randomBytes(12).toString('hex')}`,
  });
}

/** The Events API's URL check (https://api.slack.com/events/url_verification). */
export function urlVerificationBody(challenge: string): string {
  return JSON.stringify({ token: 'Jhj5dZrVaK7ZwHHjRyZWjbDl', challenge, type: 'url_verification' });
}
