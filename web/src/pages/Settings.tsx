import { useState, type FormEvent, type ReactNode } from 'react';
import { api, ApiError, can, orgPath, ROLES, type Role, type RunnerList } from '../api.ts';
import { useSession } from '../session.ts';
import { ago, bytes, usePoll } from '../util.ts';
import { ErrorNote } from './common.tsx';
import { ProjectForm, type Project } from './ProjectForm.tsx';
import Models from './SettingsModels.tsx';
import Triggers from './SettingsTriggers.tsx';
import { useAction } from './SettingsParts.tsx';
import { ProjectPrebuild } from './ProjectPrebuild.tsx';

interface Secret {
  name: string;
  project: string | null;
  updatedAt: string;
  updatedBy: string;
}
interface Member {
  userId: string;
  email: string;
  name: string;
  role: Role;
  createdAt: string;
}
interface Token {
  id: string;
  name: string;
  kind: 'user' | 'org';
  role: Role | null;
  userId: string | null;
  createdAt: string;
  expiresAt: string | null;
  lastUsedAt: string | null;
  revokedAt: string | null;
}
interface Health {
  ok: boolean;
  version: string;
  database: string;
}

const SECTIONS = [
  ['projects', 'Projects'],
  ['secrets', 'Secrets'],
  ['models', 'Models'],
  ['triggers', 'Triggers'],
  ['members', 'Members'],
  ['tokens', 'Tokens'],
  ['runners', 'Runners and health'],
  ['network', 'Network policies'],
] as const;

export default function SettingsPage() {
  return (
    <>
      <h1>Settings</h1>
      <nav aria-label="Settings sections" className="toc">
        <ul>{SECTIONS.map(([id, label]) => <li key={id}><a href={`#${id}`}>{label}</a></li>)}</ul>
      </nav>
      <Projects />
      <Secrets />
      <Models />
      <Triggers />
      <Members />
      <Tokens />
      <Runners />
      <Policies />
    </>
  );
}

function Section({ id, title, children }: { id: string; title: string; children: ReactNode }) {
  return (
    <section className="settings" id={id} aria-labelledby={`${id}-h`}>
      <h2 id={`${id}-h`}>{title}</h2>
      {children}
    </section>
  );
}

function Projects() {
  const { org } = useSession();
  const list = usePoll((s) => api<{ items: Project[] }>('GET', orgPath(org.name, 'projects'), undefined, s), null, [org.name]);
  const { error, run } = useAction(list.reload);
  const [editing, setEditing] = useState<string>();
  const manage = can.manageProjects(org.role);
  const shown = list.data?.items.find((p) => p.id === editing);
  return (
    <Section id="projects" title="Projects">
      <ErrorNote error={list.error ?? error} />
      <div className="scroll-x">
      <table className="list">
        <thead><tr><th scope="col">Name</th><th scope="col">Repository</th><th scope="col">Branch</th><th scope="col">Secrets</th><th scope="col">Environment</th><th scope="col">Agent</th><th scope="col">Prebuild</th>{manage && <th scope="col"><span className="sr-only">Actions</span></th>}</tr></thead>
        <tbody>
          {list.data?.items.map((p) => (
            <tr key={p.id}>
              <th scope="row">{p.name}</th>
              <td className="muted">{p.repoUrl ?? '—'}</td>
              <td>{p.defaultBranch}</td>
              <td>{p.secrets.join(', ') || '—'}</td>
              <td>{workSummary(p) || <span className="muted">from the repository</span>}</td>
              <td>{[p.agent.kind, p.agent.model].filter(Boolean).join(' · ') || 'defaults'}</td>
              <td><ProjectPrebuild project={p.name} /></td>
              {manage && (
                <td className="actions"><div>
                  <button aria-label={`Edit project ${p.name}`} aria-expanded={editing === p.id} onClick={() => setEditing(editing === p.id ? undefined : p.id)}>Edit</button>
                  <button className="danger" aria-label={`Delete project ${p.name}`} onClick={() => confirm(`Delete project ${p.name}?`) && void run(() => api('DELETE', orgPath(org.name, `projects/${encodeURIComponent(p.name)}`)))}>Delete</button>
                </div></td>
              )}
            </tr>
          ))}
          {list.data?.items.length === 0 && <tr><td colSpan={8} className="empty">No projects.</td></tr>}
        </tbody>
      </table>
      </div>
      {manage && shown && (
        <>
          <h3>Edit {shown.name}</h3>
          <ProjectForm project={shown} key={shown.id} onDone={() => { setEditing(undefined); list.reload(); }} onCancel={() => setEditing(undefined)} />
        </>
      )}
      {manage && !shown && (
        <>
          <h3>New project</h3>
          <ProjectForm onDone={() => list.reload()} />
        </>
      )}
    </Section>
  );
}

/** A project's own environment settings in a few words. */
function workSummary(p: Project): string {
  const w = p.work;
  return [
    w.image,
    w.check && `check: ${w.check}`,
    w.setup && `setup: ${typeof w.setup === 'string' ? 1 : w.setup.length}`,
    w.limits?.cpus !== undefined && `${w.limits.cpus} CPU`,
    w.limits?.memory !== undefined && `${w.limits.memory}`,
    w.allowDomains?.length && `${w.allowDomains.length} domain${w.allowDomains.length === 1 ? '' : 's'}`,
  ].filter(Boolean).join(' · ');
}

function Secrets() {
  const { org } = useSession();
  const list = usePoll((s) => api<{ items: Secret[] }>('GET', orgPath(org.name, 'secrets'), undefined, s), null, [org.name]);
  const { error, run } = useAction(list.reload);
  const [name, setName] = useState('');
  const [value, setValue] = useState('');
  const [project, setProject] = useState('');
  const set = async (e: FormEvent) => {
    e.preventDefault();
    const ok = await run(() => api('PUT', orgPath(org.name, `secrets/${encodeURIComponent(name)}`), { value, project: project || undefined }));
    // The value is never kept or shown again.
    if (ok) {
      setValue('');
      setName('');
    }
  };
  const manage = can.manageSecrets(org.role);
  return (
    <Section id="secrets" title="Secrets">
      <p className="hint">Values are write-only: Berth never shows them again, and redacts them from transcripts.</p>
      <ErrorNote error={list.error ?? error} />
      <table className="list">
        <thead><tr><th scope="col">Name</th><th scope="col">Project</th><th scope="col">Updated</th><th scope="col">By</th>{manage && <th scope="col"><span className="sr-only">Actions</span></th>}</tr></thead>
        <tbody>
          {list.data?.items.map((s) => (
            <tr key={`${s.name}@${s.project ?? ''}`}>
              <th scope="row"><code>{s.name}</code></th>
              <td>{s.project ?? 'whole org'}</td>
              <td>{ago(s.updatedAt)}</td>
              <td className="muted">{s.updatedBy}</td>
              {manage && (
                <td><button className="danger" aria-label={`Delete secret ${s.name}`} onClick={() => confirm(`Delete secret ${s.name}?`) && void run(() => api('DELETE', orgPath(org.name, `secrets/${encodeURIComponent(s.name)}${s.project ? `?project=${encodeURIComponent(s.project)}` : ''}`)))}>Delete</button></td>
              )}
            </tr>
          ))}
          {list.data?.items.length === 0 && <tr><td colSpan={5} className="empty">No secrets.</td></tr>}
        </tbody>
      </table>
      {manage && (
        <form className="inline" onSubmit={set} aria-label="Set a secret">
          <label>Name<input value={name} onChange={(e) => setName(e.target.value)} required pattern="[A-Za-z_][A-Za-z0-9_]*" /></label>
          <label>Value<input type="password" autoComplete="new-password" value={value} onChange={(e) => setValue(e.target.value)} required /></label>
          <label>Project (optional)<input value={project} onChange={(e) => setProject(e.target.value)} /></label>
          <button type="submit">Set secret</button>
        </form>
      )}
    </Section>
  );
}

function Members() {
  const { org } = useSession();
  const list = usePoll((s) => api<{ items: Member[] }>('GET', orgPath(org.name, 'members'), undefined, s), null, [org.name]);
  const { error, run } = useAction(list.reload);
  const [email, setEmail] = useState('');
  const [role, setRole] = useState<Role>('member');
  const manage = can.manageMembers(org.role);
  const grantable = ROLES.filter((r) => can.grant(org.role, r));
  const setRoleOf = (m: string, r: Role) => run(() => api('PUT', orgPath(org.name, `members/${encodeURIComponent(m)}`), { role: r }));
  return (
    <Section id="members" title="Members">
      <ErrorNote error={list.error ?? error} />
      <table className="list">
        <thead><tr><th scope="col">Email</th><th scope="col">Name</th><th scope="col">Role</th><th scope="col">Since</th>{manage && <th scope="col"><span className="sr-only">Actions</span></th>}</tr></thead>
        <tbody>
          {list.data?.items.map((m) => (
            <tr key={m.userId}>
              <th scope="row">{m.email}</th>
              <td>{m.name}</td>
              <td>
                {manage && can.grant(org.role, m.role) ? (
                  <select aria-label={`Role of ${m.email}`} value={m.role} onChange={(e) => void setRoleOf(m.email, e.target.value as Role)}>
                    {grantable.map((r) => <option key={r} value={r}>{r}</option>)}
                  </select>
                ) : (
                  m.role
                )}
              </td>
              <td>{ago(m.createdAt)}</td>
              {manage && (
                <td>{can.grant(org.role, m.role) && <button className="danger" aria-label={`Remove ${m.email}`} onClick={() => confirm(`Remove ${m.email} from ${org.name}?`) && void run(() => api('DELETE', orgPath(org.name, `members/${encodeURIComponent(m.email)}`)))}>Remove</button>}</td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
      {manage && (
        <form className="inline" aria-label="Add a member" onSubmit={(e) => { e.preventDefault(); void setRoleOf(email, role).then((ok) => ok && setEmail('')); }}>
          <label>Email<input type="email" value={email} onChange={(e) => setEmail(e.target.value)} required /></label>
          <label>Role<select value={role} onChange={(e) => setRole(e.target.value as Role)}>{grantable.map((r) => <option key={r} value={r}>{r}</option>)}</select></label>
          <button type="submit">Add member</button>
        </form>
      )}
    </Section>
  );
}

function Tokens() {
  const { org } = useSession();
  const list = usePoll((s) => api<{ items: Token[] }>('GET', orgPath(org.name, 'tokens'), undefined, s), null, [org.name]);
  const { error, run } = useAction(list.reload);
  const [name, setName] = useState('');
  const [role, setRole] = useState<Role>('viewer');
  const [expires, setExpires] = useState('30d');
  const [created, setCreated] = useState<string>();
  const mayCreate = can.createToken(org.role);
  const create = async (e: FormEvent) => {
    e.preventDefault();
    await run(async () => {
      const t = await api<Token & { token: string }>('POST', orgPath(org.name, 'tokens'), { role, name: name || undefined, expires: expires || undefined });
      setCreated(t.token);
      setName('');
    });
  };
  return (
    <Section id="tokens" title="Tokens">
      <ErrorNote error={list.error ?? error} />
      {created && (
        <div className="notice" role="alert">
          <p>The new token, shown this once. Copy it now:</p>
          <code className="secret" data-testid="new-token">{created}</code>{' '}
          <button onClick={() => void navigator.clipboard?.writeText(created)}>Copy</button> <button className="link" onClick={() => setCreated(undefined)}>Done</button>
        </div>
      )}
      <table className="list">
        <thead><tr><th scope="col">Name</th><th scope="col">Kind</th><th scope="col">Role</th><th scope="col">Created</th><th scope="col">Last used</th><th scope="col">Expires</th><th scope="col">Status</th>{mayCreate && <th scope="col"><span className="sr-only">Actions</span></th>}</tr></thead>
        <tbody>
          {list.data?.items.map((t) => (
            <tr key={t.id}>
              <th scope="row">{t.name}</th>
              <td>{t.kind}</td>
              <td>{t.role ?? '—'}</td>
              <td>{ago(t.createdAt)}</td>
              <td>{ago(t.lastUsedAt)}</td>
              <td>{t.expiresAt ? t.expiresAt.slice(0, 10) : 'never'}</td>
              <td>{t.revokedAt ? <span className="bad">revoked</span> : <span className="ok">active</span>}</td>
              {mayCreate && <td>{!t.revokedAt && <button className="danger" aria-label={`Revoke token ${t.name}`} onClick={() => confirm(`Revoke ${t.name}? Anything using it stops working.`) && void run(() => api('DELETE', orgPath(org.name, `tokens/${t.id}`)))}>Revoke</button>}</td>}
            </tr>
          ))}
          {list.data?.items.length === 0 && <tr><td colSpan={8} className="empty">No org tokens.</td></tr>}
        </tbody>
      </table>
      {mayCreate && (
        <form className="inline" onSubmit={create} aria-label="Create an org token">
          <label>Name<input value={name} onChange={(e) => setName(e.target.value)} placeholder="ci" /></label>
          <label>Role<select value={role} onChange={(e) => setRole(e.target.value as Role)}>{ROLES.filter((r) => can.grant(org.role, r)).map((r) => <option key={r} value={r}>{r}</option>)}</select></label>
          <label>Expires after<input value={expires} onChange={(e) => setExpires(e.target.value)} placeholder="30d (empty: never)" /></label>
          <button type="submit">Create token</button>
        </form>
      )}
    </Section>
  );
}

/** The control plane's health and every runner's, refreshed every few seconds. */
function Runners() {
  const health = usePoll((s) => api<Health>('GET', '/health', undefined, s), 10_000, []);
  const runners = usePoll((s) => api<RunnerList>('GET', '/api/runners', undefined, s), 5_000, []);
  const h = health.data;
  // The runner list is for admins and owners of an org: a member is told so, not shown an error.
  const refused = runners.error instanceof ApiError && runners.error.status === 403;
  return (
    <Section id="runners" title="Runners and health">
      <ErrorNote error={health.error ?? (refused ? undefined : runners.error)} />
      {h && (
        <dl className="facts">
          <div><dt>Control plane</dt><dd>{h.ok ? <span className="ok">healthy</span> : <span className="bad">unhealthy</span>}</dd></div>
          <div><dt>Version</dt><dd>{h.version}</dd></div>
          <div><dt>Database</dt><dd>{h.database}</dd></div>
        </dl>
      )}
      {refused && <p className="hint">Runners and their health are shown to admins and owners of an org.</p>}
      {runners.data && (
        <table className="list runners">
          <caption className="sr-only">Runners, refreshed every few seconds</caption>
          <thead>
            <tr>
              <th scope="col">Runner</th><th scope="col">Health</th><th scope="col">Backend</th><th scope="col">Capacity</th><th scope="col">Environments</th><th scope="col">Tasks</th><th scope="col">Network</th><th scope="col">Data disk</th><th scope="col">Last heartbeat</th>
            </tr>
          </thead>
          <tbody>
            {runners.data.items.map((r) => (
              <tr key={r.id}>
                <th scope="row">{r.name}<div className="muted">{r.host} · {r.version}</div></th>
                <td>
                  <span className={`badge health-${r.health.status}`}>{r.health.status}</span>
                  {r.draining && <> <span className="badge state-stopped" title="nothing new goes there; what runs finishes">draining</span></>}
                  {Object.keys(r.labels ?? {}).length > 0 && <div className="muted">labels {Object.entries(r.labels).map(([k, v]) => `${k}=${v}`).join(', ')}</div>}
                  {r.health.reasons.length > 0 && <ul className="reasons">{r.health.reasons.map((why) => <li key={why}>{why}</li>)}</ul>}
                </td>
                <td>{r.backend}<div className="muted">cgroup {r.cgroups}</div></td>
                <td>{r.cpus} cores · {bytes(r.memoryBytes)}</td>
                <td>{r.environments.running} running of {r.environments.total}</td>
                <td>{r.tasks.running} running of {r.tasks.concurrency}</td>
                <td>
                  {r.network.egressProxy ? 'egress proxy' : 'none'}{r.network.egressProxy && !r.network.nftables && <div className="bad">no nftables</div>}
                  {(r.network.trustedNetworks?.length ?? 0) > 0 && <div className="muted">trusted networks: {r.network.trustedNetworks!.join(', ')}</div>}
                  {r.network.upstreamProxy && <div className="muted">via {r.network.upstreamProxy}{(r.network.noProxy?.length ?? 0) > 0 && ` (not for ${r.network.noProxy!.join(', ')})`}</div>}
                </td>
                <td>{bytes(r.dataDisk.freeBytes)} free of {bytes(r.dataDisk.totalBytes)}<div className="muted">disk quota {r.diskQuota ? 'on' : 'off'}</div>{r.snapshots && <div className="muted">snapshots {r.snapshots.available ? 'yes' : `no: ${r.snapshots.reason ?? 'no reason given'}`}</div>}</td>
                <td><time dateTime={r.lastHeartbeatAt} title={r.lastHeartbeatAt}>{ago(r.lastHeartbeatAt)}</time></td>
              </tr>
            ))}
            {runners.data.items.length === 0 && <tr><td colSpan={9} className="empty">No runner has reported yet.</td></tr>}
          </tbody>
        </table>
      )}
    </Section>
  );
}

interface Policy {
  scope: 'org' | 'project' | 'environment';
  target: string | null;
  allowDomains: string[] | null;
  presets: string[] | null;
  allowPorts: number[] | null;
  allowMethods: string[] | null;
  maxConnections: number | null;
  mirrors?: Record<string, { url: string; secret: string | null }> | null;
  updatedAt: string;
  updatedBy: string;
}
interface Effective {
  allowDomains: string[];
  presets: string[];
  allowPorts: number[] | null;
  allowMethods: string[] | null;
  maxConnections: number;
  mirrors?: { ecosystem: string; url: string; secret: string | null; scope: string }[];
}

const list = (v: readonly (string | number)[] | null | undefined, none = '—') => (v && v.length ? v.join(', ') : none);
const words = (s: string) => s.split(/[\s,]+/).filter(Boolean);

/** Egress policies: what environments may reach. The narrowest scope that sets a field wins. */
function Policies() {
  const { org } = useSession();
  const scopes = usePoll((s) => api<{ items: Policy[] }>('GET', orgPath(org.name, 'policies'), undefined, s), null, [org.name]);
  const effective = usePoll((s) => api<{ own: Policy | null; effective: Effective }>('GET', orgPath(org.name, 'policies/effective'), undefined, s), null, [org.name]);
  const { error, run } = useAction(() => {
    scopes.reload();
    effective.reload();
  });
  const own = effective.data?.own;
  const [domains, setDomains] = useState<string>();
  const [presets, setPresets] = useState<string>();
  const manage = can.manageProjects(org.role);
  // No policy API on this control plane (an older one): say so instead of an error.
  if (scopes.error && 'status' in scopes.error && (scopes.error as { status: number }).status === 404) {
    return (
      <Section id="network" title="Network policies">
        <p className="muted">This control plane has no network policy API.</p>
      </Section>
    );
  }
  const save = (e: FormEvent) => {
    e.preventDefault();
    void run(() => api('PATCH', orgPath(org.name, 'policies/org'), { allowDomains: words(domains ?? list(own?.allowDomains, '')), presets: words(presets ?? list(own?.presets, '')) }));
  };
  const eff = effective.data?.effective;
  return (
    <Section id="network" title="Network policies">
      <ErrorNote error={scopes.error ?? effective.error ?? error} />
      {eff && (
        <dl className="facts">
          <div className="wide"><dt>Org default: allowed domains</dt><dd>{list(eff.allowDomains, 'none (everything is denied)')}</dd></div>
          <div><dt>Registry presets</dt><dd>{list(eff.presets)}</dd></div>
          <div><dt>Plain HTTP ports</dt><dd>{list(eff.allowPorts, 'any')}</dd></div>
          <div><dt>Methods</dt><dd>{list(eff.allowMethods, 'any')}</dd></div>
          <div><dt>Connections</dt><dd>{eff.maxConnections}</dd></div>
          <div className="wide"><dt>Package mirrors</dt><dd>{list(eff.mirrors?.map((m) => `${m.ecosystem} ${m.url}${m.secret ? ` (secret ${m.secret}, added by the proxy)` : ''}`), 'none')}</dd></div>
        </dl>
      )}
      <table className="list">
        <caption className="sr-only">Scopes with a policy of their own</caption>
        <thead><tr><th scope="col">Scope</th><th scope="col">Domains</th><th scope="col">Presets</th><th scope="col">Ports</th><th scope="col">Methods</th><th scope="col">Mirrors</th><th scope="col">Updated</th></tr></thead>
        <tbody>
          {scopes.data?.items.map((p) => (
            <tr key={`${p.scope}:${p.target ?? ''}`}>
              <th scope="row">{p.scope}{p.target ? ` ${p.target}` : ''}</th>
              <td>{list(p.allowDomains, 'inherited')}</td>
              <td>{list(p.presets, 'inherited')}</td>
              <td>{list(p.allowPorts, 'inherited')}</td>
              <td>{list(p.allowMethods, 'inherited')}</td>
              <td>{list(p.mirrors ? Object.entries(p.mirrors).map(([k, m]) => `${k} ${m.url}`) : null, 'inherited')}</td>
              <td>{ago(p.updatedAt)} <span className="muted">{p.updatedBy}</span></td>
            </tr>
          ))}
          {scopes.data?.items.length === 0 && <tr><td colSpan={7} className="empty">No scope has a policy of its own: the org defaults above apply.</td></tr>}
        </tbody>
      </table>
      {manage && effective.data && (
        <form className="inline" onSubmit={save} aria-label="Org network policy">
          <label>Allowed domains (org)<input size={40} value={domains ?? list(own?.allowDomains, '')} onChange={(e) => setDomains(e.target.value)} placeholder="github.com, *.example.com" /></label>
          <label>Presets<input value={presets ?? list(own?.presets, '')} onChange={(e) => setPresets(e.target.value)} placeholder="npm, pypi" /></label>
          <button type="submit">Save org policy</button>
        </form>
      )}
      <p className="hint">Projects and environments narrow or widen this with <code>berth policy</code>; an environment's refused requests appear in its tasks' transcripts. Package mirrors (npm, PyPI, Go, crates, Maven, apt) are set for the org or a project with <code>berth policy set --mirror npm=URL</code>.</p>
    </Section>
  );
}
