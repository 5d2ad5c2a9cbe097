import type { Command } from 'commander';
import type { ModelSettings, ModelSettingsBody, ModelSettingsView } from '../../shared/api-models.ts';
import type { Task } from '../../shared/api-tasks.ts';
import type { ApiClient } from '../client.ts';
import { age, emit, usageError } from '../output.ts';

type Client = () => ApiClient;

const WHOSE = { project: "the project's", org: "the org's", instance: "the runner's" } as const;

/** The path of the org's (no project) or a project's model settings. */
const path = (client: ApiClient, project: string | undefined) => client.orgPath(project ? `projects/${encodeURIComponent(project)}/model` : 'model');

/**
 * `task show`'s agent line: the model, who named it, and whose provider, base URL and key
 * its calls used, e.g. `built-in (claude-sonnet-4-5, the org's default; anthropic, by the org's model settings)`.
 */
export function taskModelText(t: Pick<Task, 'agent' | 'model' | 'modelIsDefault' | 'modelProvider' | 'modelSource' | 'modelSettings'>): string {
  const by = t.modelSettings === 'project' || t.modelSettings === 'org' ? `${t.modelProvider ?? 'its provider'}, by ${WHOSE[t.modelSettings]} model settings` : null;
  if (t.agent === 'command') return by ? `command (model calls: ${by})` : 'command';
  if (!t.model) return "built-in (the default model, chosen when it starts: the project's, the org's or the runner's)";
  const source = t.modelSource ?? (t.modelIsDefault ? 'instance' : 'task');
  const named = { task: '', project: ", the project's", org: ", the org's default", instance: ", the runner's default" }[source];
  return `built-in (${t.model}${named}${by ? `; ${by}` : ''})`;
}

export function modelCommands(program: Command, client: Client): void {
  const model = program
    .command('model')
    .description("the model an org's or a project's tasks use instead of the instance default");
  model
    .command('set')
    .description("set the org's (or with --project, a project's) model: its tasks use it, with the key from a secret")
    .option('--project <project>', "the project's settings (default: the org's)")
    .requiredOption('--provider <provider>', 'openai (any OpenAI-compatible API: vLLM, Ollama, LiteLLM…) or anthropic')
    .requiredOption('--base-url <url>', "the API's base URL, e.g. https://api.openai.com/v1 or https://api.anthropic.com")
    .requiredOption('--key-secret <name>', 'the secret holding the API key (`berth secret set NAME` first): used by Berth on the host, never given to environments')
    .requiredOption('--model <model>', 'the model, e.g. gpt-4.1 or claude-sonnet-4-5')
    .option('--json', 'print JSON')
    .action(async (o) => {
      if (o.provider !== 'openai' && o.provider !== 'anthropic') throw usageError(`--provider: expected openai or anthropic, not ${JSON.stringify(o.provider)}`);
      const body: ModelSettingsBody = { provider: o.provider, baseUrl: o.baseUrl, keySecret: o.keySecret, model: o.model };
      const set = await client().request<ModelSettings>('PUT', path(client(), o.project), body);
      emit(o, set, `${o.project ? `project ${o.project}` : 'the org'}: ${set.model} over ${set.provider} at ${set.baseUrl}, key from secret ${set.keySecret}`);
    });
  model
    .command('show')
    .description("the org's (or a project's) own model settings, and whose its tasks use")
    .option('--project <project>', "the project's settings (default: the org's)")
    .option('--json', 'print JSON')
    .action(async (o) => {
      const v = await client().request<ModelSettingsView>('GET', path(client(), o.project));
      emit(o, v, () => {
        const rows: [string, string][] = [];
        if (v.own) {
          rows.push(['provider', v.own.provider], ['base URL', v.own.baseUrl], ['model', v.own.model], ['key secret', `${v.own.keySecret} (used by Berth on the host, never inside environments)`], ['updated', `${age(v.own.updatedAt)} ago by ${v.own.updatedBy}`]);
        } else {
          rows.push(['own', `none: its tasks use ${WHOSE[v.effective.scope]} model settings`]);
        }
        const e = v.effective;
        const eModel = e.model ? `${e.model}${e.provider ? ` over ${e.provider}` : ''}` : 'none (set BERTH_MODEL for berth up, or `berth model set`)';
        rows.push(['tasks use', `${eModel}, ${WHOSE[e.scope]} settings${e.scope === 'instance' ? " (berth up's environment)" : ''}`]);
        return rows.map(([k, val]) => `${k.padEnd(11)} ${val}`).join('\n') + "\nA task's --model names another model on the same provider and key.";
      });
    });
  model
    .command('rm')
    .description("remove the org's (or a project's) model settings: its tasks fall back to the next (org, then the instance)")
    .option('--project <project>', "the project's settings (default: the org's)")
    .option('--json', 'print JSON')
    .action(async (o) => {
      await client().request('DELETE', path(client(), o.project));
      emit(o, { removed: true, project: o.project ?? null }, `${o.project ? `project ${o.project}` : 'the org'}: model settings removed`);
    });
}
