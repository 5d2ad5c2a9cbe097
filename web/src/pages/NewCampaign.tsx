// Starting a campaign from the web UI (issue #17): the fields of `berth campaign create`. The
// repository list is sent as typed, line for line, so the line numbers the API gives for the
// lines it leaves out are the textarea's. A list none of whose lines can be used is refused
// and nothing is made; otherwise the campaign runs over the rest and its page lists the lines
// left out (kept for it in this tab, as the API answers them only once).
import { useState, type FormEvent } from 'react';
import type { CreatedCampaign, InvalidLine } from '../../../src/shared/api-campaigns.ts';
import { api, ApiError, can, orgPath } from '../api.ts';
import { navigate } from '../router.tsx';
import { useSession } from '../session.ts';
import { ErrorNote, Field, ForgeKindOptions, ListTable } from './common.tsx';
import { useForm } from '../form.ts';

const EMPTY = {
  name: '', goal: '', source: 'list' as 'list' | 'query', repos: '', orgQuery: '', agent: 'builtin' as 'builtin' | 'command', command: '', check: '', setup: '',
  concurrency: '20', maxOpenPrs: '100', forgeRate: '1/s', branchPrefix: '', draft: false, maxRetries: '2',
  image: '', allowDomains: '', forgeKind: '' as '' | 'github' | 'gitlab' | 'git', forgeUrl: '', tokenSecret: '',
};

export default function NewCampaign({ onCancel }: { onCancel: () => void }) {
  const { org, announce } = useSession();
  const { fields: f, put, set } = useForm(EMPTY);
  const [error, setError] = useState<Error>();
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    const text = (s: string) => s.trim() || undefined;
    const count = (s: string) => (s.trim() ? Number(s) : undefined);
    const setup = f.setup.split('\n').map((l) => l.trim()).filter(Boolean);
    const domains = f.allowDomains.split(/[\s,]+/).filter(Boolean);
    const forge = { ...(f.forgeKind && { kind: f.forgeKind }), ...(text(f.forgeUrl) && { apiUrl: text(f.forgeUrl) }), ...(text(f.tokenSecret) && { tokenSecret: text(f.tokenSecret) }) };
    try {
      const made = await api<CreatedCampaign>('POST', orgPath(org.name, 'campaigns'), {
        name: f.name.trim(),
        goal: f.goal,
        ...(f.source === 'list' ? { repos: f.repos.split('\n') } : { orgQuery: f.orgQuery.trim() }),
        agent: f.agent,
        command: f.agent === 'command' ? text(f.command) : undefined,
        check: text(f.check),
        setup: setup.length ? setup : undefined,
        concurrency: count(f.concurrency),
        maxOpenPrs: count(f.maxOpenPrs),
        forgeRate: text(f.forgeRate),
        branchPrefix: text(f.branchPrefix),
        draft: f.draft,
        maxRetries: count(f.maxRetries),
        image: text(f.image),
        allowDomains: domains.length ? domains : undefined,
        forge: Object.keys(forge).length ? forge : undefined,
      });
      const { campaign: c, invalid } = made;
      if (invalid.length) keepLeftOut(c.id, invalid);
      announce(`${c.name}: started over ${c.total} ${c.total === 1 ? 'repository' : 'repositories'}${invalid.length ? `; ${invalid.length} ${invalid.length === 1 ? 'line' : 'lines'} of the list left out` : ''}`);
      navigate(`/campaigns/${c.id}`);
    } catch (err) {
      setError(err as Error);
      setBusy(false);
    }
  };
  // Which field the API's refusal is about: its own `field`, or the list when it names a line.
  const invalid = (name: string) => (error instanceof ApiError && (error.field?.split('.')[0] === name || (name === 'repos' && /\bline \d+/.test(error.message))) ? true : undefined);

  return (
    <form id="new-campaign" className="stack panel new-campaign" aria-label="New campaign" onSubmit={(e) => void submit(e)} aria-busy={busy || undefined}>
      <div className="row">
        <Field id="campaign-name" label="Name" hint="Lower-case letters, digits, dot, dash, underscore; it names the branch.">
          <input id="campaign-name" value={f.name} onChange={set('name')} required maxLength={63} pattern="[a-z0-9][a-z0-9._\-]{0,62}" aria-invalid={invalid('name')} />
        </Field>
      </div>
      <Field id="campaign-goal" label="Goal" hint="What should be true in every repository when its task is done.">
        <textarea id="campaign-goal" rows={4} value={f.goal} onChange={set('goal')} required aria-invalid={invalid('goal')} />
      </Field>
      <fieldset>
        <legend>Repositories</legend>
        <label className="check"><input type="radio" name="campaign-source" checked={f.source === 'list'} onChange={() => put({ source: 'list' })} /> A list</label>
        <label className="check"><input type="radio" name="campaign-source" checked={f.source === 'query'} onChange={() => put({ source: 'query' })} /> A GitHub search</label>
        {f.source === 'list' ? (
          <Field id="campaign-repos" label="Repository list" hint="One URL (https, ssh, git@host:path) or absolute path per line; blank lines and # comments are skipped. A member may list their projects' repositories only.">
            <textarea id="campaign-repos" rows={8} value={f.repos} onChange={set('repos')} required spellCheck={false} className="mono" aria-invalid={invalid('repos')} />
          </Field>
        ) : (
          <Field id="campaign-query" label="GitHub search" hint="Such as org:acme topic:service, asked of the GitHub of the org's projects; its first 1,000 repositories.">
            <input id="campaign-query" value={f.orgQuery} onChange={set('orgQuery')} required maxLength={256} aria-invalid={invalid('orgQuery')} />
          </Field>
        )}
      </fieldset>
      <fieldset>
        <legend>Work</legend>
        <div className="row">
          <Field id="campaign-agent" label="Agent">
            <select id="campaign-agent" value={f.agent} onChange={set('agent')}>
              <option value="builtin">Built-in agent</option>
              <option value="command">A command (a codemod, Claude Code, aider…)</option>
            </select>
          </Field>
          {f.agent === 'command' && (
            <Field id="campaign-command" label="Command" hint="Runs in each repository's environment.">
              <input id="campaign-command" value={f.command} onChange={set('command')} required aria-invalid={invalid('command')} />
            </Field>
          )}
        </div>
        <Field id="campaign-check" label="Check" hint="The command that says a repository's change is done; empty: each project's own.">
          <input id="campaign-check" value={f.check} onChange={set('check')} aria-invalid={invalid('check')} />
        </Field>
        <Field id="campaign-setup" label="Setup" hint="Commands run first in each environment, one per line, after the repository's and the project's.">
          <textarea id="campaign-setup" rows={2} value={f.setup} onChange={set('setup')} spellCheck={false} className="mono" aria-invalid={invalid('setup')} />
        </Field>
      </fieldset>
      <fieldset>
        <legend>Pace and limits</legend>
        <div className="row">
          <Field id="campaign-concurrency" label="Concurrency" hint="Tasks at once, across all runners.">
            <input id="campaign-concurrency" type="number" min={1} max={1000} value={f.concurrency} onChange={set('concurrency')} aria-invalid={invalid('concurrency')} />
          </Field>
          <Field id="campaign-max-open-prs" label="Max open PRs">
            <input id="campaign-max-open-prs" type="number" min={1} max={100000} value={f.maxOpenPrs} onChange={set('maxOpenPrs')} aria-invalid={invalid('maxOpenPrs')} />
          </Field>
          <Field id="campaign-forge-rate" label="Forge rate" hint="Task starts per unit: 1/s, 30/m, 100/h.">
            <input id="campaign-forge-rate" value={f.forgeRate} onChange={set('forgeRate')} size={8} aria-invalid={invalid('forgeRate')} />
          </Field>
          <Field id="campaign-max-retries" label="Max retries" hint="For infrastructure failures only.">
            <input id="campaign-max-retries" type="number" min={0} max={10} value={f.maxRetries} onChange={set('maxRetries')} aria-invalid={invalid('maxRetries')} />
          </Field>
        </div>
        <div className="row">
          <Field id="campaign-branch-prefix" label="Branch prefix" hint="The branch is the prefix, a slash and the name.">
            <input id="campaign-branch-prefix" value={f.branchPrefix} onChange={set('branchPrefix')} placeholder="berth/campaign" aria-invalid={invalid('branchPrefix')} />
          </Field>
          <label className="check"><input type="checkbox" checked={f.draft} onChange={(e) => put({ draft: e.target.checked })} /> Open pull requests as drafts</label>
        </div>
      </fieldset>
      {/* A member's campaign runs over projects' repositories only: these are an admin's. */}
      {can.approve(org.role) && (
        <fieldset>
          <legend>Repositories without a project</legend>
          <p className="hint">What a project's settings would give them; repositories of a project use their project's.</p>
          <div className="row">
            <Field id="campaign-image" label="Image" hint="Over the repository's berth.yaml or devcontainer.json.">
              <input id="campaign-image" value={f.image} onChange={set('image')} placeholder="default" aria-invalid={invalid('image')} />
            </Field>
            <Field id="campaign-token-secret" label="Forge token secret" hint="The org secret to push and open pull requests with.">
              <input id="campaign-token-secret" value={f.tokenSecret} onChange={set('tokenSecret')} placeholder="GITHUB_TOKEN" className="mono" aria-invalid={invalid('forge')} />
            </Field>
          </div>
          <div className="row">
            <Field id="campaign-forge-kind" label="Forge">
              <select id="campaign-forge-kind" value={f.forgeKind} onChange={set('forgeKind')}>
                <ForgeKindOptions from="from each URL" />
              </select>
            </Field>
            <Field id="campaign-forge-url" label="Forge API URL" hint="GitHub Enterprise or a self-hosted GitLab.">
              <input id="campaign-forge-url" value={f.forgeUrl} onChange={set('forgeUrl')} placeholder="https://github.example.com/api/v3" aria-invalid={invalid('forge')} />
            </Field>
          </div>
          <Field id="campaign-allow-domains" label="Also allowed domains" hint="Reached besides the org's egress policy; separate with spaces or commas.">
            <input id="campaign-allow-domains" value={f.allowDomains} onChange={set('allowDomains')} placeholder="registry.example.com *.pkg.example.com" aria-invalid={invalid('allowDomains')} />
          </Field>
        </fieldset>
      )}
      <ErrorNote error={error} />
      <div className="row">
        <button type="submit" className="primary" disabled={busy}>{busy ? 'Starting…' : 'Start campaign'}</button>
        <button type="button" onClick={onCancel}>Cancel</button>
      </div>
    </form>
  );
}

/** Lines of a list kept for the campaign's page: the first of them, as a list of 10,000 might leave out many. */
const KEPT = 200;
const leftOutKey = (campaign: string) => `berth.campaign-left-out.${campaign}`;

function keepLeftOut(campaign: string, invalid: InvalidLine[]): void {
  try {
    sessionStorage.setItem(leftOutKey(campaign), JSON.stringify({ total: invalid.length, lines: invalid.slice(0, KEPT) }));
  } catch {
    // Storage full or refused: the page then says nothing of them; the audit log has their count.
  }
}

/** The lines of its list a campaign made in this tab left out, with the reasons, until dismissed. */
export function LeftOutLines({ campaign }: { campaign: string }) {
  const [kept, setKept] = useState(() => {
    try {
      return JSON.parse(sessionStorage.getItem(leftOutKey(campaign)) ?? 'null') as { total: number; lines: InvalidLine[] } | null;
    } catch {
      return null;
    }
  });
  if (!kept) return null;
  const dismiss = () => {
    sessionStorage.removeItem(leftOutKey(campaign));
    setKept(null);
  };
  return (
    <section aria-labelledby="campaign-left-out-h" className="left-out">
      <h2 id="campaign-left-out-h">Lines left out of the list</h2>
      <p className="notice">
        {kept.total} {kept.total === 1 ? 'line' : 'lines'} of the repository list named no repository this campaign may use; it runs over the rest.
        {kept.total > kept.lines.length && ` The first ${kept.lines.length} are shown.`}
      </p>
      <ListTable className="campaign-left-out" caption="Lines of the repository list left out, with the reason" columns={[{ label: 'Line', num: true }, 'Text', 'Why']}>
        {kept.lines.map((l) => (
          <tr key={l.line}>
            <th scope="row" className="num">{l.line}</th>
            <td><code>{l.text}</code></td>
            <td>{l.reason}</td>
          </tr>
        ))}
      </ListTable>
      <button type="button" onClick={dismiss}>Dismiss</button>
    </section>
  );
}
