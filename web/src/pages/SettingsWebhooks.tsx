// Settings › Triggers › Generic webhooks: URLs any system (CI, Sentry, PagerDuty) calls
// to start a task on a project; the token that proves a sender is never shown again.
import type { WebhookTriggerList } from '../../../src/shared/api-webhook-triggers.ts';
import { api, ApiError, can, orgPath } from '../api.ts';
import { useSession } from '../session.ts';
import { ago, usePoll } from '../util.ts';
import { ErrorNote } from './common.tsx';
import { CopyButton, Part, useAnchoredRow, useAction } from './SettingsParts.tsx';

export function WebhookTriggers() {
  const { org } = useSession();
  const list = usePoll((s) => api<WebhookTriggerList>('GET', orgPath(org.name, 'triggers'), undefined, s), null, [org.name]);
  const { error, run } = useAction(list.reload);
  const anchored = useAnchoredRow(list.data !== undefined);
  const manage = can.manageProjects(org.role);
  const missing = list.error instanceof ApiError && list.error.status === 404;
  return (
    <Part id="webhooks" title="Generic webhooks">
      {missing ? (
        <p className="muted">This control plane has no generic webhook API.</p>
      ) : (
        <>
          <ErrorNote error={list.error ?? error} />
          {list.data && (
            <div className="scroll-x">
              <table className="list webhook-triggers">
                <caption className="sr-only">The org's generic webhooks</caption>
                <thead><tr><th scope="col">Name</th><th scope="col">Project</th><th scope="col">URL</th><th scope="col">Goal</th><th scope="col">Created</th>{manage && <th scope="col"><span className="sr-only">Actions</span></th>}</tr></thead>
                <tbody>
                  {list.data.items.map((w) => (
                    <tr key={w.id} id={`webhook-${w.id}`} className={anchored === `webhook-${w.id}` ? 'focus' : undefined}>
                      <th scope="row">{w.name}<div className="muted">{w.id}</div></th>
                      <td>{w.project}</td>
                      <td><code className="url">{w.url}</code> <CopyButton text={w.url} label={`Copy the URL of webhook ${w.name}`} /><div className="muted">{w.auth === 'hmac' ? 'signed (HMAC)' : 'bearer token'} · {w.ratePerMinute}/min</div></td>
                      <td className="muted">{w.goalTemplate}</td>
                      <td>{ago(w.createdAt)} <span className="muted">{w.createdBy}</span></td>
                      {manage && (
                        <td><button className="danger" aria-label={`Remove webhook ${w.name}`} onClick={() => confirm(`Remove webhook ${w.name}? Calls to its URL start nothing from then on.`) && void run(() => api('DELETE', orgPath(org.name, `triggers/${encodeURIComponent(w.id)}`)))}>Remove</button></td>
                      )}
                    </tr>
                  ))}
                  {list.data.items.length === 0 && <tr><td colSpan={6} className="empty">No generic webhooks.</td></tr>}
                </tbody>
              </table>
            </div>
          )}
          <p className="hint">Make one with <code>berth trigger create --name N --project P --goal-template "…{'{{body.field}}'}…"</code>; its token is shown once, when it is made.</p>
        </>
      )}
    </Part>
  );
}
