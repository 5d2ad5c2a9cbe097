// GitLab as a trigger: project and group webhooks (X-Gitlab-Token) for issue and note events
// start tasks, and a note on the issue follows each one. The parts: settings.ts (the
// integration), webhook.ts (the route), handle.ts (a delivery, after the answer), ask.ts
// (what an event asks), access.ts (who may), goal.ts (the task's goal), api.ts (GitLab's
// REST API), replier.ts (the note).
import type { TriggerDeps, TriggerSource } from '../index.ts';
import { gitlabDeliveries } from './handle.ts';
import { gitlabReplier } from './replier.ts';
import { GitLabSecrets, GitLabSettings } from './settings.ts';
import { gitlabWebhook, SOURCE } from './webhook.ts';

export { GITLAB_WEBHOOK_PATH } from './webhook.ts';

export function gitlabSource(deps: TriggerDeps): TriggerSource {
  deps.integrations.define({ kind: 'gitlab', title: 'the GitLab integration', settings: GitLabSettings, secrets: GitLabSecrets });
  deps.queue.handle(SOURCE, gitlabDeliveries(deps));
  deps.replies.register(gitlabReplier({ integrations: deps.integrations, logger: deps.logger }));
  return {
    name: SOURCE,
    webhooks: (scope) => gitlabWebhook(deps, scope),
  };
}
