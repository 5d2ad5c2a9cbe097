// Every kind of trigger this control plane serves, in one list (index.ts makes them).
import { githubSource } from './github/index.ts';
import { gitlabSource } from './gitlab/index.ts';
import type { TriggerSourceFactory } from './index.ts';
import { scheduleSource } from './schedules/index.ts';
import { slackSource } from './slack/index.ts';
import { webhookTriggers } from './webhooks/index.ts';

export const TRIGGER_SOURCES: TriggerSourceFactory[] = [gitlabSource, githubSource, slackSource, webhookTriggers, scheduleSource];
