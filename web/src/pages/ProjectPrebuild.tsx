// A project's prebuild in Settings › Projects: the one tasks start from now, the newest
// attempt when it is under way or failed, and a button that queues one (`berth prebuild`).
import { useState } from 'react';
import type { Prebuild } from '../../../src/shared/prebuilds.ts';
import { api, can, orgPath } from '../api.ts';
import { Link } from '../router.tsx';
import { useSession } from '../session.ts';
import { ago, usePoll } from '../util.ts';
import { StateBadge } from './common.tsx';

export function ProjectPrebuild({ project }: { project: string }) {
  const { org, announce } = useSession();
  const list = usePoll((signal) => api<{ items: Prebuild[] }>('GET', orgPath(org.name, `projects/${encodeURIComponent(project)}/prebuilds`), undefined, signal), 10_000, [org.name, project]);
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const items = list.data?.items ?? [];
  const current = items.find((p) => p.state === 'ready');
  const newest = items[0];
  const queue = async () => {
    setBusy(true);
    setError(undefined);
    try {
      await api('POST', orgPath(org.name, `projects/${encodeURIComponent(project)}/prebuilds`));
      announce(`${project}: prebuild queued`);
      list.reload();
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  if (list.error) return <span className="muted">{list.error.message}</span>;
  if (!list.data) return <span className="muted">…</span>;
  const underWay = newest && (newest.state === 'queued' || newest.state === 'building');
  return (
    <div className="prebuild">
      {current ? (
        <div>
          <StateBadge state="ready" /> {current.commit && <code title={current.commit}>{current.commit.slice(0, 7)}</code>}{' '}
          {current.finishedAt && <time dateTime={current.finishedAt} title={current.finishedAt}>{ago(current.finishedAt)}</time>}
          {current.snapshotId && <div className="muted small">snapshot <Link to={`/snapshots#snapshot-${current.snapshotId}`}>{current.snapshotId}</Link></div>}
        </div>
      ) : (
        !underWay && <span className="muted">none</span>
      )}
      {newest && newest !== current && (underWay || newest.state === 'failed') && (
        <div className="small"><StateBadge state={newest.state} />{newest.stateReason && <span className="muted"> {newest.stateReason.slice(0, 200)}</span>}</div>
      )}
      {can.createTask(org.role) && !underWay && <div><button disabled={busy} onClick={() => void queue()} aria-label={`Prebuild project ${project}`}>Prebuild</button></div>}
      {error && <div className="error small" role="alert">{error}</div>}
    </div>
  );
}
