// Settings › Triggers › Schedules: the org's cron rules, what each does and when it fires
// next, paused or not; pause, resume and remove for those who may.
import type { Schedule, ScheduleList } from '../../../src/shared/api-schedules.ts';
import { api, ApiError, can, orgPath } from '../api.ts';
import { Link } from '../router.tsx';
import { useSession } from '../session.ts';
import { ago, usePoll } from '../util.ts';
import { ErrorNote } from './common.tsx';
import { Part, useAnchoredRow, useAction } from './SettingsParts.tsx';

export function Schedules() {
  const { org, me } = useSession();
  const list = usePoll((s) => api<ScheduleList>('GET', orgPath(org.name, 'schedules'), undefined, s), 30_000, [org.name]);
  const { error, run } = useAction(list.reload);
  const anchored = useAnchoredRow(list.data !== undefined);
  // Its creator or an admin may pause, resume or remove it (the server checks again).
  const self = me.userId ?? me.token?.id ?? null;
  const mayChange = (s: Schedule) => can.approve(org.role) || (can.createTask(org.role) && s.ownerId !== null && s.ownerId === self);
  const manage = list.data?.items.some(mayChange) ?? false;
  const missing = list.error instanceof ApiError && list.error.status === 404;
  const path = (s: Schedule, rest = '') => orgPath(org.name, `schedules/${encodeURIComponent(s.id)}${rest}`);
  return (
    <Part id="schedules" title="Schedules">
      {missing ? (
        <p className="muted">This control plane has no schedules API.</p>
      ) : (
        <>
          <ErrorNote error={list.error ?? error} />
          {list.data && (
            <div className="scroll-x">
              <table className="list schedules">
                <caption className="sr-only">The org's schedules</caption>
                <thead><tr><th scope="col">Name</th><th scope="col">When</th><th scope="col">Does</th><th scope="col">Next</th><th scope="col">State</th>{manage && <th scope="col"><span className="sr-only">Actions</span></th>}</tr></thead>
                <tbody>
                  {list.data.items.map((s) => {
                    const label = s.name ?? s.id;
                    return (
                      <tr key={s.id} id={`schedule-${s.id}`} className={anchored === `schedule-${s.id}` ? 'focus' : undefined}>
                        <th scope="row">{label}{s.name && <div className="muted">{s.id}</div>}</th>
                        <td><code>{s.cron}</code><div className="muted">{s.timezone}</div></td>
                        <td>{doesWords(s)}</td>
                        <td>
                          {s.paused || !s.nextAt ? '—' : <time dateTime={s.nextAt} title={s.nextAt}>{new Date(s.nextAt).toLocaleString()}</time>}
                          {s.lastFiring && <div className="muted">last {ago(s.lastFiring.firedAt)}: {s.lastFiring.taskId ? <Link to={`/tasks/${s.lastFiring.taskId}`}>{s.lastFiring.outcome}</Link> : s.lastFiring.outcome}</div>}
                        </td>
                        <td>{s.paused ? <span className="badge state-stopped">paused</span> : <span className="badge state-succeeded">active</span>}</td>
                        {manage && (
                          <td className="nowrap">{mayChange(s) && <>
                            {s.paused
                              ? <button aria-label={`Resume schedule ${label}`} onClick={() => void run(() => api('POST', path(s, '/resume')))}>Resume</button>
                              : <button aria-label={`Pause schedule ${label}`} onClick={() => void run(() => api('POST', path(s, '/pause')))}>Pause</button>}{' '}
                            <button className="danger" aria-label={`Remove schedule ${label}`} onClick={() => confirm(`Remove schedule ${label}? It fires no more.`) && void run(() => api('DELETE', path(s)))}>Remove</button>
                          </>}</td>
                        )}
                      </tr>
                    );
                  })}
                  {list.data.items.length === 0 && <tr><td colSpan={6} className="empty">No schedules.</td></tr>}
                </tbody>
              </table>
            </div>
          )}
          <p className="hint">Make one with <code>berth schedule create --cron "0 3 * * 1-5" --timezone Europe/Berlin --project P --goal "…"</code>, or office hours for an environment with <code>berth env schedule ID --stop "0 19 * * *" --start "0 7 * * 1-5"</code>.</p>
        </>
      )}
    </Part>
  );
}

function doesWords(s: Schedule) {
  if (s.kind === 'environment') {
    const env = s.environmentId ? <Link to={`/environments/${s.environmentId}`}>{s.environment ?? s.environmentId}</Link> : (s.environment ?? 'a removed environment');
    return <>{s.action === 'start' ? 'Starts' : 'Stops'} environment {env}</>;
  }
  return <>A task on {s.project ?? 'a removed project'}{s.goal && <div className="muted">{s.goal.split('\n')[0]}</div>}</>;
}
