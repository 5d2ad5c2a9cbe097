// One campaign (issue #17): its goal and settings, how far it has come and at what pace, the
// branches and pull requests it made, its failures grouped by reason, every repository a
// page at a time, and what may be done with it (pause, resume, cancel, retry, run again).
// Each change's diff opens in the page; an admin may approve the changes in bulk.
// Live while at work: every two seconds until it is done or cancelled.
import { lazy, Suspense, useState } from 'react';
import { TARGET_STATES, type ApproveResult, type Campaign, type CampaignDetail, type CampaignTarget, type TargetState } from '../../../src/shared/api-campaigns.ts';
import { api, can, getToken, orgPath, qs } from '../api.ts';
import { Link } from '../router.tsx';
import { useSession } from '../session.ts';
import { ago, usePoll } from '../util.ts';
import { ErrorNote, ListTable, StateBadge } from './common.tsx';
import { Progress, doneOf, runningOf } from './Campaigns.tsx';
import { LeftOutLines } from './NewCampaign.tsx';

// The task page's diff view, loaded with the first diff opened (it brings the highlighter).
const Diff = lazy(() => import('./Diff.tsx'));

/** Repositories a page of the list shows. */
const PAGE = 50;
const LIVE = new Set<Campaign['state']>(['running', 'paused']);

type Verb = 'pause' | 'resume' | 'cancel' | 'retry-failed' | 'rerun';
const VERBS: { verb: Verb; label: string; done: string; shown: (c: Campaign) => boolean }[] = [
  { verb: 'pause', label: 'Pause', done: 'paused: no more tasks start', shown: (c) => c.state === 'running' },
  { verb: 'resume', label: 'Resume', done: 'resumed', shown: (c) => c.state === 'paused' },
  { verb: 'retry-failed', label: 'Retry failed', done: 'its failed repositories are queued again', shown: (c) => c.state !== 'cancelled' && c.counts.failed > 0 },
  { verb: 'rerun', label: 'Run again', done: 'running again over every repository', shown: (c) => c.state === 'done' || c.state === 'cancelled' },
  { verb: 'cancel', label: 'Cancel', done: 'cancelled', shown: (c) => c.state === 'running' || c.state === 'paused' },
];

export default function CampaignPage({ id }: { id: string }) {
  const { org, announce } = useSession();
  const [live, setLive] = useState(true);
  const shown = usePoll(
    async (signal) => {
      const c = await api<CampaignDetail>('GET', orgPath(org.name, `campaigns/${encodeURIComponent(id)}`), undefined, signal);
      setLive(LIVE.has(c.state));
      return c;
    },
    live ? 2000 : null,
    [org.name, id],
  );
  const [busy, setBusy] = useState<Verb>();
  const [actionError, setActionError] = useState<Error>();
  const c = shown.data;
  // A viewer sees the buttons, disabled: the API would refuse them (so would it a member's on another's campaign, saying so).
  const mayAct = can.createTask(org.role);

  const act = async (verb: Verb, label: string, done: string) => {
    if (!c) return;
    if (verb === 'cancel' && !window.confirm(`Cancel campaign ${c.name}? No more of its tasks start and those under way are cancelled; \`Run again\` starts it over.`)) return;
    setBusy(verb);
    setActionError(undefined);
    try {
      await api<Campaign>('POST', orgPath(org.name, `campaigns/${c.id}/${verb}`));
      announce(`${c.name}: ${done}`);
      setLive(true);
      shown.reload();
    } catch (err) {
      setActionError(new Error(`${label}: ${(err as Error).message}`));
    } finally {
      setBusy(undefined);
    }
  };

  if (shown.error && !c) return <><p className="crumbs"><Link to="/campaigns">Campaigns</Link> / <span>{id}</span></p><ErrorNote error={shown.error} /></>;
  if (!c) return <p aria-busy="true">Loading the campaign…</p>;
  const s = c.settings;
  const done = doneOf(c.counts);

  return (
    <>
      <p className="crumbs"><Link to="/campaigns">Campaigns</Link> / <span>{c.name}</span></p>
      <div className="page-head">
        <h1>{c.name}</h1>
        <span aria-live="polite"><StateBadge state={c.state} /></span>
        <div className="actions">
          {VERBS.filter((v) => v.shown(c)).map((v) => (
            <button
              key={v.verb}
              className={v.verb === 'cancel' ? 'danger' : undefined}
              disabled={!mayAct || busy !== undefined}
              aria-describedby={mayAct ? undefined : 'campaign-viewer'}
              onClick={() => void act(v.verb, v.label, v.done)}
            >
              {busy === v.verb ? `${v.label}…` : v.label}
            </button>
          ))}
        </div>
      </div>
      {!mayAct && <p id="campaign-viewer" className="hint">A viewer may watch a campaign; its maker or an admin may pause, cancel or run it again.</p>}
      <ErrorNote error={actionError ?? shown.error} />
      <p className="summary"><strong>Goal:</strong> {c.goal}</p>
      <LeftOutLines campaign={c.id} />

      <section aria-labelledby="campaign-settings-h">
        <h2 id="campaign-settings-h">Settings</h2>
        <dl className="facts">
          <div><dt>Agent</dt><dd>{s.agent ?? 'builtin'}{s.model && <span className="muted"> · {s.model}</span>}</dd></div>
          {s.command && <div className="wide"><dt>Command</dt><dd><code>{s.command}</code></dd></div>}
          <div className="wide"><dt>Check</dt><dd>{s.check ? <code>{s.check}</code> : <span className="muted">each project's own</span>}</dd></div>
          <div><dt>Concurrency</dt><dd>{s.concurrency}</dd></div>
          <div><dt>Max open PRs</dt><dd>{s.maxOpenPrs}</dd></div>
          <div><dt>Forge rate</dt><dd>{s.forgeRate}</dd></div>
          <div className="wide"><dt>Branch</dt><dd><code>{c.branch}</code>{s.draft && <span className="muted"> (drafts)</span>}</dd></div>
          {s.image && <div><dt>Image</dt><dd><code>{s.image}</code> <span className="muted">without a project</span></dd></div>}
          {s.allowDomains?.length ? <div className="wide"><dt>Also allowed</dt><dd><code>{s.allowDomains.join(' ')}</code> <span className="muted">without a project</span></dd></div> : null}
          {s.forge && <div className="wide"><dt>Forge</dt><dd>{[s.forge.kind, s.forge.apiUrl].filter(Boolean).join(' ') || 'from each URL'}{s.forge.tokenSecret && <>, token from secret <code>{s.forge.tokenSecret}</code></>} <span className="muted">without a project</span></dd></div>}
          <div><dt>Run</dt><dd>{c.run}</dd></div>
          <div><dt>Created</dt><dd><time dateTime={c.createdAt} title={c.createdAt}>{ago(c.createdAt)}</time> <span className="muted">by {c.createdBy}</span></dd></div>
          <div><dt>Finished</dt><dd>{c.finishedAt ? <time dateTime={c.finishedAt} title={c.finishedAt}>{ago(c.finishedAt)}</time> : '—'}</dd></div>
        </dl>
      </section>

      <section aria-labelledby="campaign-progress-h">
        <h2 id="campaign-progress-h">Progress</h2>
        <p><Progress campaign={c} /> <span className="muted">{done} of {c.total} done</span></p>
        {c.waitingFor && <p className="notice" role="status">Waiting: {c.waitingFor}</p>}
        <ul className="counts plain" aria-label="Repositories by state">
          {TARGET_STATES.map((st) => <li key={st}><span className={`badge state-${st}`}>{c.counts[st]} {st}</span></li>)}
        </ul>
        <dl className="facts">
          <div><dt>Throughput</dt><dd>{c.throughputPerMin === null ? '—' : `${c.throughputPerMin} repositories/min`}</dd></div>
          <div><dt>ETA</dt><dd>{c.etaSeconds === null ? '—' : duration(c.etaSeconds)}</dd></div>
          <div><dt>Running</dt><dd>{runningOf(c.counts)} <span className="muted">of {s.concurrency} at once</span></dd></div>
          <div><dt>Peak running</dt><dd>{c.peakRunning} <span className="muted">of {s.concurrency}</span></dd></div>
        </dl>
        <p className="export">
          Export: <ExportLink org={org.name} campaign={c} format="csv" onError={setActionError} /> · <ExportLink org={org.name} campaign={c} format="json" onError={setActionError} />
        </p>
      </section>

      <section aria-labelledby="campaign-changes-h">
        <h2 id="campaign-changes-h">Pull requests and branches</h2>
        {c.changeRequests.length === 0 ? <p className="empty">No branch pushed yet.</p> : <Changes org={org.name} campaign={c} />}
        {c.changeRequests.length > 0 && can.approve(org.role) && <Approve org={org.name} campaign={c} onDone={() => { setLive(true); shown.reload(); }} />}
      </section>

      <Failures org={org.name} campaign={c} live={live} />
      <Repositories org={org.name} campaign={c} live={live} />
    </>
  );
}

/** Every change pushed, with its pull request's state, each with its diff to open in the page. */
function Changes({ org, campaign: c }: { org: string; campaign: CampaignDetail }) {
  const [open, setOpen] = useState<string>();
  const opened = c.changeRequests.find((t) => t.id === open);
  return (
    <>
      <ListTable className="campaign-changes" caption="Branches pushed, with their pull requests, in the list's order" columns={['Repository', 'State', 'Change', 'Checks', 'Review', 'Task', { label: 'Diff', hidden: true }]}>
        {c.changeRequests.map((t) => {
          const cr = t.changeRequest!;
          return (
            <tr key={t.id} className={t.id === open ? 'focus' : undefined}>
              <RepoCell target={t} />
              <td><StateBadge state={t.state} /></td>
              <td>
                {cr.url ? <a href={cr.url} target="_blank" rel="noreferrer">{cr.number !== null ? `#${cr.number}` : 'pull request'}</a> : <span>{cr.kind === 'berth' ? 'branch' : 'not opened'}</span>}
                {cr.state && <span className="muted"> {cr.state}</span>}
                {cr.draft && <span className="muted"> (draft)</span>}
              </td>
              <td>{cr.checks ? <span className={cr.checks === 'passing' ? 'ok' : cr.checks === 'failing' ? 'bad' : undefined}>{cr.checks}</span> : '—'}</td>
              <td>{cr.review ?? '—'}</td>
              <td>{t.taskId ? <Link to={`/tasks/${t.taskId}`}>{t.taskId}</Link> : '—'}</td>
              <td>
                {t.taskId && (
                  <button type="button" className="link" aria-expanded={t.id === open} aria-controls="campaign-diff" aria-label={`Diff of ${shortRepo(t.repo)}`} onClick={() => setOpen(t.id === open ? undefined : t.id)}>
                    {t.id === open ? 'Hide diff' : 'Diff'}
                  </button>
                )}
              </td>
            </tr>
          );
        })}
      </ListTable>
      {opened?.taskId && (
        <section id="campaign-diff" aria-labelledby="campaign-diff-h" className="campaign-diff">
          <header>
            <h3 id="campaign-diff-h">Diff of {shortRepo(opened.repo)}</h3>
            <button type="button" onClick={() => setOpen(undefined)}>Close</button>
          </header>
          <Suspense fallback={<p aria-busy="true">Loading the diff…</p>}>
            <Diff org={org} id={opened.taskId} state={opened.state} />
          </Suspense>
        </section>
      )}
    </>
  );
}

/** A repository's cell: its project's name when it has one, with the repository under it. */
function RepoCell({ target: t }: { target: CampaignTarget }) {
  return <th scope="row">{t.project ?? shortRepo(t.repo)}{t.project && <div className="muted small">{shortRepo(t.repo)}</div>}</th>;
}

/**
 * Which changes an approval would take, as far as the page can tell: those whose task
 * succeeded and which are not merged or closed; with onlyGreen, not those whose forge checks
 * fail. The API decides (a change no checks ran for is not green); what it skips it lists.
 */
function approvable(items: CampaignTarget[], onlyGreen: boolean): { merge: number; ready: number } {
  const open = items.filter((t) => t.state === 'succeeded' && t.changeRequest && t.changeRequest.state !== 'merged' && t.changeRequest.state !== 'closed' && !(onlyGreen && t.changeRequest.checks === 'failing'));
  return { merge: open.filter((t) => t.changeRequest!.kind === 'berth').length, ready: open.filter((t) => t.changeRequest!.kind !== 'berth' && t.changeRequest!.draft).length };
}

const plural = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`;

/** Approving in bulk (an admin's, as the API says): merge plain-git branches, mark drafts ready for review. */
function Approve({ org, campaign: c, onDone }: { org: string; campaign: CampaignDetail; onDone: () => void }) {
  const { announce } = useSession();
  const [onlyGreen, setOnlyGreen] = useState(true);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<Error>();
  const [result, setResult] = useState<ApproveResult>();
  const { merge, ready } = approvable(c.changeRequests, onlyGreen);
  const which = onlyGreen ? 'green changes' : 'changes, green or not,';
  const submit = async () => {
    const what = [merge && `merges ${plural(merge, 'branch', 'branches')} into ${merge === 1 ? 'its' : 'their'} base branch (plain git)`, ready && `marks ${plural(ready, 'pull request', 'pull requests')} ready for review`].filter(Boolean).join(' and ');
    if (!window.confirm(`Approve the ${which} of ${c.name}? This ${what}.${onlyGreen ? ' A change found not green is skipped and listed.' : ' Each is on record in the audit log.'}`)) return;
    setBusy(true);
    setError(undefined);
    try {
      const r = await api<ApproveResult>('POST', orgPath(org, `campaigns/${c.id}/approve`), { onlyGreen });
      setResult(r);
      announce(`${c.name}: ${r.approved.length} approved, ${r.skipped.length} skipped`);
      onDone();
    } catch (err) {
      setError(new Error(`Approve: ${(err as Error).message}`));
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="campaign-approve">
      <form className="inline" aria-label="Approve changes" onSubmit={(e) => { e.preventDefault(); void submit(); }}>
        <label className="check"><input type="radio" name="approve-which" checked={onlyGreen} onChange={() => setOnlyGreen(true)} /> Green changes only</label>
        <label className="check"><input type="radio" name="approve-which" checked={!onlyGreen} onChange={() => setOnlyGreen(false)} /> Every change, green or not</label>
        <button type="submit" className="primary" disabled={busy || merge + ready === 0} aria-describedby="approve-count">{busy ? 'Approving…' : 'Approve'}</button>
        <span id="approve-count" className="muted">{merge + ready === 0 ? 'Nothing waits for approval.' : `Up to ${plural(merge, 'branch', 'branches')} to merge, ${plural(ready, 'draft', 'drafts')} to mark ready.`}</span>
      </form>
      <ErrorNote error={error} />
      {/* Announced once (announce above); the words and the table stay for reading. */}
      {result && (
        <section aria-label="Last approval" className="approve-result">
          <p><strong>{result.approved.length} approved</strong>, {result.skipped.length} skipped.</p>
          {result.approved.length + result.skipped.length > 0 && (
            <ListTable className="campaign-approved" caption="What the approval did, repository by repository" columns={['Repository', 'Result']}>
              {result.approved.map((a) => <tr key={a.repo}><th scope="row">{shortRepo(a.repo)}</th><td className="ok">{a.how === 'merged' ? 'merged' : 'ready for review'}</td></tr>)}
              {result.skipped.map((s) => <tr key={s.repo}><th scope="row">{shortRepo(s.repo)}</th><td>skipped: {s.reason}</td></tr>)}
            </ListTable>
          )}
        </section>
      )}
    </div>
  );
}

/** Failures grouped by reason, each with its first repositories and their tasks. */
function Failures({ org, campaign: c, live }: { org: string; campaign: CampaignDetail; live: boolean }) {
  // The groups name repositories; their tasks come from the failed targets themselves.
  const failed = usePoll(
    (signal) => (c.counts.failed ? api<{ items: CampaignTarget[] }>('GET', orgPath(org, `campaigns/${c.id}/targets${qs({ state: 'failed', limit: 1000 })}`), undefined, signal) : Promise.resolve({ items: [] })),
    live ? 4000 : null,
    [org, c.id, c.counts.failed, c.run],
  );
  const taskOf = new Map((failed.data?.items ?? []).map((t) => [t.repo, t.taskId]));
  return (
    <section aria-labelledby="campaign-failures-h">
      <h2 id="campaign-failures-h">Failures</h2>
      {c.failures.length === 0 ? (
        <p className="empty">No repository failed.</p>
      ) : (
        <ListTable className="campaign-failures" caption="Failures grouped by reason, the largest group first" columns={['Reason', 'Kind', { label: 'Repositories', num: true }, 'First of them']}>
          {c.failures.map((g) => (
            <tr key={`${g.failure}:${g.reason}`}>
              <th scope="row">{g.reason || <span className="muted">no reason given</span>}</th>
              <td>{g.failure}</td>
              <td className="num">{g.count}</td>
              <td>
                <ul className="plain">
                  {g.repos.map((r) => {
                    const task = taskOf.get(r);
                    return <li key={r}>{shortRepo(r)}{task && <> · <Link to={`/tasks/${task}`}>{task}</Link></>}</li>;
                  })}
                  {g.count > g.repos.length && <li className="muted">and {g.count - g.repos.length} more</li>}
                </ul>
              </td>
            </tr>
          ))}
        </ListTable>
      )}
    </section>
  );
}

/** Every repository of the campaign, in the list's order, a page at a time, by state if asked. */
function Repositories({ org, campaign: c, live }: { org: string; campaign: CampaignDetail; live: boolean }) {
  const { announce } = useSession();
  const [state, setState] = useState<TargetState | ''>('');
  // The seq each page shown starts after: [] is the first page.
  const [pages, setPages] = useState<number[]>([]);
  const after = pages.at(-1);
  const list = usePoll(
    (signal) => api<{ items: CampaignTarget[]; next: number | null }>('GET', orgPath(org, `campaigns/${c.id}/targets${qs({ state, limit: PAGE, after })}`), undefined, signal),
    live ? 2000 : null,
    [org, c.id, state, after, c.run],
  );
  const items = list.data?.items ?? [];
  const first = pages.length * PAGE;
  const turn = (by: 1 | -1) => {
    const next = list.data?.next;
    if (by === 1 && next !== null && next !== undefined) setPages((p) => [...p, next]);
    if (by === -1) setPages((p) => p.slice(0, -1));
    announce(`Page ${pages.length + 1 + by} of the repositories`);
  };
  return (
    <section aria-labelledby="campaign-repos-h">
      <h2 id="campaign-repos-h">Repositories</h2>
      <form className="filters" role="search" aria-label="Filter repositories" onSubmit={(e) => e.preventDefault()}>
        <label>
          State
          <select value={state} onChange={(e) => { setState(e.target.value as TargetState | ''); setPages([]); }}>
            <option value="">any</option>
            {TARGET_STATES.map((st) => <option key={st} value={st}>{st} ({c.counts[st]})</option>)}
          </select>
        </label>
      </form>
      <ErrorNote error={list.error} />
      {list.data && items.length === 0 && <p className="empty">No repository{state ? ` is ${state}` : ''}.</p>}
      {items.length > 0 && (
        <>
          <ListTable className="campaign-repos" caption="The campaign's repositories, in the list's order" columns={['Repository', 'State', { label: 'Attempts', num: true }, 'Task', 'Why', 'Finished']}>
            {items.map((t) => (
              <tr key={t.id}>
                <RepoCell target={t} />
                <td><StateBadge state={t.state} /></td>
                <td className="num">{t.attempts}</td>
                <td>{t.taskId ? <Link to={`/tasks/${t.taskId}`}>{t.taskId}</Link> : '—'}</td>
                <td>{t.failure && <span className="bad">{t.failure}: </span>}{t.reason ?? ''}</td>
                <td>{t.finishedAt ? <time dateTime={t.finishedAt} title={t.finishedAt}>{ago(t.finishedAt)}</time> : '—'}</td>
              </tr>
            ))}
          </ListTable>
          <div className="more">
            {/* Not a live region: it changes only when asked (the buttons, described by it, say it; the move is announced). */}
            <span id="campaign-repos-shown" className="muted">Repositories {first + 1}–{first + items.length}{state ? ` that are ${state}` : ''}.</span>
            {pages.length > 0 && <button type="button" onClick={() => turn(-1)} aria-describedby="campaign-repos-shown">Previous page</button>}
            {list.data && list.data.next !== null && <button type="button" onClick={() => turn(1)} aria-describedby="campaign-repos-shown">Next page</button>}
          </div>
        </>
      )}
    </section>
  );
}

/**
 * The export needs the token, so it is fetched and handed to the browser as a file; the
 * link's address is the API's, for copying into a script.
 */
function ExportLink({ org, campaign, format, onError }: { org: string; campaign: Campaign; format: 'csv' | 'json'; onError: (e: Error) => void }) {
  const href = orgPath(org, `campaigns/${campaign.id}/export${qs({ format })}`);
  const file = `${campaign.name}.${format}`;
  const save = async () => {
    try {
      const res = await fetch(href, { headers: { authorization: `Bearer ${getToken() ?? ''}` } });
      if (!res.ok) {
        const body = (await res.json().catch(() => undefined)) as { error?: { message?: string } } | undefined;
        throw new Error(body?.error?.message ?? `${res.status} ${res.statusText}`);
      }
      const a = document.createElement('a');
      a.href = URL.createObjectURL(await res.blob());
      a.download = file;
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
    } catch (err) {
      onError(new Error(`Export: ${(err as Error).message}`));
    }
  };
  return (
    <a href={href} download={file} onClick={(e) => { e.preventDefault(); void save(); }}>
      {format.toUpperCase()}<span className="sr-only"> of every repository</span>
    </a>
  );
}

/** 75 → "1m 15s", 7300 → "2h 1m". */
function duration(seconds: number): string {
  if (seconds < 60) return `${seconds}s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m}m ${seconds % 60}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

const shortRepo = (r: string) => r.replace(/^https?:\/\/[^/]+\//, '').replace(/\.git$/, '');
