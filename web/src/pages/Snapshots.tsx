// Snapshots (issue #16): environments' files frozen, what each came from and how many
// environments were made from it; a new environment from one, and removing one.
import { useState, type FormEvent } from 'react';
import type { Snapshot, SnapshotList } from '../../../src/shared/api-snapshots.ts';
import { api, can, orgPath, type Environment } from '../api.ts';
import { useForm } from '../form.ts';
import { Link, navigate } from '../router.tsx';
import { useSession } from '../session.ts';
import { ago, bytes, usePoll } from '../util.ts';
import { ErrorNote, ListTable, StateBadge } from './common.tsx';
import { useAnchoredRow } from './SettingsParts.tsx';

const KIND_WORDS: Record<Snapshot['kind'], string> = { manual: 'snapshot', fork: 'fork', prebuild: 'prebuild' };

export default function SnapshotsPage() {
  const { org, me, announce } = useSession();
  const list = usePoll((signal) => api<SnapshotList>('GET', orgPath(org.name, 'snapshots'), undefined, signal), 5000, [org.name]);
  const [error, setError] = useState<Error>();
  const [busy, setBusy] = useState<string>();
  const [making, setMaking] = useState<string>();
  const anchored = useAnchoredRow(list.data !== undefined);
  const items = list.data?.items ?? [];
  const mayWrite = can.writeEnvironment(org.role);
  const admin = can.manageProjects(org.role);
  // What the server allows (snapshots/service.ts): its maker or an admin; a prebuild's is every member's to use, an admin's to remove.
  const mine = (s: Snapshot) => s.createdBy !== null && s.createdBy.id === (me.userId ?? me.token?.id);
  const mayUse = (s: Snapshot) => mayWrite && s.state === 'ready' && (admin || s.kind === 'prebuild' || mine(s));
  const mayRemove = (s: Snapshot) => mayWrite && s.state !== 'deleting' && (admin || (s.kind !== 'prebuild' && mine(s)));

  const remove = async (s: Snapshot) => {
    if (!confirm(`Remove snapshot ${s.name}? Environments made from it keep their files.`)) return;
    setBusy(s.id);
    setError(undefined);
    try {
      await api('DELETE', orgPath(org.name, `snapshots/${s.id}`));
      announce(`${s.name}: removed`);
      list.reload();
    } catch (err) {
      setError(err as Error);
    } finally {
      setBusy(undefined);
    }
  };

  return (
    <>
      <p className="crumbs"><Link to="/environments">Environments</Link> / <span>Snapshots</span></p>
      <div className="page-head">
        <h1>Snapshots</h1>
      </div>
      <p className="muted">An environment's files frozen at a moment. Environments made from one start with every file it holds; each writes only to its own.</p>
      <ErrorNote error={list.error ?? error} />
      {list.data && items.length === 0 && <p className="empty">No snapshots. <strong>Snapshot</strong> or <strong>Fork</strong> on an environment's page (or <code>berth env snapshot</code>) makes one.</p>}
      {items.length > 0 && (
        <ListTable className="snapshots" caption="Snapshots, newest first" columns={['Name', 'Kind', 'State', 'From', { label: 'Size', num: true }, { label: 'Environments', num: true }, 'Created', { label: 'Actions', hidden: true }]}>
          {items.map((s) => (
            <tr key={s.id} id={`snapshot-${s.id}`} className={anchored === `snapshot-${s.id}` ? 'focus' : undefined}>
              <th scope="row">{s.name}<div className="muted small">{s.id}</div></th>
              <td>{KIND_WORDS[s.kind]}</td>
              <td><StateBadge state={s.state} />{s.stateReason && <div className="muted small">{s.stateReason}</div>}{s.inUseBy.length > 0 && <div className="muted small">in use: {s.inUseBy.join('; ')}</div>}</td>
              <td>{s.environmentId ? (s.environmentName ? <Link to={`/environments/${s.environmentId}`}>{s.environmentName}</Link> : <span className="muted">{s.environmentId} (removed)</span>) : '—'}</td>
              <td className="num">{s.bytes === null ? '—' : bytes(s.bytes)}</td>
              <td className="num">{s.environments}</td>
              <td><time dateTime={s.createdAt} title={s.createdAt}>{ago(s.createdAt)}</time>{s.createdBy && <div className="muted small">{s.createdBy.name || s.createdBy.email}</div>}</td>
              <td className="actions"><div>
                {mayUse(s) && <button aria-expanded={making === s.id} aria-controls="from-snapshot" onClick={() => setMaking((m) => (m === s.id ? undefined : s.id))} aria-label={`Create environment from ${s.name}`}>Create environment</button>}
                {mayRemove(s) && <button className="danger" disabled={busy === s.id} onClick={() => void remove(s)} aria-label={`Remove snapshot ${s.name}`}>Remove</button>}
              </div></td>
            </tr>
          ))}
        </ListTable>
      )}
      {making && items.some((s) => s.id === making) && <FromSnapshot snapshot={items.find((s) => s.id === making)!} onCancel={() => setMaking(undefined)} />}
    </>
  );
}

/** A new environment from a snapshot: its files and image; a name, project and limits of its own. */
function FromSnapshot({ snapshot, onCancel }: { snapshot: Snapshot; onCancel: () => void }) {
  const { org, announce } = useSession();
  const projects = usePoll((s) => api<{ items: { id: string; name: string }[] }>('GET', orgPath(org.name, 'projects'), undefined, s), null, [org.name]);
  const { fields: f, set } = useForm({ name: '', project: '', cpus: '', memory: '', disk: '' });
  const [error, setError] = useState<Error>();
  const [busy, setBusy] = useState(false);
  // The snapshot's project until another is chosen.
  const project = f.project || projects.data?.items.find((p) => p.id === snapshot.projectId)?.name || '';
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const body = {
        ...(f.name.trim() && { name: f.name.trim() }),
        ...(project && project !== '-' && { project }),
        ...(f.cpus.trim() && { cpus: Number(f.cpus) }),
        ...(f.memory.trim() && { memory: f.memory.trim() }),
        ...(f.disk.trim() && { disk: f.disk.trim() }),
      };
      const env = await api<Environment>('POST', orgPath(org.name, `snapshots/${snapshot.id}/environments`), body);
      announce(`${env.name}: created from ${snapshot.name}`);
      navigate(`/environments/${env.id}`);
    } catch (err) {
      setError(err as Error);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form id="from-snapshot" className="inline panel" aria-label={`New environment from ${snapshot.name}`} onSubmit={(e) => void submit(e)} aria-busy={busy || undefined}>
      <p className="muted full">From <strong>{snapshot.name}</strong>: its files and its image ({snapshot.image}), on its runner.</p>
      <label>Name<input value={f.name} onChange={set('name')} placeholder="chosen for you when empty" pattern="[a-z0-9][a-z0-9\-]{0,62}" /></label>
      <label>Project<select value={project || '-'} onChange={set('project')}><option value="-">none (no secrets)</option>{projects.data?.items.map((p) => <option key={p.name} value={p.name}>{p.name}</option>)}</select></label>
      <label>CPUs<input value={f.cpus} onChange={set('cpus')} inputMode="decimal" size={5} placeholder="2" /></label>
      <label>Memory<input value={f.memory} onChange={set('memory')} size={7} placeholder="2g" /></label>
      <label>Disk<input value={f.disk} onChange={set('disk')} size={7} placeholder="10g" /></label>
      <button type="submit" className="primary" disabled={busy}>{busy ? 'Creating…' : 'Create environment'}</button>
      <button type="button" onClick={onCancel}>Cancel</button>
      <ErrorNote error={error} />
    </form>
  );
}
