// The Slack app as a trigger: `/berth <goal> [in <project>]` and @mentions in a channel start
// a task for the Berth user whose confirmed email the Slack user has, and the task's thread
// in the channel follows it. Slack's Web API through @slack/web-api; requests from Slack
// verified against the app's signing secret (verify.ts says why not with @slack/bolt).
import type { TriggerDeps, TriggerSource } from '../index.ts';
import { SlackSecrets, SlackSettings } from './client.ts';
import { SlackReplier } from './replier.ts';
import { slackWebhooks } from './routes.ts';
import { SlackTaskStarter } from './start-task.ts';

export { COMMANDS_PATH, EVENTS_PATH } from './routes.ts';

export function slackSource(deps: TriggerDeps): TriggerSource {
  deps.integrations.define({ kind: 'slack', title: 'the Slack app', settings: SlackSettings, secrets: SlackSecrets, webhookPaths: ['commands', 'events'] });
  const starter = new SlackTaskStarter(deps);
  deps.queue.handle('slack', (d) => starter.handle(d));
  deps.replies.register(new SlackReplier({ integrations: deps.integrations, logger: deps.logger }));
  return {
    name: 'slack',
    webhooks: (scope) => slackWebhooks(deps, scope),
  };
}
