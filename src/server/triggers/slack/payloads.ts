// What Slack sends, as Slack documents it, bounded: a slash command (form-encoded,
// https://api.slack.com/interactivity/slash-commands#app_command_handling) and the Events
// API's envelopes (JSON, https://api.slack.com/apis/events-api#callback-field). Fields Berth
// does not read are let through unchecked; the ones it reads are typed and sized.
import { z } from 'zod';

const id = z.string().regex(/^[A-Z0-9]{2,40}$/, 'a Slack id');
const ts = z.string().regex(/^\d{1,12}\.\d{1,9}$/, 'a Slack timestamp');
const text = z.string().max(40_000);

export const SlashCommand = z.object({
  command: z.string().max(100),
  text: text.default(''),
  team_id: id,
  channel_id: id,
  user_id: id,
  trigger_id: z.string().min(1).max(200),
});
export type SlashCommand = z.infer<typeof SlashCommand>;

export const UrlVerification = z.object({ type: z.literal('url_verification'), challenge: z.string().max(200) });

export const AppMention = z.object({
  type: z.literal('app_mention'),
  user: id,
  text,
  ts,
  channel: id,
  /** Set when the mention is itself a reply in a thread: the task's replies go to that thread. */
  thread_ts: ts.optional(),
});
export type AppMention = z.infer<typeof AppMention>;

export const EventCallback = z.object({
  type: z.literal('event_callback'),
  team_id: id,
  event_id: z.string().min(1).max(200),
  event: z.looseObject({ type: z.string().max(100), bot_id: z.string().optional(), subtype: z.string().optional() }),
});

export const EventEnvelope = z.discriminatedUnion('type', [UrlVerification, EventCallback]);

/** What a delivery keeps until it is handled: a slash command or a mention, in one shape. */
export interface SlackRequest {
  kind: 'command' | 'mention';
  team: string;
  user: string;
  channel: string;
  text: string;
  /** The slash command's trigger_id or the event's event_id: what makes it one request. */
  requestId: string;
  /** The mention's thread (its own ts, or the thread it was written in); none for a slash command. */
  threadTs: string | null;
}
