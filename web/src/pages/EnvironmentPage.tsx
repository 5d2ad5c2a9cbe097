import { lazy, Suspense, useRef, useState } from 'react';
import type { FileList } from '../../../src/shared/api-files.ts';
import type { Snapshot } from '../../../src/shared/api-snapshots.ts';
import type { NetworkEventView } from '../../../src/shared/api.ts';
import { api, ApiError, can, getToken, orgPath, qs, type EnvironmentDetail } from '../api.ts';
import { Link, navigate } from '../router.tsx';
import { useSession } from '../session.ts';
import { ago, bytes, ms, usePoll } from '../util.ts';
import { ErrorNote, StateBadge } from './common.tsx';
import { FreezeForm, type Freeze } from './EnvironmentSnapshot.tsx';

const Terminal = lazy(() => import('./Terminal.tsx'));

/** Fields other parts of Berth add to an environment (its owner, whether the caller may use it); shown when present. */
type Env = EnvironmentDetail & { owner?: { email: string | null; name: string | null; id: string } | null; mayUse?: boolean; mayManage?: boolean };

/**
 * One environment: what it is, what it uses, what its network did (denials first in
 * mind), its files, a terminal, and stop/start/delete.
 */
export default function EnvironmentPage({ id }: { id: string }) {
  const { org, announce } = useSession();
  const cpu = useRef<{ at: number; seconds: number } | undefined>(undefined);
  const [cpuPercent, setCpuPercent] = useState<number>();
  const env = usePoll(async (signal) => {
    const d = await api<Env>('GET', orgPath(org.name, `environments/${encodeURIComponent(id)}`), undefined, signal);
    // CPU is the change in CPU seconds between polls.
    const s = d.usage?.cpuSeconds;
    const now = performance.now();
    if (s !== null && s !== undefined) {
      if (cpu.current && now > cpu.current.at) setCpuPercent(Math.max(0, ((s - cpu.current.seconds) / ((now - cpu.current.at) / 1000)) * 100));
      cpu.current = { at: now, seconds: s };
    } else setCpuPercent(undefined);
    return d;
  }, 3000, [org.name, id]);
  const [terminal, setTerminal] = useState(false);
  const [freeze, setFreeze] = useState<Freeze>();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<Error>();
  const e = env.data;

  if (env.error instanceof ApiError && env.error.status === 404) {
    return (
      <>
        <p className="crumbs"><Link to="/environments">Environments</Link> / <span>{id}</span></p>
        <h1>No such environment</h1>
        <p>{env.error.message}</p>
      </>
    );
  }
  if (!e) return <><ErrorNote error={env.error} /><p aria-busy="true">Loading…</p></>;

  const mayUse = e.mayUse ?? can.writeEnvironment(org.role);
  const mayExec = (e.mayUse ?? true) && can.exec(org.role);
  // Someone it is shared with may use it, not remove it.
  const mayRemove = e.mayManage ?? mayUse;
  const running = e.state === 'running';
  const act = async (what: 'start' | 'stop' | 'delete') => {
    if (what === 'delete' && !confirm(`Delete ${e.name}? Its files are removed for good.`)) return;
    setBusy(true);
    setError(undefined);
    try {
      await api(what === 'delete' ? 'DELETE' : 'POST', orgPath(org.name, what === 'delete' ? `environments/${e.id}` : `environments/${e.id}/${what}`));
      announce(`${e.name}: ${what === 'delete' ? 'deleted' : what === 'stop' ? 'stopped' : 'started'}`);
      if (what !== 'start') setTerminal(false);
      if (what === 'delete') navigate('/environments');
      else env.reload();
    } catch (err) {
      setError(err as Error);
    } finally {
      setBusy(false);
    }
  };
  const u = e.usage;
  const owner = e.owner ? e.owner.name || e.owner.email || e.owner.id : undefined;
  return (
    <>
      <p className="crumbs"><Link to="/environments">Environments</Link> / <span>{e.name}</span></p>
      <div className="page-head">
        <h1>{e.name}</h1>
        <StateBadge state={e.state} />
        <div className="actions">
          {mayExec && running && <button onClick={() => setTerminal((t) => !t)} aria-expanded={terminal} aria-controls="env-terminal">{terminal ? 'Close terminal' : 'Open terminal'}</button>}
          {mayUse && running && <button disabled={busy} onClick={() => void act('stop')}>Stop</button>}
          {mayUse && (e.state === 'stopped' || e.state === 'failed') && <button disabled={busy} onClick={() => void act('start')}>Start</button>}
          {mayRemove && can.writeEnvironment(org.role) && (running || e.state === 'stopped') && (['snapshot', 'fork'] as const).map((what) => (
            <button key={what} aria-expanded={freeze === what} aria-controls="env-freeze" onClick={() => setFreeze((f) => (f === what ? undefined : what))}>{what === 'snapshot' ? 'Snapshot' : 'Fork'}</button>
          ))}
          {mayRemove && e.state !== 'deleted' && <button className="danger" disabled={busy} onClick={() => void act('delete')}>Delete</button>}
        </div>
      </div>
      <ErrorNote error={error ?? env.error} />
      {e.stateReason && <p className="muted">{e.stateReason}</p>}
      {freeze && <FreezeForm key={freeze} what={freeze} env={e} onClose={() => setFreeze(undefined)} />}

      <section aria-labelledby="env-details-h">
        <h2 id="env-details-h">Details</h2>
        <dl className="facts">
          <div><dt>Id</dt><dd><code>{e.id}</code></dd></div>
          {e.runnerId !== undefined && <div><dt>Runner</dt><dd>{e.runnerId === null ? 'the local runner' : (e.runnerName ?? e.runnerId)}{e.state === 'lost' && <div className="bad small">offline: the environment is lost until it is back</div>}</dd></div>}
          <div className="wide"><dt>Image</dt><dd>{e.image}{e.imageDigest && <div className="muted small" title={e.imageDigest}>{e.imageDigest.slice(0, 19)}…</div>}</dd></div>
          {owner !== undefined && <div><dt>Owner</dt><dd>{owner}</dd></div>}
          {e.snapshotId && <div><dt>Made from</dt><dd><FromSnapshot org={org.name} id={e.snapshotId} /></dd></div>}
          <div><dt>Created</dt><dd><time dateTime={e.createdAt} title={e.createdAt}>{ago(e.createdAt)}</time></dd></div>
          <div><dt>Started</dt><dd>{e.startedAt ? <time dateTime={e.startedAt} title={e.startedAt}>{ago(e.startedAt)}</time> : '—'}</dd></div>
          <div><dt>Last active</dt><dd>{e.lastActiveAt ? <time dateTime={e.lastActiveAt}>{ago(e.lastActiveAt)}</time> : '—'}</dd></div>
          <div><dt>Stops when idle for</dt><dd>{e.limits.idleTimeoutMs === null ? 'never' : ms(e.limits.idleTimeoutMs)}</dd></div>
          <div><dt>Longest life</dt><dd>{e.limits.maxLifetimeMs === null ? 'no limit' : ms(e.limits.maxLifetimeMs)}</dd></div>
        </dl>
      </section>

      <section aria-labelledby="env-usage-h">
        <h2 id="env-usage-h">Usage</h2>
        {!running && <p className="muted">Resource use is shown while the environment runs.</p>}
        <dl className="facts">
          <div><dt>CPU</dt><dd>{running && cpuPercent !== undefined ? `${cpuPercent.toFixed(0)}%` : '—'} <span className="muted">of {e.limits.cpus} CPU</span></dd></div>
          <div><dt>Memory</dt><dd>{running ? bytes(u?.memoryBytes) : '—'} <span className="muted">of {bytes(e.limits.memoryBytes)}</span></dd></div>
          <div><dt>Disk</dt><dd>{u?.diskBytes != null ? bytes(u.diskBytes) : '—'} <span className="muted">of {bytes(e.limits.diskBytes)}</span></dd></div>
          <div><dt>Processes</dt><dd>{running && u?.pids != null ? u.pids : '—'} <span className="muted">of {e.limits.pidsLimit}</span></dd></div>
        </dl>
      </section>

      {mayExec && running && terminal && (
        <div id="env-terminal">
          <Suspense fallback={<p aria-busy="true">Loading the terminal…</p>}>
            <Terminal org={org.name} env={e} onClose={() => setTerminal(false)} key={e.id} />
          </Suspense>
        </div>
      )}

      {mayExec && running && <Files org={org.name} env={e} />}
      <Network org={org.name} env={e} />
    </>
  );
}

/** "from snapshot NAME", linked to it in the list; a removed one by its id. */
function FromSnapshot({ org, id }: { org: string; id: string }) {
  const snap = usePoll((signal) => api<Snapshot>('GET', orgPath(org, `snapshots/${encodeURIComponent(id)}`), undefined, signal), null, [org, id]);
  if (snap.error instanceof ApiError && snap.error.status === 404) return <span>snapshot <code>{id}</code> <span className="muted">(removed)</span></span>;
  return <span>snapshot <Link to={`/snapshots#snapshot-${id}`}>{snap.data?.name ?? id}</Link></span>;
}

/** What the environment's egress proxy and firewall let through or refused, newest first. */
function Network({ org, env }: { org: string; env: Env }) {
  const [deniedOnly, setDeniedOnly] = useState(false);
  const log = usePoll(
    (signal) => api<{ items: NetworkEventView[] }>('GET', orgPath(org, `environments/${env.id}/network${qs({ limit: 100, denied: deniedOnly ? 'true' : undefined })}`), undefined, signal),
    5000,
    [org, env.id, deniedOnly],
  );
  const items = log.data?.items ?? [];
  const denials = items.filter((n) => !n.allowed).length;
  return (
    <section aria-labelledby="env-network-h">
      <div className="page-head">
        <h2 id="env-network-h">Network</h2>
        <label className="check"><input type="checkbox" checked={deniedOnly} onChange={(ev) => setDeniedOnly(ev.target.checked)} /> Only refused requests</label>
      </div>
      <ErrorNote error={log.error} />
      {log.data && items.length === 0 && <p className="empty">{deniedOnly ? 'No request was refused.' : 'No network requests yet.'} Everything not allowed by the egress policy is refused and shows here.</p>}
      {items.length > 0 && (
        <>
          {!deniedOnly && <p className="muted">{items.length} most recent, {denials} refused.</p>}
          <div className="scroll-x">
            <table className="list network">
              <caption className="sr-only">Network requests, newest first</caption>
              <thead><tr><th scope="col">Time</th><th scope="col">Outcome</th><th scope="col">Request</th><th scope="col">Rule</th><th scope="col" className="num">Bytes</th></tr></thead>
              <tbody>
                {items.map((n, i) => (
                  <tr key={`${n.at}-${i}`} className={n.allowed ? undefined : 'denied'}>
                    <td className="nowrap"><time dateTime={n.at} title={n.at}>{n.at.slice(11, 19)}</time></td>
                    <td>{n.allowed ? <span className="ok">allowed</span> : <strong className="bad">refused</strong>}{n.status !== null && <span className="muted"> {n.status}</span>}</td>
                    <td><code>{n.method ? `${n.method} ` : ''}{n.host}:{n.port}{n.path ?? ''}</code>{n.packets !== null && <span className="muted"> ({n.packets} packets)</span>}{n.error && <div className="muted small">{n.error}</div>}</td>
                    <td className="muted">{n.rule}</td>
                    <td className="num">{bytes(n.bytesUp)} ↑ {bytes(n.bytesDown)} ↓</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </>
      )}
    </section>
  );
}

const parentOf = (p: string) => (p === '/' ? '/' : p.replace(/\/[^/]+\/?$/, '') || '/');
const join = (dir: string, name: string) => (dir.endsWith('/') ? `${dir}${name}` : `${dir}/${name}`);

/** A folder of the environment at a time, with each file's download. */
function Files({ org, env }: { org: string; env: Env }) {
  const [path, setPath] = useState('/workspace');
  const [draft, setDraft] = useState(path);
  const [error, setError] = useState<Error>();
  const [downloading, setDownloading] = useState<string>();
  const list = usePoll((signal) => api<FileList>('GET', orgPath(org, `environments/${env.id}/files/list${qs({ path })}`), undefined, signal), null, [org, env.id, path]);
  // Opening the folder shown reads it again (files come and go).
  const go = (p: string) => {
    setError(undefined);
    setDraft(p);
    if (p === path) list.reload();
    else setPath(p);
  };
  // The download needs the token, so it is fetched and handed to the browser as a file.
  const download = async (name: string) => {
    const file = join(path, name);
    setDownloading(file);
    setError(undefined);
    try {
      const res = await fetch(orgPath(org, `environments/${env.id}/files/download${qs({ path: file })}`), { headers: { authorization: `Bearer ${getToken() ?? ''}` } });
      if (!res.ok) {
        const body = (await res.json().catch(() => undefined)) as { error?: { message?: string } } | undefined;
        throw new Error(body?.error?.message ?? `${res.status} ${res.statusText}`);
      }
      const a = document.createElement('a');
      a.href = URL.createObjectURL(await res.blob());
      a.download = name;
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
    } catch (err) {
      setError(err as Error);
    } finally {
      setDownloading(undefined);
    }
  };
  return (
    <section aria-labelledby="env-files-h">
      <h2 id="env-files-h">Files</h2>
      <form className="inline" aria-label="Choose a folder" onSubmit={(ev) => { ev.preventDefault(); go(draft.trim() || '/'); }}>
        <label>Folder<input value={draft} onChange={(ev) => setDraft(ev.target.value)} size={40} /></label>
        <button type="submit">Open</button>
        {path !== '/' && <button type="button" onClick={() => go(parentOf(path))}>Up one folder</button>}
      </form>
      <ErrorNote error={error ?? list.error} />
      {list.data && (
        <div className="scroll-x">
          <table className="list files">
            <caption className="sr-only">Files in {list.data.path}</caption>
            <thead><tr><th scope="col">Name</th><th scope="col" className="num">Size</th><th scope="col">Modified</th><th scope="col"><span className="sr-only">Actions</span></th></tr></thead>
            <tbody>
              {list.data.entries.map((f) => (
                <tr key={f.name}>
                  <th scope="row">
                    {f.type === 'folder' ? (
                      <button className="link" onClick={() => go(join(path, f.name))} aria-label={`Open folder ${f.name}`}>{f.name}/</button>
                    ) : (
                      <span>{f.name}{f.type === 'link' ? ' ↪' : ''}</span>
                    )}
                  </th>
                  <td className="num">{f.type === 'folder' ? '—' : bytes(f.size)}</td>
                  <td>{f.modifiedAt ? <time dateTime={f.modifiedAt} title={f.modifiedAt}>{ago(f.modifiedAt)}</time> : '—'}</td>
                  <td>{f.type === 'file' && <button disabled={downloading === join(path, f.name)} onClick={() => void download(f.name)} aria-label={`Download ${f.name}`}>Download</button>}</td>
                </tr>
              ))}
              {list.data.entries.length === 0 && <tr><td colSpan={4} className="empty">This folder is empty.</td></tr>}
            </tbody>
          </table>
          {list.data.truncated && <p className="hint">Only the first {list.data.entries.length} entries are shown.</p>}
        </div>
      )}
      <p className="hint">A file holding one of the environment's secrets is not downloaded. Copy folders with <code>berth env cp</code>.</p>
    </section>
  );
}
