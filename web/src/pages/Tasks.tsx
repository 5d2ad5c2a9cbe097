import { useEffect, useRef, useState } from 'react';
import { TASK_TRIGGERS } from '../../../src/shared/api-tasks.ts';
import { api, can, orgPath, qs, type Task, type TaskList } from '../api.ts';
import { Link, navigate, useLocation } from '../router.tsx';
import { useSession } from '../session.ts';
import { ago, usd, usePoll } from '../util.ts';
import { By, ErrorNote, StateBadge } from './common.tsx';
import { TriggerBadge, triggerLabel } from './Trigger.tsx';

const STATES = ['queued', 'provisioning', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out'];
const FILTERS = ['state', 'project', 'trigger', 'createdBy'] as const;
/** Rows a page adds. */
const PAGE = 50;
/** The API's largest page: up to this many rows refresh live, older pages loaded beyond it stay as loaded. */
const LIVE_MAX = 200;

/**
 * Tasks, newest first, refreshed every few seconds, with older ones a page at a time on
 * demand; the filters live in the address so a view can be shared.
 */
export function TasksPage() {
  const { org, announce } = useSession();
  const { query } = useLocation();
  const filters = Object.fromEntries(FILTERS.map((f) => [f, query.get(f) ?? ''])) as Record<(typeof FILTERS)[number], string>;
  const key = FILTERS.map((f) => filters[f]).join('|');
  const view = `${org.name}|${key}`;
  const more = useOlderPages(view);
  const live = Math.min(LIVE_MAX, PAGE + more.items.length);
  const list = usePoll((signal) => api<TaskList>('GET', orgPath(org.name, `tasks${qs({ ...filters, limit: live })}`), undefined, signal), 3000, [view, live]);
  useEffect(() => more.follow(list.data), [list.data]); // eslint-disable-line react-hooks/exhaustive-deps
  const shown = list.data ? [...list.data.items, ...more.items.filter((t) => !list.data!.items.some((h) => h.id === t.id))] : [];
  const next = more.items.length ? more.cursor : (list.data?.nextCursor ?? null);
  const tbody = useRef<HTMLTableSectionElement>(null);
  /** The row to focus once it is on screen, after the last page. */
  const [focusRow, setFocusRow] = useState<number | null>(null);
  const loadMore = async () => {
    if (!next || more.busy) return;
    const before = shown.length;
    const page = await more.load(() => api<TaskList>('GET', orgPath(org.name, `tasks${qs({ ...filters, limit: PAGE, cursor: next })}`)));
    if (!page) return;
    announce(`${page.items.length} more task${page.items.length === 1 ? '' : 's'} loaded${page.nextCursor ? '' : '; that is all of them'}`);
    // With nothing left to load the button goes: focus moves to the first row it brought.
    if (!page.nextCursor) setFocusRow(before);
  };
  // Once that row is on screen (the render after the page lands, not a frame that may come first).
  useEffect(() => {
    const link = focusRow === null ? undefined : tbody.current?.querySelectorAll<HTMLAnchorElement>('td.goal a')[focusRow];
    if (!link) return;
    link.focus();
    setFocusRow(null);
  }, [focusRow, shown.length]);
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
            {/* Every source Berth knows; one in the address from elsewhere is kept on show. */}
            {[...TASK_TRIGGERS, ...(filters.trigger && !(TASK_TRIGGERS as readonly string[]).includes(filters.trigger) ? [filters.trigger] : [])].map((s) => <option key={s} value={s}>{triggerLabel(s)}</option>)}
          </select>
        </label>
        <label>
          Person
          <input type="search" placeholder="user id or token" defaultValue={filters.createdBy} onChange={(e) => set('createdBy', e.target.value.trim())} />
        </label>
      </form>
      <ErrorNote error={list.error ?? more.error} />
      {list.data && list.data.items.length === 0 && <p className="empty">No tasks{key.replaceAll('|', '') ? ' match these filters' : ' yet'}.</p>}
      {list.data && list.data.items.length > 0 && (
        <>
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
          <tbody ref={tbody}>
            {shown.map((t) => (
              <tr key={t.id}>
                <td><StateBadge state={t.state} />{t.step && !['succeeded', 'failed', 'cancelled', 'timed_out'].includes(t.state) && <span className="muted"> {t.step}</span>}</td>
                <td className="goal"><Link to={`/tasks/${t.id}`}>{firstLine(t.goal)}</Link></td>
                <td>{t.project ?? <span className="muted" title={t.repo}>{shortRepo(t.repo)}</span>}</td>
                <td><TriggerBadge task={t} /></td>
                <td><By task={t} /></td>
                <td><time dateTime={t.createdAt} title={t.createdAt}>{ago(t.createdAt)}</time></td>
                <td className="num">{usd(t.usage.costUsd)}</td>
              </tr>
            ))}
          </tbody>
        </table>
        <div className="more">
          <span id="tasks-shown" className="muted" aria-live="polite">Showing {shown.length} task{shown.length === 1 ? '' : 's'}{next ? ', newest first' : ', all that match'}.</span>
          {next && (
            <button type="button" onClick={() => void loadMore()} aria-describedby="tasks-shown" aria-busy={more.busy || undefined}>
              {more.busy ? 'Loading…' : `Load ${PAGE} more`}
            </button>
          )}
        </div>
        </>
      )}
    </>
  );
}

/**
 * The rows after the first page, loaded on demand (newest first, by the API's cursor) and
 * kept while the first page refreshes. A row a refresh pushes off the live page (newer
 * tasks arrived) stays shown rather than leaving a gap; another view starts afresh.
 */
function useOlderPages(view: string) {
  const [state, setState] = useState<{ view: string; items: Task[]; cursor: string | null }>({ view, items: [], cursor: null });
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<Error>();
  const lastLive = useRef<Task[]>([]);
  const current = state.view === view ? state : { view, items: [], cursor: null };
  if (state.view !== view) {
    setState(current);
    lastLive.current = [];
  }
  return {
    items: current.items,
    cursor: current.cursor,
    busy,
    error,
    /** Call with each refresh of the live page. */
    follow(live: TaskList | undefined) {
      if (!live) return;
      const ids = new Set(live.items.map((t) => t.id));
      const gone = lastLive.current.filter((t) => !ids.has(t.id));
      lastLive.current = live.items;
      // Only while older pages are shown, and only rows older than the live page's end.
      const end = live.items.at(-1);
      const pushed = gone.filter((t) => end && live.nextCursor && t.createdAt <= end.createdAt);
      if (pushed.length) setState((s) => (s.view === view && s.items.length ? { ...s, items: [...pushed.filter((t) => !s.items.some((o) => o.id === t.id)), ...s.items] } : s));
    },
    async load(get: () => Promise<TaskList>): Promise<TaskList | undefined> {
      setBusy(true);
      setError(undefined);
      try {
        const page = await get();
        setState((s) => (s.view === view ? { view, items: [...s.items, ...page.items.filter((t) => !s.items.some((o) => o.id === t.id))], cursor: page.nextCursor } : s));
        return page;
      } catch (err) {
        setError(err as Error);
        return undefined;
      } finally {
        setBusy(false);
      }
    },
  };
}

export const firstLine = (s: string) => {
  const line = s.split('\n')[0]!;
  return line.length > 140 ? `${line.slice(0, 140)}…` : line;
};
const shortRepo = (r: string) => r.replace(/^https?:\/\/[^/]+\//, '').replace(/\.git$/, '');
