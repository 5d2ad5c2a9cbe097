// Campaigns (issue #17): one change across many repositories, one task each. The list says
// how far each has come; each links to its page (CampaignPage.tsx). New campaign opens the
// form that starts one (NewCampaign.tsx).
import type { Campaign, TargetCounts } from '../../../src/shared/api-campaigns.ts';
import { useState } from 'react';
import { api, can, orgPath } from '../api.ts';
import { Link } from '../router.tsx';
import { useSession } from '../session.ts';
import { ago, usePoll } from '../util.ts';
import { ErrorNote, ListTable, StateBadge } from './common.tsx';
import NewCampaign from './NewCampaign.tsx';

/** Repositories that are through, one way or another. */
export const doneOf = (c: TargetCounts) => c.succeeded + c.failed + c.cancelled;
/** Repositories whose task is under way. */
export const runningOf = (c: TargetCounts) => c.starting + c.running;

/** How far a campaign has come: done of total, as a bar with its words beside it. */
export function Progress({ campaign: c }: { campaign: Pick<Campaign, 'name' | 'total' | 'counts'> }) {
  const done = doneOf(c.counts);
  return (
    <span className="campaign-progress">
      {/* A drawn bar (role progressbar) that looks the same in every browser and theme. */}
      <span className="bar" role="progressbar" aria-valuemin={0} aria-valuemax={c.total} aria-valuenow={done} aria-label={`${c.name}: ${done} of ${c.total} repositories done`}>
        <span style={{ width: `${c.total ? (100 * done) / c.total : 0}%` }} />
      </span>
      <span className="num">{done}/{c.total}</span>
    </span>
  );
}

export default function CampaignsPage() {
  const { org } = useSession();
  const list = usePoll((signal) => api<{ items: Campaign[] }>('GET', orgPath(org.name, 'campaigns'), undefined, signal), 5000, [org.name]);
  const items = list.data?.items ?? [];
  const [creating, setCreating] = useState(false);
  // The API lets members and admins start one (a member over their projects' repositories only); a viewer sees no button.
  const mayCreate = can.createTask(org.role);
  return (
    <>
      <div className="page-head">
        <h1>Campaigns</h1>
        {mayCreate && <button className="primary push-right" aria-expanded={creating} aria-controls="new-campaign" onClick={() => setCreating((c) => !c)}>New campaign</button>}
      </div>
      {mayCreate && creating && <NewCampaign onCancel={() => setCreating(false)} />}
      <p className="muted">One change across many repositories: one task per repository, at most a set number at once, each pushing one branch and opening one pull request.</p>
      <ErrorNote error={list.error} />
      {list.data && items.length === 0 && <p className="empty">No campaigns. {mayCreate && <><strong>New campaign</strong> (or </>}<code>berth campaign create --name … --goal … --repos FILE</code>{mayCreate && ')'} starts one.</p>}
      {items.length > 0 && (
        <ListTable className="campaigns" caption="Campaigns, newest first" columns={['Name', 'State', 'Progress', { label: 'Failed', num: true }, { label: 'Running', num: true }, 'Created']}>
          {items.map((c) => (
            <tr key={c.id} id={`campaign-${c.id}`}>
              <th scope="row"><Link to={`/campaigns/${c.id}`}>{c.name}</Link><div className="muted small">{firstLine(c.goal)}</div></th>
              <td><StateBadge state={c.state} /></td>
              <td><Progress campaign={c} /></td>
              <td className="num">{c.counts.failed ? <span className="bad">{c.counts.failed}</span> : 0}</td>
              <td className="num">{runningOf(c.counts)}</td>
              <td><time dateTime={c.createdAt} title={c.createdAt}>{ago(c.createdAt)}</time></td>
            </tr>
          ))}
        </ListTable>
      )}
    </>
  );
}

const firstLine = (s: string) => {
  const line = s.split('\n')[0]!;
  return line.length > 120 ? `${line.slice(0, 120)}…` : line;
};
