// Settings › Models: the model the org's tasks use, and each project's own, over the instance
// default (berth up's environment). The key is a secret's NAME here; its value never is.
import { useState, type FormEvent } from 'react';
import type { ModelProvider, ModelSettings, ModelSettingsView } from '../../../src/shared/api-models.ts';
import { api, can, orgPath } from '../api.ts';
import { useSession } from '../session.ts';
import { ago, usePoll } from '../util.ts';
import { ErrorNote } from './common.tsx';
import { useAction } from './SettingsParts.tsx';

// A value no project name takes (they start with a letter or digit).
const ORG = ':org';
const modelPath = (org: string, project: string) => orgPath(org, project === ORG ? 'model' : `projects/${encodeURIComponent(project)}/model`);

export default function Models() {
  const { org } = useSession();
  const own = usePoll((s) => api<{ items: ModelSettings[] }>('GET', orgPath(org.name, 'models'), undefined, s), null, [org.name]);
  const orgView = usePoll((s) => api<ModelSettingsView>('GET', orgPath(org.name, 'model'), undefined, s), null, [org.name]);
  const projects = usePoll((s) => api<{ items: { name: string }[] }>('GET', orgPath(org.name, 'projects'), undefined, s), null, [org.name]);
  const secrets = usePoll((s) => api<{ items: { name: string; project: string | null }[] }>('GET', orgPath(org.name, 'secrets'), undefined, s), null, [org.name]);
  const [scope, setScope] = useState(ORG);
  const [provider, setProvider] = useState<ModelProvider>('openai');
  const [baseUrl, setBaseUrl] = useState('');
  const [keySecret, setKeySecret] = useState('');
  const [model, setModel] = useState('');
  const manage = can.manageProjects(org.role);

  const reload = () => {
    own.reload();
    orgView.reload();
  };
  const { error, run } = useAction(reload);
  const save = async (e: FormEvent) => {
    e.preventDefault();
    await run(() => api('PUT', modelPath(org.name, scope), { provider, baseUrl, keySecret, model }));
  };

  const byProject = new Map((own.data?.items ?? []).map((m) => [m.project ?? ORG, m]));
  const orgOwn = byProject.get(ORG);
  const instance = orgView.data && !orgView.data.own && orgView.data.effective.scope === 'instance' ? orgView.data.effective : undefined;
  const inherited = orgOwn ? `the org's: ${orgOwn.model}` : instance?.model ? `instance default: ${instance.model}` : 'instance default';
  const rows: { label: string; key: string; m: ModelSettings | undefined }[] = [
    { label: 'Org (every project without its own)', key: ORG, m: orgOwn },
    ...(projects.data?.items ?? []).map((p) => ({ label: `Project ${p.name}`, key: p.name, m: byProject.get(p.name) })),
  ];
  return (
    <section className="settings" id="models" aria-labelledby="models-h">
      <h2 id="models-h">Models</h2>
      <p className="hint">
        The model the built-in agent uses, and where agent CLIs' calls go through the LLM gateway. A project's setting beats the org's, the org's beats the instance default
        (berth up's environment); a task's own model name beats them all. The key is a secret's name: Berth reads it on the host and never gives it to an environment.
      </p>
      <ErrorNote error={own.error ?? orgView.error ?? error} />
      <table className="list">
        <caption className="sr-only">Model settings of the org and each project</caption>
        <thead><tr><th scope="col">Scope</th><th scope="col">Model</th><th scope="col">Provider</th><th scope="col">Base URL</th><th scope="col">Key secret</th><th scope="col">Updated</th>{manage && <th scope="col"><span className="sr-only">Actions</span></th>}</tr></thead>
        <tbody>
          {rows.map(({ label, key, m }) => (
            <tr key={key}>
              <th scope="row">{label}</th>
              {m ? (
                <>
                  <td>{m.model}</td>
                  <td>{m.provider}</td>
                  <td className="muted">{m.baseUrl}</td>
                  <td><code>{m.keySecret}</code></td>
                  <td>{ago(m.updatedAt)} <span className="muted">{m.updatedBy}</span></td>
                </>
              ) : (
                <td colSpan={5} className="muted">{key === ORG ? (instance?.model ? `instance default: ${instance.model}${instance.provider ? ` (${instance.provider})` : ''}` : 'instance default') : inherited}</td>
              )}
              {manage && (
                <td>{m && <button className="danger" aria-label={`Remove the model of ${label}`} onClick={() => confirm(`Remove the model settings of ${label}?`) && void run(() => api('DELETE', modelPath(org.name, key)))}>Remove</button>}</td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
      {manage && (
        <form className="inline" onSubmit={save} aria-label="Set a model">
          <label>For<select value={scope} onChange={(e) => setScope(e.target.value)}>
            <option value={ORG}>the org</option>
            {(projects.data?.items ?? []).map((p) => <option key={p.name} value={p.name}>project {p.name}</option>)}
          </select></label>
          <label>Provider<select value={provider} onChange={(e) => setProvider(e.target.value as ModelProvider)}>
            <option value="openai">openai (OpenAI-compatible)</option>
            <option value="anthropic">anthropic</option>
          </select></label>
          <label>Base URL<input value={baseUrl} onChange={(e) => setBaseUrl(e.target.value)} required placeholder="https://api.openai.com/v1" /></label>
          <label>Key secret<input value={keySecret} onChange={(e) => setKeySecret(e.target.value)} required list="model-key-secrets" pattern="[A-Za-z_][A-Za-z0-9_]*" placeholder="OPENAI_KEY" /></label>
          <datalist id="model-key-secrets">{[...new Set((secrets.data?.items ?? []).map((s) => s.name))].map((n) => <option key={n} value={n} />)}</datalist>
          <label>Model<input value={model} onChange={(e) => setModel(e.target.value)} required placeholder="gpt-4.1" /></label>
          <button type="submit">Save model</button>
        </form>
      )}
    </section>
  );
}
