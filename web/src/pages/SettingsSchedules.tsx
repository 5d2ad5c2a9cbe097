// Settings › Triggers › Schedules: the org's cron rules, what each does and when it fires
// next, paused or not; pause, resume and remove for those who may.
import { api, ApiError, can, orgPath } from '../api.ts';
import { Link } from '../router.tsx';
import { useSession } from '../session.ts';
import { usePoll } from '../util.ts';
import { ErrorNote } from './common.tsx';
import { Part, useAnchoredRow, useAction } from './SettingsParts.tsx';

// PROVISIONAL: until src/shared/api-schedules.ts lands.
interface Schedule {
  id: string;
  name: string | null;
  kind: 'task' | 'environment';
  cron: string;
  timezone: string;
  project: string | null;
  environment: string | null;
  action: 'start' | 'stop' | null;
  goal: string | null;
  paused: boolean;
  nextAt: string | null;
  createdBy: string;
  createdAt: string;
}

export function Schedules() {
  const { org } = useSession();
  const list = usePoll((s) => api<{ items: Schedule[] }>('GET', orgPath(org.name, 'schedules'), undefined, s), 30_000, [org.name]);
  const { error, run } = useAction(list.reload);
  const anchored = useAnchoredRow(list.data !== undefined);
  const manage = can.createTask(org.role);
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
                        <td>{s.paused || !s.nextAt ? '—' : <time dateTime={s.nextAt} title={s.nextAt}>{new Date(s.nextAt).toLocaleString()}</time>}</td>
                        <td>{s.paused ? <span className="badge state-stopped">paused</span> : <span className="badge state-succeeded">active</span>}</td>
                        {manage && (
                          <td className="actions"><div>
                            {s.paused
                              ? <button aria-label={`Resume schedule ${label}`} onClick={() => void run(() => api('POST', path(s, '/resume')))}>Resume</button>
                              : <button aria-label={`Pause schedule ${label}`} onClick={() => void run(() => api('POST', path(s, '/pause')))}>Pause</button>}
                            <button className="danger" aria-label={`Remove schedule ${label}`} onClick={() => confirm(`Remove schedule ${label}? It fires no more.`) && void run(() => api('DELETE', path(s)))}>Remove</button>
                          </div></td>
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
  if (s.kind === 'environment') return <>{s.action ?? 'wakes'} environment {s.environment ? <Link to={`/environments/${s.environment}`}>{s.environment}</Link> : '—'}</>;
  return <>a task on {s.project ?? '—'}{s.goal && <div className="muted">{s.goal.split('\n')[0]}</div>}</>;
}
