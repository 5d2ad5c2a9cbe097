// The GitHub App as a trigger: an issue labelled `berth`, assigned to the App's bot, or a
// `/berth …` comment starts a task, a review asking for changes on Berth's own pull request
// continues it, and one comment on the issue follows each task. The parts: settings.ts (the
// integration), webhook.ts (the route), verify.ts (the signature), handle.ts (a delivery,
// after the answer), events.ts (what an event asks), permissions.ts (who may), goal.ts (the
// task's goal), client.ts and apps.ts (GitHub's REST API as the App), replier.ts (the comment).
import type { TriggerDeps, TriggerSource } from '../index.ts';
import { GitHubApps } from './apps.ts';
import { githubDeliveries } from './handle.ts';
import { WriteAccess } from './permissions.ts';
import { githubReplier } from './replier.ts';
import { GitHubAppSecrets, GitHubAppSettings } from './settings.ts';
import { githubWebhook, SOURCE } from './webhook.ts';

export { GITHUB_WEBHOOK_PATH } from './webhook.ts';

export function githubSource(deps: TriggerDeps): TriggerSource {
  deps.integrations.define({ kind: 'github', title: 'the GitHub App', settings: GitHubAppSettings, secrets: GitHubAppSecrets });
  const apps = new GitHubApps({ integrations: deps.integrations, logger: deps.logger });
  deps.queue.handle(SOURCE, githubDeliveries(deps, apps, new WriteAccess()));
  deps.replies.register(
    githubReplier({
      app: async (apiUrl) => {
        const config = await apps.current();
        return config ? apps.client(config, apiUrl) : null;
      },
    }),
  );
  return {
    name: SOURCE,
    webhooks: (scope) => githubWebhook(deps, scope),
  };
}
