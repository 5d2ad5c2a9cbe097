import { lazy, Suspense, useRef, useState, type FormEvent } from 'react';
import type { SnapshotList } from '../../../src/shared/api-snapshots.ts';
import { api, can, orgPath, type Environment, type EnvironmentDetail } from '../api.ts';
import { useForm } from '../form.ts';
import { Link, navigate, useLocation } from '../router.tsx';
import { useSession } from '../session.ts';
import { age, bytes, usePoll } from '../util.ts';
import { ErrorNote, StateBadge } from './common.tsx';

const Terminal = lazy(() => import('./Terminal.tsx'));

interface Sample {
  at: number;
  cpuSeconds: number;
}

export default function EnvironmentsPage() {
  const { org, announce } = useSession();
  const { query } = useLocation();
  const open = query.get('terminal');
  const focus = query.get('focus');
  const samples = useRef(new Map<string, Sample>());
  const cpu = useRef(new Map<string, number>());
  const list = usePoll(async (signal) => {
    const { items } = await api<{ items: Environment[] }>('GET', orgPath(org.name, 'environments'), undefined, signal);
    // Resource use comes with each running environment's detail; CPU is the change in CPU seconds between polls.
    const details = await Promise.all(
      items.map((e) => (e.state === 'running' ? api<EnvironmentDetail>('GET', orgPath(org.name, `environments/${e.id}`), undefined, signal).catch(() => ({ ...e, usage: null })) : Promise.resolve({ ...e, usage: null }))),
    );
    const now = performance.now();
    for (const d of details) {
      const s = d.usage?.cpuSeconds;
      if (s === null || s === undefined) continue;
      const prev = samples.current.get(d.id);
      if (prev && now > prev.at) cpu.current.set(d.id, ((s - prev.cpuSeconds) / ((now - prev.at) / 1000)) * 100);
      samples.current.set(d.id, { at: now, cpuSeconds: s });
    }
    return details;
  }, 3000, [org.name]);
  // Names for "from snapshot …": read again only when an environment names one not known yet.
  const fromIds = [...new Set((list.data ?? []).map((e) => e.snapshotId).filter((id): id is string => id !== null))].sort().join(',');
  const snapshots = usePoll((signal) => (fromIds ? api<SnapshotList>('GET', orgPath(org.name, 'snapshots'), undefined, signal) : Promise.resolve({ items: [] })), null, [org.name, fromIds]);
  const snapshotName = new Map(snapshots.data?.items.map((s) => [s.id, s.name]));
  const [error, setError] = useState<Error>();
  const [busy, setBusy] = useState<string>();
  const [creating, setCreating] = useState(false);

  const act = async (env: Environment, what: 'start' | 'stop' | 'delete') => {
    if (what === 'delete' && !confirm(`Delete ${env.name}? Its files are removed for good.`)) return;
    setBusy(env.id);
    setError(undefined);
    try {
      await api(what === 'delete' ? 'DELETE' : 'POST', orgPath(org.name, what === 'delete' ? `environments/${env.id}` : `environments/${env.id}/${what}`));
      announce(`${env.name}: ${what === 'delete' ? 'deleted' : what === 'stop' ? 'stopped' : 'started'}`);
      if (open === env.id && what !== 'start') navigate('/environments', true);
      list.reload();
    } catch (err) {
      setError(err as Error);
    } finally {
      setBusy(undefined);
    }
  };

  const items = list.data ?? [];
  const openEnv = items.find((e) => e.id === open);
  const mayWrite = can.writeEnvironment(org.role);
  const mayExec = can.exec(org.role);
  return (
    <>
      <div className="page-head">
        <h1>Environments</h1>
        {mayWrite && <button className="primary push-right" aria-expanded={creating} aria-controls="new-environment" onClick={() => setCreating((c) => !c)}>New environment</button>}
      </div>
      {mayWrite && creating && <NewEnvironment onCancel={() => setCreating(false)} />}
      <ErrorNote error={list.error ?? error} />
      {list.data && items.length === 0 && <p className="empty">No environments. Tasks make one each; <strong>New environment</strong> (or <code>berth env create</code>) makes one by hand.</p>}
      {items.length > 0 && (
        <table className="list">
          <caption className="sr-only">Environments</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">State</th>
              <th scope="col">Image</th>
              <th scope="col">Age</th>
              <th scope="col" className="num">CPU</th>
              <th scope="col" className="num">Memory</th>
              <th scope="col"><span className="sr-only">Actions</span></th>
            </tr>
          </thead>
          <tbody>
            {items.map((e) => {
              const c = cpu.current.get(e.id);
              return (
                <tr key={e.id} className={focus === e.id ? 'focus' : undefined}>
                  <th scope="row"><Link to={`/environments/${e.id}`}>{e.name}</Link><div className="muted small">{e.id}</div>{e.snapshotId && <div className="muted small">from snapshot <Link to={`/snapshots#snapshot-${e.snapshotId}`}>{snapshotName.get(e.snapshotId) ?? e.snapshotId}</Link></div>}</th>
                  <td><StateBadge state={e.state} />{e.stateReason && <div className="muted small">{e.stateReason}</div>}</td>
                  <td className="muted">{e.image}</td>
                  <td><time dateTime={e.createdAt} title={e.createdAt}>{age(e.createdAt)}</time></td>
                  <td className="num">{e.state === 'running' && c !== undefined ? `${Math.max(0, c).toFixed(0)}%` : '—'}<div className="muted small">of {e.limits.cpus} CPU</div></td>
                  <td className="num">{e.state === 'running' ? bytes(e.usage?.memoryBytes) : '—'}<div className="muted small">of {bytes(e.limits.memoryBytes)}</div></td>
                  <td className="actions"><div>
                    {mayExec && e.mayUse !== false && e.state === 'running' && (
                      <button onClick={() => navigate(`/environments?terminal=${e.id}`)} aria-label={`Open a terminal in ${e.name}`}>Terminal</button>
                    )}
                    {mayWrite && e.mayUse !== false && e.state === 'running' && <button disabled={busy === e.id} onClick={() => void act(e, 'stop')} aria-label={`Stop ${e.name}`}>Stop</button>}
                    {mayWrite && e.mayUse !== false && (e.state === 'stopped' || e.state === 'failed') && <button disabled={busy === e.id} onClick={() => void act(e, 'start')} aria-label={`Start ${e.name}`}>Start</button>}
                    {mayWrite && e.mayManage !== false && e.state !== 'deleted' && <button className="danger" disabled={busy === e.id} onClick={() => void act(e, 'delete')} aria-label={`Delete ${e.name}`}>Delete</button>}
                  </div></td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      {mayExec && openEnv && openEnv.state === 'running' && (
        <Suspense fallback={<p aria-busy="true">Loading the terminal…</p>}>
          <Terminal org={org.name} env={openEnv} onClose={() => navigate('/environments')} key={openEnv.id} />
        </Suspense>
      )}
    </>
  );
}

/** Makes an environment by hand: a name, an image, a project for its secrets, and its limits; then opens its page. */
function NewEnvironment({ onCancel }: { onCancel: () => void }) {
  const { org, announce } = useSession();
  const projects = usePoll((s) => api<{ items: { name: string }[] }>('GET', orgPath(org.name, 'projects'), undefined, s), null, [org.name]);
  const { fields: f, set } = useForm({ name: '', image: '', project: '', cpus: '', memory: '', disk: '' });
  const [error, setError] = useState<Error>();
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const body = {
        ...(f.name.trim() && { name: f.name.trim() }),
        ...(f.image.trim() && { image: f.image.trim() }),
        ...(f.project && { project: f.project }),
        ...(f.cpus.trim() && { cpus: Number(f.cpus) }),
        ...(f.memory.trim() && { memory: f.memory.trim() }),
        ...(f.disk.trim() && { disk: f.disk.trim() }),
      };
      const env = await api<Environment>('POST', orgPath(org.name, 'environments'), body);
      announce(`${env.name}: created`);
      navigate(`/environments/${env.id}`);
    } catch (err) {
      setError(err as Error);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form id="new-environment" className="inline panel" aria-label="New environment" onSubmit={(e) => void submit(e)} aria-busy={busy || undefined}>
      <label>Name<input value={f.name} onChange={set('name')} placeholder="chosen for you when empty" pattern="[a-z0-9][a-z0-9\-]{0,62}" /></label>
      <label>Image<input value={f.image} onChange={set('image')} placeholder="the default image" /></label>
      <label>Project<select value={f.project} onChange={set('project')}><option value="">none (no secrets)</option>{projects.data?.items.map((p) => <option key={p.name} value={p.name}>{p.name}</option>)}</select></label>
      <label>CPUs<input value={f.cpus} onChange={set('cpus')} inputMode="decimal" size={5} placeholder="2" /></label>
      <label>Memory<input value={f.memory} onChange={set('memory')} size={7} placeholder="2g" /></label>
      <label>Disk<input value={f.disk} onChange={set('disk')} size={7} placeholder="10g" /></label>
      <button type="submit" className="primary" disabled={busy}>{busy ? 'Creating…' : 'Create environment'}</button>
      <button type="button" onClick={onCancel}>Cancel</button>
      <ErrorNote error={error} />
    </form>
  );
}
