import { useState, type FormEvent } from 'react';
import { api, orgPath } from '../api.ts';
import { useForm } from '../form.ts';
import { useSession } from '../session.ts';
import { ErrorNote, ForgeKindOptions } from './common.tsx';

/** A project as GET …/projects gives it (src/server/routes/projects.ts). */
export interface Project {
  id: string;
  name: string;
  repoUrl: string | null;
  defaultBranch: string;
  secrets: string[];
  work: {
    image?: string;
    setup?: string | string[];
    check?: string;
    limits?: { cpus?: number; memory?: string | number };
    allowDomains?: string[];
    env?: Record<string, string>;
  };
  forge: { kind?: 'github' | 'gitlab' | 'git'; apiUrl?: string; tokenSecret?: string; app?: unknown };
  agent: { kind?: 'builtin' | 'command'; model?: string; command?: string };
  createdAt: string;
}

interface Fields {
  name: string;
  repoUrl: string;
  defaultBranch: string;
  secrets: string;
  image: string;
  setup: string;
  check: string;
  cpus: string;
  memory: string;
  allowDomains: string;
  agentKind: '' | 'builtin' | 'command';
  model: string;
  command: string;
  forgeKind: '' | 'github' | 'gitlab' | 'git';
  tokenSecret: string;
  apiUrl: string;
}

const words = (s: string) => s.split(/[\s,]+/).filter(Boolean);
const lines = (s: string) => s.split('\n').map((l) => l.trim()).filter(Boolean);

function fieldsOf(p: Project | undefined): Fields {
  const w = p?.work ?? {};
  const setup = w.setup === undefined ? [] : typeof w.setup === 'string' ? [w.setup] : w.setup;
  return {
    name: p?.name ?? '',
    repoUrl: p?.repoUrl ?? '',
    defaultBranch: p?.defaultBranch ?? 'main',
    secrets: p?.secrets.join(', ') ?? '',
    image: w.image ?? '',
    setup: setup.join('\n'),
    check: w.check ?? '',
    cpus: w.limits?.cpus === undefined ? '' : String(w.limits.cpus),
    memory: w.limits?.memory === undefined ? '' : String(w.limits.memory),
    allowDomains: (w.allowDomains ?? []).join(', '),
    agentKind: p?.agent.kind ?? '',
    model: p?.agent.model ?? '',
    command: p?.agent.command ?? '',
    forgeKind: p?.forge.kind ?? '',
    tokenSecret: p?.forge.tokenSecret ?? '',
    apiUrl: p?.forge.apiUrl ?? '',
  };
}

/**
 * The body create takes, or the PATCH that makes the project look like the form: an emptied
 * field is null there (back to the repository's file or the default), as the API's JSON
 * merge patch reads it.
 */
export function projectBody(f: Fields, editing: Project | undefined): Record<string, unknown> {
  const v = (s: string) => (s.trim() ? s.trim() : editing ? null : undefined);
  // Limits are one object the API takes whole (no null inside): both emptied clears it.
  const cpus = f.cpus.trim() ? Number(f.cpus) : undefined;
  const memory = f.memory.trim() || undefined;
  const work = {
    image: v(f.image),
    setup: lines(f.setup).length ? lines(f.setup) : editing ? null : undefined,
    check: v(f.check),
    limits: cpus === undefined && memory === undefined ? (editing ? null : undefined) : { ...(cpus !== undefined && { cpus }), ...(memory !== undefined && { memory }) },
    allowDomains: words(f.allowDomains).length ? words(f.allowDomains) : editing ? null : undefined,
  };
  const agent = { kind: f.agentKind || (editing ? null : undefined), model: v(f.model), command: f.agentKind === 'command' ? v(f.command) : editing ? null : undefined };
  const forge = { kind: f.forgeKind || (editing ? null : undefined), tokenSecret: v(f.tokenSecret), apiUrl: v(f.apiUrl) };
  const defined = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([, x]) => x !== undefined));
  return defined({
    name: editing && f.name === editing.name ? undefined : f.name.trim(),
    repoUrl: editing && f.repoUrl.trim() === (editing.repoUrl ?? '') ? undefined : f.repoUrl.trim(),
    defaultBranch: f.defaultBranch.trim() || undefined,
    secrets: words(f.secrets),
    work: defined(work),
    agent: defined(agent),
    forge: defined(forge),
  });
}

/**
 * Every setting a project has, for a new one or to change one: the repository, its
 * secrets, how to work on it (image, setup, check, limits, allowed domains; these override
 * its berth.yaml or devcontainer.json), the agent and model its tasks use, and its forge.
 */
export function ProjectForm({ project, onDone, onCancel }: { project?: Project | undefined; onDone: (p: Project) => void; onCancel?: () => void }) {
  const { org, announce } = useSession();
  const { fields: f, set, reset } = useForm(() => fieldsOf(project));
  const [error, setError] = useState<Error>();
  const [busy, setBusy] = useState(false);
  const id = project ? `edit-${project.id}` : 'new-project';
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const body = projectBody(f, project);
      // One limit emptied while the other stays: the merge patch would keep the old one, so the limits are cleared first.
      const had = project?.work.limits;
      if (project && had && ((had.cpus !== undefined && !f.cpus.trim()) || (had.memory !== undefined && !f.memory.trim())) && (f.cpus.trim() || f.memory.trim())) {
        await api('PATCH', orgPath(org.name, `projects/${encodeURIComponent(project.name)}`), { work: { limits: null } });
      }
      const saved = project
        ? await api<Project>('PATCH', orgPath(org.name, `projects/${encodeURIComponent(project.name)}`), body)
        : await api<Project>('POST', orgPath(org.name, 'projects'), body);
      announce(`project ${saved.name}: ${project ? 'saved' : 'created'}`);
      if (!project) reset(fieldsOf(undefined));
      onDone(saved);
    } catch (err) {
      setError(err as Error);
    } finally {
      setBusy(false);
    }
  };
  const input = (k: keyof Fields, label: string, extra: Record<string, unknown> = {}) => (
    <label>{label}<input id={`${id}-${k}`} value={f[k]} onChange={set(k)} {...extra} /></label>
  );
  return (
    <form className="project-form" aria-label={project ? `Edit project ${project.name}` : 'Create a project'} onSubmit={(e) => void submit(e)} aria-busy={busy || undefined}>
      <fieldset>
        <legend>Repository</legend>
        <div className="inline">
          {input('name', 'Name', { required: true, pattern: '[a-z0-9][a-z0-9._\\-]{0,62}' })}
          {input('repoUrl', 'Repository URL', { required: true, placeholder: 'https://…/repo.git', size: 36 })}
          {input('defaultBranch', 'Default branch', { size: 10 })}
          {input('secrets', 'Secrets (names)', { placeholder: 'GIT_TOKEN, NPM_TOKEN' })}
        </div>
      </fieldset>
      <fieldset>
        <legend>Environment <span className="muted small">(overrides the repository's berth.yaml or devcontainer.json; empty: theirs)</span></legend>
        <div className="inline">
          {input('image', 'Image', { placeholder: 'the default image' })}
          {input('check', 'Check command', { placeholder: 'npm test', size: 24 })}
          {input('cpus', 'CPUs', { inputMode: 'decimal', size: 5 })}
          {input('memory', 'Memory', { placeholder: '4gb', size: 7, pattern: '[0-9]+(\\.[0-9]+)? *[kmgtKMGT][iI]?[bB]?', title: 'a size such as 512mb or 4gb' })}
          {input('allowDomains', 'Allowed domains', { placeholder: 'registry.npmjs.org, *.example.com', size: 30 })}
        </div>
        <label className="block">Setup commands (one a line)<textarea id={`${id}-setup`} value={f.setup} onChange={set('setup')} rows={2} placeholder="npm ci" /></label>
      </fieldset>
      <fieldset>
        <legend>Agent</legend>
        <div className="inline">
          <div className="pick">
            <label htmlFor={`${id}-agentKind`}>Agent</label>
            <select id={`${id}-agentKind`} value={f.agentKind} onChange={set('agentKind')}>
              <option value="">default (built-in)</option>
              <option value="builtin">built-in</option>
              <option value="command">a command</option>
            </select>
          </div>
          {input('model', 'Model', { placeholder: "the org's default" })}
          {f.agentKind === 'command' && input('command', 'Agent command', { placeholder: 'aider --yes …', size: 30, required: true })}
        </div>
      </fieldset>
      <fieldset>
        <legend>Forge</legend>
        <div className="inline">
          <div className="pick">
            <label htmlFor={`${id}-forgeKind`}>Forge</label>
            <select id={`${id}-forgeKind`} value={f.forgeKind} onChange={set('forgeKind')}>
              <ForgeKindOptions from="from the URL" />
            </select>
          </div>
          {input('tokenSecret', 'Token secret', { placeholder: 'GIT_TOKEN' })}
          {input('apiUrl', 'API URL', { placeholder: 'https://github.example.com/api/v3', size: 30 })}
        </div>
      </fieldset>
      <ErrorNote error={error} />
      <div className="actions">
        <button type="submit" className="primary" disabled={busy}>{project ? 'Save project' : 'Create project'}</button>
        {onCancel && <button type="button" onClick={onCancel}>Cancel</button>}
      </div>
    </form>
  );
}
