// Settings › Triggers: what starts tasks without anyone in Berth asking. The instance's
// integrations (GitHub App, GitLab, Slack app; instance administrators only), the org's
// schedules and its generic webhooks. Secrets are never shown: only which are set.
import type { IntegrationList, IntegrationStatus } from '../../../src/shared/api-integrations.ts';
import { api, ApiError } from '../api.ts';
import { ago, usePoll } from '../util.ts';
import { ErrorNote } from './common.tsx';
import { CopyButton, Part } from './SettingsParts.tsx';
import { Schedules } from './SettingsSchedules.tsx';
import { WebhookTriggers } from './SettingsWebhooks.tsx';

export default function Triggers() {
  return (
    <section className="settings" id="triggers" aria-labelledby="triggers-h">
      <h2 id="triggers-h">Triggers</h2>
      <p className="hint">
        Tasks also start where the work is: an issue or comment on GitHub or GitLab, a Slack message, a schedule, or a webhook from any system. Each such task says on its
        page what started it, and the tasks list filters by it.
      </p>
      <Integrations />
      <Schedules />
      <WebhookTriggers />
    </section>
  );
}

const TITLE: Record<string, string> = { github: 'GitHub App', gitlab: 'GitLab', slack: 'Slack app' };
const ORDER = Object.keys(TITLE);

/** The instance's integrations: shown to instance administrators, the only ones who may read them. */
function Integrations() {
  const list = usePoll((s) => api<IntegrationList>('GET', '/api/integrations', undefined, s), null, []);
  const refused = list.error instanceof ApiError && list.error.status === 403;
  return (
    <Part id="integrations" title="Integrations">
      {refused ? (
        <p className="hint">The GitHub App, GitLab and Slack app serve every org on this instance: only an instance administrator sees and sets them up.</p>
      ) : (
        <>
          <ErrorNote error={list.error} />
          {list.data && (
            <div className="scroll-x">
              <table className="list integrations">
                <caption className="sr-only">The instance's integrations</caption>
                <thead><tr><th scope="col">Integration</th><th scope="col">Set up</th><th scope="col">Webhook URL</th><th scope="col">Secrets set</th><th scope="col">Settings</th><th scope="col">Updated</th></tr></thead>
                <tbody>
                  {[...list.data.items].sort((a, b) => ORDER.indexOf(a.kind) - ORDER.indexOf(b.kind)).map((i) => <IntegrationRow key={i.kind} i={i} />)}
                  {list.data.items.length === 0 && <tr><td colSpan={6} className="empty">This control plane serves no integration.</td></tr>}
                </tbody>
              </table>
            </div>
          )}
          <p className="hint">Set one up with <code>berth integration github|gitlab|slack …</code> (see its <code>--help</code>); the service sends its webhooks to the URL shown.</p>
        </>
      )}
    </Part>
  );
}

function IntegrationRow({ i }: { i: IntegrationStatus }) {
  const title = TITLE[i.kind] ?? i.kind;
  return (
    <tr id={`integration-${i.kind}`}>
      <th scope="row">{title}</th>
      <td>{i.configured ? <span className="ok">yes</span> : <span className="muted">no</span>}</td>
      <td><WebhookUrls title={title} urls={i.webhookUrls.length ? i.webhookUrls : [i.webhookUrl]} /></td>
      <td>{i.secretsSet.length ? i.secretsSet.map((s, n) => <span key={s}>{n > 0 && ', '}<code>{s}</code></span>) : <span className="muted">none</span>}</td>
      <td>{settingsWords(i.settings) || <span className="muted">—</span>}</td>
      <td>{i.updatedAt ? <>{ago(i.updatedAt)} <span className="muted">{i.updatedBy}</span></> : '—'}</td>
    </tr>
  );
}

/** Where the service sends its requests: one URL, or several named by their last part (Slack: commands, events). */
function WebhookUrls({ title, urls }: { title: string; urls: string[] }) {
  if (urls.length === 1) return <><code className="url">{urls[0]}</code> <CopyButton text={urls[0]!} label={`Copy the ${title} webhook URL`} /></>;
  return (
    <ul className="plain">
      {urls.map((u) => {
        const what = u.slice(u.lastIndexOf('/') + 1);
        return <li key={u}><span className="muted">{what}:</span> <code className="url">{u}</code> <CopyButton text={u} label={`Copy the ${title} ${what} URL`} /></li>;
      })}
    </ul>
  );
}

/** An integration's settings in one line: `appId 123 · label berth`. They hold no secret. */
function settingsWords(settings: Record<string, unknown> | null): string {
  if (!settings) return '';
  return Object.entries(settings)
    .filter(([, v]) => v !== null && v !== undefined && v !== '')
    .map(([k, v]) => `${k} ${Array.isArray(v) ? v.join(', ') : typeof v === 'object' ? JSON.stringify(v) : String(v)}`)
    .join(' · ');
}
