import { useMemo, useState, type FormEvent } from 'react';
import { auditWords } from '../../../src/shared/audit-words.ts';
import { api, can, orgPath, qs, type AuditEntry } from '../api.ts';
import { useForm } from '../form.ts';
import { useSession } from '../session.ts';
import { usePoll } from '../util.ts';
import { ErrorNote } from './common.tsx';

interface Verify {
  ok: boolean;
  entries: number;
  firstBadSeq?: number;
  reason?: string;
}
interface Filters {
  actor: string;
  action: string;
  environment: string;
  since: string;
  until: string;
}
const EMPTY: Filters = { actor: '', action: '', environment: '', since: '', until: '' };
const toIso = (local: string) => (local ? new Date(local).toISOString() : undefined);

export default function AuditPage() {
  const { org } = useSession();
  const { fields: draft, set, reset: resetDraft } = useForm<Filters>(EMPTY);
  const [filters, setFilters] = useState<Filters>(EMPTY);
  const [more, setMore] = useState<{ items: AuditEntry[]; cursor: string | null } | null>(null);
  const query = { actor: filters.actor, action: filters.action, environment: filters.environment, since: toIso(filters.since), until: toIso(filters.until) };
  const page = usePoll((signal) => api<{ items: AuditEntry[]; nextCursor: string | null }>('GET', orgPath(org.name, `audit${qs({ ...query, limit: 100 })}`), undefined, signal), 10_000, [org.name, JSON.stringify(filters)]);
  const verify = usePoll((signal) => api<Verify>('GET', orgPath(org.name, 'audit/verify'), undefined, signal), null, [org.name]);
  // Actors are ids (user:usr_…): the org's members say who they are.
  const members = usePoll((signal) => api<{ items: { userId: string; email: string; name: string }[] }>('GET', orgPath(org.name, 'members'), undefined, signal), null, [org.name]);
  const people = useMemo(() => new Map(members.data?.items.map((m) => [`user:${m.userId}`, m.name || m.email]) ?? []), [members.data]);
  if (!can.readAudit(org.role)) return <p>The audit log is for admins and owners of {org.name}.</p>;

  const apply = (e: FormEvent) => {
    e.preventDefault();
    setMore(null);
    setFilters(draft);
  };
  const loadMore = async () => {
    const cursor = more ? more.cursor : page.data?.nextCursor;
    if (!cursor) return;
    const next = await api<{ items: AuditEntry[]; nextCursor: string | null }>('GET', orgPath(org.name, `audit${qs({ ...query, limit: 100, cursor })}`));
    setMore({ items: [...(more?.items ?? []), ...next.items], cursor: next.nextCursor });
  };
  const items = [...(page.data?.items ?? []), ...(more?.items ?? [])];
  const cursor = more ? more.cursor : page.data?.nextCursor;
  const v = verify.data;
  const field = (k: keyof Filters, label: string, type = 'text') => (
    <label>
      {label}
      <input type={type} value={draft[k]} onChange={set(k)} />
    </label>
  );

  return (
    <>
      <div className="page-head">
        <h1>Audit log</h1>
        <a className="button" href={orgPath(org.name, `audit/export${qs(query)}`)} onClick={(e) => { e.preventDefault(); void exportLog(org.name, query); }}>Export JSON Lines</a>
      </div>
      <div className={`verify ${v ? (v.ok ? 'verify-ok' : 'verify-bad') : ''}`} role="status">
        {!v && !verify.error && 'Checking the hash chain…'}
        {verify.error && `Could not check the chain: ${verify.error.message}`}
        {v?.ok && <>✓ Chain verified: {v.entries} entries, none edited or removed.</>}
        {v && !v.ok && <>✗ The chain is broken at entry {v.firstBadSeq}: {v.reason}. Entries may have been edited or deleted.</>}
        <button className="link small" onClick={verify.reload}>Check again</button>
      </div>
      <form className="filters" role="search" aria-label="Filter the audit log" onSubmit={apply}>
        {field('actor', 'Actor')}
        {field('action', 'Action')}
        {field('environment', 'Environment id')}
        {field('since', 'Since', 'datetime-local')}
        {field('until', 'Until', 'datetime-local')}
        <button type="submit">Apply</button>
        <button type="button" className="link" onClick={() => { resetDraft(EMPTY); setFilters(EMPTY); setMore(null); }}>Clear</button>
      </form>
      <ErrorNote error={page.error} />
      {page.data && items.length === 0 && <p className="empty">No entries match.</p>}
      {items.length > 0 && (
        <table className="list audit">
          <caption className="sr-only">Audit entries, newest first</caption>
          <thead>
            <tr>
              <th scope="col" className="num">#</th>
              <th scope="col">Time</th>
              <th scope="col">Actor</th>
              <th scope="col">Action</th>
              <th scope="col">What happened</th>
            </tr>
          </thead>
          <tbody>
            {items.map((a) => (
              <tr key={a.seq}>
                <td className="num">{a.seq}</td>
                <td className="nowrap"><time dateTime={a.at}>{a.at.replace('T', ' ').slice(0, 19)}</time></td>
                <td>{people.get(a.actor) ? <span title={a.actor}>{people.get(a.actor)}</span> : a.actor}</td>
                <td><code>{a.action}</code></td>
                <td className="what">
                  <span className="words">{auditWords(a)}</span>
                  {/* Everything recorded, for whoever needs more than the words. */}
                  <details>
                    <summary>Details<span className="sr-only"> of entry {a.seq}</span></summary>
                    <dl className="entry">
                      {a.target && <><dt>Target</dt><dd><code>{a.target}</code></dd></>}
                      {a.environmentId && <><dt>Environment</dt><dd><code>{a.environmentId}</code></dd></>}
                      <dt>Actor</dt><dd><code>{a.actor}</code></dd>
                    </dl>
                    <pre className="json">{JSON.stringify(a.details, null, 2)}</pre>
                  </details>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {cursor && <p><button onClick={() => void loadMore()}>Load older entries</button></p>}
    </>
  );
}

/** The export needs the token, so it is fetched and handed to the browser as a file. */
async function exportLog(org: string, query: Record<string, string | undefined>) {
  const { getToken } = await import('../api.ts');
  const res = await fetch(orgPath(org, `audit/export${qs(query)}`), { headers: { authorization: `Bearer ${getToken() ?? ''}` } });
  const blob = await res.blob();
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = `berth-audit-${org}.jsonl`;
  a.click();
  URL.revokeObjectURL(a.href);
}
