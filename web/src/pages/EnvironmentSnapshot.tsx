// An environment page's Snapshot and Fork: its files frozen as a snapshot, or that and new
// environments made from it (issue #16). A running environment is paused only for the moment.
import { useState, type FormEvent } from 'react';
import type { ForkResult, Snapshot } from '../../../src/shared/api-snapshots.ts';
import { api, orgPath, type Environment } from '../api.ts';
import { Link } from '../router.tsx';
import { useSession } from '../session.ts';
import { bytes } from '../util.ts';
import { ErrorNote } from './common.tsx';

export type Freeze = 'snapshot' | 'fork';

/** The most one fork makes (MAX_FORK_COUNT in the shared API; the server checks again). */
const MAX_FORK = 100;

export function FreezeForm({ what, env, onClose }: { what: Freeze; env: Pick<Environment, 'id' | 'name'>; onClose: () => void }) {
  const { org, announce } = useSession();
  const [name, setName] = useState('');
  const [count, setCount] = useState('1');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<Error>();
  const [made, setMade] = useState<{ snapshot: Snapshot; environments?: Environment[] }>();
  const submit = async (ev: FormEvent) => {
    ev.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      if (what === 'snapshot') {
        const snapshot = await api<Snapshot>('POST', orgPath(org.name, `environments/${env.id}/snapshot`), name.trim() ? { name: name.trim() } : {});
        setMade({ snapshot });
        announce(`${env.name}: snapshot ${snapshot.name} made`);
      } else {
        const n = Number(count);
        const r = await api<ForkResult>('POST', orgPath(org.name, `environments/${env.id}/fork`), { count: n, ...(name.trim() && { name: name.trim() }) });
        setMade(r);
        announce(`${env.name}: forked into ${r.environments.length} environment${r.environments.length === 1 ? '' : 's'}`);
      }
    } catch (err) {
      setError(err as Error);
    } finally {
      setBusy(false);
    }
  };
  const label = what === 'snapshot' ? `Snapshot ${env.name}` : `Fork ${env.name}`;
  return (
    <form id="env-freeze" className="inline panel" aria-label={label} onSubmit={(e) => void submit(e)} aria-busy={busy || undefined}>
      <p className="muted full">
        {what === 'snapshot'
          ? "Freezes every file of the environment (a running one is paused for the moment). Environments made from the snapshot start with those files."
          : 'Snapshots the environment and makes environments from it: each has every file, and writes only to its own.'}
      </p>
      {what === 'fork' && <label>How many<input type="number" min={1} max={MAX_FORK} required value={count} onChange={(e) => setCount(e.target.value)} size={4} /></label>}
      <label>{what === 'snapshot' ? 'Name' : 'Their name'}<input value={name} onChange={(e) => setName(e.target.value)} placeholder={what === 'snapshot' ? 'the environment and the time' : `${env.name}-fork-…`} pattern="[a-z0-9][a-z0-9\-]{0,62}" /></label>
      <button type="submit" className="primary" disabled={busy}>{busy ? (what === 'snapshot' ? 'Freezing…' : 'Forking…') : what === 'snapshot' ? 'Take snapshot' : 'Fork'}</button>
      <button type="button" onClick={onClose}>Close</button>
      <ErrorNote error={error} />
      {made && (
        <div className="full" role="status">
          <p>
            Snapshot <Link to={`/snapshots#snapshot-${made.snapshot.id}`}>{made.snapshot.name}</Link> made
            {made.snapshot.bytes !== null && <> ({bytes(made.snapshot.bytes)}{made.snapshot.pausedMs ? `, paused ${made.snapshot.pausedMs} ms` : ''})</>}.
          </p>
          {made.environments && (
            <ul className="plain">
              {made.environments.map((e) => <li key={e.id}><Link to={`/environments/${e.id}`}>{e.name}</Link></li>)}
            </ul>
          )}
        </div>
      )}
    </form>
  );
}
