import { api, can, orgPath, qs, type TaskList } from '../api.ts';
import { Link, navigate, useLocation } from '../router.tsx';
import { useSession } from '../session.ts';
import { ago, usd, usePoll } from '../util.ts';
import { ErrorNote, StateBadge } from './common.tsx';

const STATES = ['queued', 'provisioning', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out'];
const TRIGGERS = ['web', 'cli', 'api', 'schedule', 'github', 'gitlab', 'slack'];
const FILTERS = ['state', 'project', 'trigger', 'createdBy'] as const;

/** Tasks, newest first, refreshed every few seconds; the filters live in the address so a view can be shared. */
export function TasksPage() {
  const { org } = useSession();
  const { query } = useLocation();
  const filters = Object.fromEntries(FILTERS.map((f) => [f, query.get(f) ?? ''])) as Record<(typeof FILTERS)[number], string>;
  const key = FILTERS.map((f) => filters[f]).join('|');
  const list = usePoll((signal) => api<TaskList>('GET', orgPath(org.name, `tasks${qs({ ...filters, limit: 100 })}`), undefined, signal), 3000, [org.name, key]);
  const projects = usePoll((signal) => api<{ items: { name: string }[] }>('GET', orgPath(org.name, 'projects'), undefined, signal), null, [org.name]);

  const set = (name: string, value: string) => {
    const q = new URLSearchParams(location.search);
    if (value) q.set(name, value);
    else q.delete(name);
    const s = q.toString();
    navigate(`/tasks${s ? `?${s}` : ''}`, true);
  };
  const counts = list.data?.counts ?? {};

  return (
    <>
      <div className="page-head">
        <h1>Tasks</h1>
        <p className="counts" aria-live="polite">
          <span className="badge state-running">{counts.running ?? 0} running</span> <span className="badge state-queued">{counts.queued ?? 0} queued</span>
        </p>
        {can.createTask(org.role) && (
          <Link className="button primary" to="/tasks/new">New task</Link>
        )}
      </div>
      <form className="filters" role="search" aria-label="Filter tasks" onSubmit={(e) => e.preventDefault()}>
        <label>
          State
          <select value={filters.state} onChange={(e) => set('state', e.target.value)}>
            <option value="">any</option>
            {STATES.map((s) => <option key={s} value={s}>{s.replace('_', ' ')}</option>)}
          </select>
        </label>
        <label>
          Project
          <select value={filters.project} onChange={(e) => set('project', e.target.value)}>
            <option value="">any</option>
            {projects.data?.items.map((p) => <option key={p.name} value={p.name}>{p.name}</option>)}
          </select>
        </label>
        <label>
          Trigger
          <select value={filters.trigger} onChange={(e) => set('trigger', e.target.value)}>
            <option value="">any</option>
            {TRIGGERS.map((s) => <option key={s} value={s}>{s}</option>)}
          </select>
        </label>
        <label>
          Person
          <input type="search" placeholder="user id or token" defaultValue={filters.createdBy} onChange={(e) => set('createdBy', e.target.value.trim())} />
        </label>
      </form>
      <ErrorNote error={list.error} />
      {list.data && list.data.items.length === 0 && <p className="empty">No tasks{key.replaceAll('|', '') ? ' match these filters' : ' yet'}.</p>}
      {list.data && list.data.items.length > 0 && (
        <table className="list">
          <caption className="sr-only">Tasks, newest first</caption>
          <thead>
            <tr>
              <th scope="col">State</th>
              <th scope="col">Goal</th>
              <th scope="col">Project</th>
              <th scope="col">Trigger</th>
              <th scope="col">By</th>
              <th scope="col">Created</th>
              <th scope="col" className="num">Cost</th>
            </tr>
          </thead>
          <tbody>
            {list.data.items.map((t) => (
              <tr key={t.id}>
                <td><StateBadge state={t.state} />{t.step && !['succeeded', 'failed', 'cancelled', 'timed_out'].includes(t.state) && <span className="muted"> {t.step}</span>}</td>
                <td className="goal"><Link to={`/tasks/${t.id}`}>{firstLine(t.goal)}</Link></td>
                <td>{t.project ?? <span className="muted" title={t.repo}>{shortRepo(t.repo)}</span>}</td>
                <td>{t.trigger}</td>
                <td className="muted">{t.createdBy}</td>
                <td><time dateTime={t.createdAt} title={t.createdAt}>{ago(t.createdAt)}</time></td>
                <td className="num">{usd(t.usage.costUsd)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}

export const firstLine = (s: string) => {
  const line = s.split('\n')[0]!;
  return line.length > 140 ? `${line.slice(0, 140)}…` : line;
};
const shortRepo = (r: string) => r.replace(/^https?:\/\/[^/]+\//, '').replace(/\.git$/, '');
