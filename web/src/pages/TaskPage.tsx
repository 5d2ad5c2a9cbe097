import { lazy, Suspense, useCallback, useEffect, useRef, useState, type FormEvent } from 'react';
import { api, can, orgPath, type Task, type TaskEvent } from '../api.ts';
import { Link, navigate } from '../router.tsx';
import { useSession } from '../session.ts';
import { follow, type StreamStatus } from '../sse.ts';
import { getFirst } from '../prefetch.ts';
import { ago, count, usd, usePoll } from '../util.ts';
import { By, ErrorNote, StateBadge } from './common.tsx';
import { Transcript } from './Transcript.tsx';
import { DenialHints } from './DenialHints.tsx';
import { TriggerOrigin } from './Trigger.tsx';

const Diff = lazy(() => import('./Diff.tsx'));
const FINAL = new Set(['succeeded', 'failed', 'cancelled', 'timed_out']);

/** Events the first load and each "show earlier" ask for: enough to fill the screen many times over. */
const PAGE = 500;

interface TaskEvents {
  events: TaskEvent[];
  status: StreamStatus | 'loading';
  /** Stored events before the first one loaded (seqs are dense from 1). */
  earlier: number;
  loadEarlier: (() => Promise<void>) | undefined;
}

/**
 * The transcript: its last PAGE stored events first (one small JSON call, however long the
 * task ran), then the live stream from the last seq on; earlier pages when asked for.
 */
function useTaskEvents(org: string, id: string): TaskEvents {
  const [events, setEvents] = useState<TaskEvent[]>([]);
  const [status, setStatus] = useState<StreamStatus | 'loading'>('loading');
  const [loading, setLoading] = useState(false);
  const first = useRef(0);
  useEffect(() => {
    let stop: (() => void) | undefined;
    let pending: TaskEvent[] = [];
    let frame = 0;
    let cancelled = false;
    // Events that arrive within one frame are rendered in one update: a burst of hundreds
    // a second costs one render per frame, not one per event.
    const flush = () => {
      frame = 0;
      const add = pending;
      pending = [];
      setEvents((cur) => cur.concat(add));
    };
    const push = (batch: TaskEvent[]) => {
      pending.push(...batch);
      if (!frame) frame = requestAnimationFrame(flush);
    };
    const controller = new AbortController();
    setEvents([]);
    first.current = 0;
    getFirst<{ items: TaskEvent[] }>(orgPath(org, `tasks/${id}/events?tail=${PAGE}`), controller.signal)
      .then(({ items }) => {
        if (cancelled) return;
        first.current = items[0]?.seq ?? 0;
        setEvents(items);
        const last = items.at(-1)?.seq ?? 0;
        stop = follow(orgPath(org, `tasks/${id}/events`), {
          after: last,
          onStatus: setStatus,
          onEvents: (batch) => {
            const parsed: TaskEvent[] = [];
            for (const b of batch) {
              try {
                parsed.push(JSON.parse(b.data) as TaskEvent);
              } catch {
                // A malformed event is skipped rather than breaking the transcript.
              }
            }
            push(parsed);
          },
        });
      })
      .catch(() => !cancelled && setStatus('reconnecting'));
    return () => {
      cancelled = true;
      controller.abort();
      stop?.();
      cancelAnimationFrame(frame);
    };
  }, [org, id]);

  const earlier = events.length ? events[0]!.seq - 1 : 0;
  const loadEarlier = useCallback(async () => {
    const before = first.current;
    if (before <= 1) return;
    setLoading(true);
    try {
      const { items } = await api<{ items: TaskEvent[] }>('GET', orgPath(org, `tasks/${id}/events?tail=${PAGE}&before=${before}`));
      // Another page may have landed meanwhile: only what is still missing is put in front.
      if (first.current !== before || !items.length) return;
      first.current = items[0]!.seq;
      setEvents((cur) => items.concat(cur));
    } finally {
      setLoading(false);
    }
  }, [org, id]);
  return { events, status, earlier, loadEarlier: earlier > 0 && !loading ? loadEarlier : undefined };
}

export function TaskPage({ id }: { id: string }) {
  const { org, announce } = useSession();
  const [final, setFinal] = useState(false);
  const task = usePoll((signal) => getFirst<Task>(orgPath(org.name, `tasks/${id}`), signal), final ? 30_000 : 2000, [org.name, id]);
  const { events, status, earlier, loadEarlier } = useTaskEvents(org.name, id);
  const [tab, setTab] = useState<'transcript' | 'diff'>('transcript');
  const [actionError, setActionError] = useState<Error>();
  const lastState = useRef<string>(undefined);

  const t = task.data;
  useEffect(() => {
    if (!t) return;
    setFinal(FINAL.has(t.state));
    if (lastState.current && lastState.current !== t.state) announce(`Task ${t.state.replace('_', ' ')}`);
    lastState.current = t.state;
  }, [t, announce]);
  // A new event usually means the task changed too: fetch it now rather than at the next poll.
  const lastType = events.at(-1)?.data.type;
  const reload = task.reload;
  useEffect(() => {
    if (lastType === 'state' || lastType === 'step' || lastType === 'result') reload();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [events.length]);

  const act = useCallback(
    async (what: 'cancel' | 'retry' | 'approve', force = false) => {
      setActionError(undefined);
      // A change that is not green merges only when the person says so, knowing why (on record as task.approve_forced).
      if (force && !window.confirm('Merge this change although it is not green (its checks failed or did not run, or it is a draft)? This is recorded in the audit log.')) return;
      try {
        const res = await api<Task>('POST', orgPath(org.name, `tasks/${id}/${what}`), force ? { force: true } : undefined);
        if (what === 'retry') navigate(`/tasks/${res.id}`);
        else {
          announce(what === 'cancel' ? 'Cancelling the task' : 'Merged into the base branch');
          reload();
        }
      } catch (err) {
        setActionError(err as Error);
      }
    },
    [org.name, id, announce, reload],
  );

  if (task.error && !t) return <ErrorNote error={task.error} />;
  if (!t) return <p aria-busy="true">Loading the task…</p>;
  // The latest check's attempt counts the runs, even when the earlier ones are not loaded.
  const checkRuns = events.reduce((n, e) => (e.data.type === 'check' ? Math.max(n, Number(e.data.attempt) || 1) : n), 0);
  const isFinal = FINAL.has(t.state);
  const mayAct = can.createTask(org.role);

  return (
    <>
      <p className="crumbs"><Link to="/tasks">Tasks</Link> / <span>{t.id}</span></p>
      <div className="page-head">
        <h1 className="task-goal">{t.goal.split('\n')[0]}</h1>
        <div className="actions">
          {mayAct && !isFinal && <button onClick={() => void act('cancel')}>Cancel</button>}
          {mayAct && isFinal && <button onClick={() => void act('retry')}>Retry</button>}
          {can.approve(org.role) && (t.state === 'succeeded' || t.state === 'failed') && t.changeRequest?.kind === 'berth' && !t.changeRequest.mergedSha && (
            t.checksPassed === true && !t.changeRequest.draft
              ? <button onClick={() => void act('approve')}>Approve and merge</button>
              : <button className="danger" onClick={() => void act('approve', true)}>Merge anyway…</button>
          )}
        </div>
      </div>
      <ErrorNote error={actionError} />
      <dl className="facts">
        <div><dt>State</dt><dd><StateBadge state={t.state} />{t.stateReason && <span className="muted"> {t.stateReason}</span>}</dd></div>
        <div><dt>Step</dt><dd>{t.step ?? '—'}</dd></div>
        <div><dt>{t.project ? 'Project' : 'Repository'}</dt><dd>{t.project ?? t.repo}{t.baseBranch && <span className="muted"> ({t.baseBranch})</span>}</dd></div>
        <div><dt>Agent</dt><dd>{t.agent}{t.model && <span className="muted"> · {t.model}{t.modelIsDefault && ' (default)'}</span>}{(t.modelSettings === 'project' || t.modelSettings === 'org') && <span className="muted"> · {t.modelProvider}, by the {t.modelSettings}'s model settings</span>}</dd></div>
        <div><dt>Cost</dt><dd>{usd(t.usage.costUsd)}{t.budget.maxCostUsd !== null && <span className="muted"> of {usd(t.budget.maxCostUsd)}</span>}</dd></div>
        <div><dt>Tokens</dt><dd>{count(t.usage.inputTokens)} in · {count(t.usage.outputTokens)} out</dd></div>
        <div><dt>Checks</dt><dd>{t.checksPassed === null ? (checkRuns ? 'running' : '—') : t.checksPassed ? <span className="ok">passed</span> : <span className="bad">failed</span>}{checkRuns > 0 && <span className="muted"> ({checkRuns} run{checkRuns > 1 ? 's' : ''})</span>}</dd></div>
        <div className="wide"><dt>Change</dt><dd><ChangeLink task={t} /></dd></div>
        {t.triggeredBy
          ? <div className="wide"><dt>Trigger</dt><dd className="trigger-origin"><TriggerOrigin triggeredBy={t.triggeredBy} />{t.creator && <span className="muted"> for <By task={t} /></span>}</dd></div>
          : <div><dt>By</dt><dd><By task={t} /> <span className="muted">via {t.trigger}</span></dd></div>}
        {t.continues && <div><dt>Continues</dt><dd><Link to={`/tasks/${t.continues}`}>{t.continues}</Link></dd></div>}
        <div><dt>Started</dt><dd>{t.startedAt ? <time dateTime={t.startedAt}>{ago(t.startedAt)}</time> : '—'}{t.environmentId && <> · <Link to={`/environments/${t.environmentId}`}>environment</Link></>}</dd></div>
      </dl>
      {t.summary && <p className="summary"><strong>Summary:</strong> {t.summary}</p>}
      {t.goal.includes('\n') && (
        <details className="full-goal"><summary>Full goal</summary><pre>{t.goal}</pre></details>
      )}
      <DenialHints events={events} />

      <div className="tabs">
        <div
          role="tablist"
          aria-label="Task views"
          onKeyDown={(e) => {
            // Arrow keys move between the tabs, as the ARIA tabs pattern expects.
            if (e.key !== 'ArrowLeft' && e.key !== 'ArrowRight') return;
            const next = tab === 'transcript' ? 'diff' : 'transcript';
            setTab(next);
            document.getElementById(`tab-${next}`)?.focus();
          }}
        >
          <button role="tab" id="tab-transcript" aria-selected={tab === 'transcript'} tabIndex={tab === 'transcript' ? 0 : -1} aria-controls="panel-transcript" onClick={() => setTab('transcript')}>Transcript ({earlier + events.length})</button>
          <button role="tab" id="tab-diff" aria-selected={tab === 'diff'} tabIndex={tab === 'diff' ? 0 : -1} aria-controls="panel-diff" onClick={() => setTab('diff')}>Diff</button>
        </div>
        {/* Beside the tabs, not among them: a tablist holds tabs only. */}
        <span className={`stream stream-${status}`} aria-live="polite">{status === 'live' ? '● live' : status === 'reconnecting' ? 'reconnecting…' : status === 'ended' ? 'ended' : 'connecting…'}</span>
      </div>
      {tab === 'transcript' ? (
        <section role="tabpanel" id="panel-transcript" aria-labelledby="tab-transcript">
          <Transcript events={events} earlier={earlier} loadEarlier={loadEarlier} />
        </section>
      ) : (
        <section role="tabpanel" id="panel-diff" aria-labelledby="tab-diff">
          <Suspense fallback={<p aria-busy="true">Loading the diff viewer…</p>}>
            <Diff org={org.name} id={t.id} state={t.state} />
          </Suspense>
        </section>
      )}
      {mayAct && isFinal && <FollowUp task={t} />}
    </>
  );
}

function ChangeLink({ task: t }: { task: Task }) {
  const cr = t.changeRequest;
  if (!cr) return <>{t.branch ? <code>{t.branch}</code> : '—'}</>;
  const label = cr.kind === 'pull_request' ? `Pull request${cr.number ? ` #${cr.number}` : ''}` : cr.kind === 'merge_request' ? `Merge request${cr.number ? ` !${cr.number}` : ''}` : 'Change request in Berth';
  return (
    <>
      {cr.url ? <a href={cr.url} target="_blank" rel="noreferrer noopener" className="cr-link">{label}</a> : <span className="cr-link">{label}</span>}
      {cr.draft && <span className="muted"> (draft)</span>}
      {t.branch && <> · <code>{t.branch}</code></>}
      {cr.mergedSha && <span className="ok"> · merged {cr.mergedSha.slice(0, 10)}</span>}
    </>
  );
}

/**
 * There is no follow-up API: a follow-up is a new task whose goal carries the previous goal
 * and the new instruction, starting from the previous task's branch when it pushed one.
 */
function FollowUp({ task: t }: { task: Task }) {
  const { org } = useSession();
  const [text, setText] = useState('');
  const [error, setError] = useState<Error>();
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (!text.trim()) return;
    setBusy(true);
    try {
      const goal = `${t.goal}\n\nFollow-up to ${t.id}${t.branch ? ` (its work is on branch ${t.branch})` : ''}:\n${text.trim()}`;
      const created = await api<Task>('POST', orgPath(org.name, 'tasks'), {
        goal,
        ...(t.project ? { project: t.project } : { repo: t.repo }),
        ...(t.branch && t.changeRequest ? { baseBranch: t.branch } : t.baseBranch ? { baseBranch: t.baseBranch } : {}),
        agent: t.agent,
        ...(t.model ? { model: t.model } : {}),
        trigger: 'web',
      });
      navigate(`/tasks/${created.id}`);
    } catch (err) {
      setError(err as Error);
      setBusy(false);
    }
  };
  return (
    <form className="followup stack" onSubmit={submit}>
      <h2>Continue</h2>
      <label htmlFor="followup">Follow-up instruction</label>
      <textarea id="followup" rows={3} value={text} onChange={(e) => setText(e.target.value)} aria-describedby="followup-hint" />
      <p className="hint" id="followup-hint">Starts a new task with this task's goal plus your instruction{t.branch && t.changeRequest ? `, from branch ${t.branch}` : ''}.</p>
      <ErrorNote error={error} />
      <div><button type="submit" className="primary" disabled={busy || !text.trim()}>Start follow-up task</button></div>
    </form>
  );
}
