import { useEffect, useState, type FormEvent } from 'react';
import { api, ApiError, can, orgPath, type Task } from '../api.ts';
import { navigate, useLocation } from '../router.tsx';
import { useSession } from '../session.ts';
import { usePoll } from '../util.ts';
import { ErrorNote, Field } from './common.tsx';

interface Project {
  name: string;
  repoUrl: string | null;
  defaultBranch: string;
  agent: { kind?: 'builtin' | 'command'; model?: string; command?: string };
}

export function NewTaskPage() {
  const { org } = useSession();
  const { query } = useLocation();
  const projects = usePoll((signal) => api<{ items: Project[] }>('GET', orgPath(org.name, 'projects'), undefined, signal), null, [org.name]);
  const [source, setSource] = useState<'project' | 'repo'>('project');
  const [project, setProject] = useState(query.get('project') ?? '');
  const [repo, setRepo] = useState(query.get('repo') ?? '');
  const [goal, setGoal] = useState(query.get('goal') ?? '');
  const [agent, setAgent] = useState<'builtin' | 'command'>('builtin');
  const [command, setCommand] = useState('');
  const [model, setModel] = useState('');
  const [maxSteps, setMaxSteps] = useState('');
  const [maxCost, setMaxCost] = useState('');
  const [timeout, setTimeoutValue] = useState('');
  const [error, setError] = useState<ApiError | Error>();
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    const items = projects.data?.items;
    if (!items) return;
    if (items.length === 0) setSource('repo');
    else if (!project && !query.get('repo')) setProject(items[0]!.name);
    else if (query.get('repo')) setSource('repo');
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [projects.data]);

  const chosen = projects.data?.items.find((p) => p.name === project);
  if (!can.createTask(org.role)) return <p>Your role in {org.name} is {org.role}: it cannot start tasks.</p>;

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    const budget: Record<string, unknown> = {};
    if (maxSteps) budget.maxSteps = Number(maxSteps);
    if (maxCost) budget.maxCostUsd = Number(maxCost);
    if (timeout) budget.timeout = timeout;
    try {
      const task = await api<Task>('POST', orgPath(org.name, 'tasks'), {
        goal,
        ...(source === 'project' ? { project } : { repo: repo.trim() }),
        agent,
        ...(agent === 'command' ? { command } : {}),
        ...(model.trim() ? { model: model.trim() } : {}),
        ...(Object.keys(budget).length ? { budget } : {}),
        trigger: 'web',
      });
      navigate(`/tasks/${task.id}`);
    } catch (err) {
      setError(err as Error);
      setBusy(false);
    }
  };
  const fieldError = (name: string) => (error instanceof ApiError && error.field?.includes(name) ? error.message : undefined);

  return (
    <>
      <h1>New task</h1>
      <form className="stack" onSubmit={submit}>
        <fieldset>
          <legend>Repository</legend>
          <label className="check">
            <input type="radio" name="source" checked={source === 'project'} onChange={() => setSource('project')} disabled={!projects.data?.items.length} /> A project
          </label>
          <label className="check">
            <input type="radio" name="source" checked={source === 'repo'} onChange={() => setSource('repo')} /> A repository URL or path
          </label>
          {source === 'project' ? (
            <Field id="project" label="Project" hint={chosen?.repoUrl ? `${chosen.repoUrl} (${chosen.defaultBranch})` : undefined}>
              <select id="project" value={project} onChange={(e) => setProject(e.target.value)} required>
                {projects.data?.items.map((p) => <option key={p.name} value={p.name}>{p.name}</option>)}
              </select>
            </Field>
          ) : (
            <Field id="repo" label="Repository" hint="An https or ssh URL, or an absolute path on the runner.">
              <input id="repo" value={repo} onChange={(e) => setRepo(e.target.value)} required placeholder="https://github.com/acme/app.git" aria-invalid={fieldError('repo') ? true : undefined} />
            </Field>
          )}
        </fieldset>
        <Field id="goal" label="Goal" hint="What should be true when the agent is done. Tests to run, files to touch, constraints.">
          <textarea id="goal" rows={6} value={goal} onChange={(e) => setGoal(e.target.value)} required aria-invalid={fieldError('goal') ? true : undefined} />
        </Field>
        <div className="row">
          <Field id="agent" label="Agent">
            <select id="agent" value={agent} onChange={(e) => setAgent(e.target.value as 'builtin' | 'command')}>
              <option value="builtin">Built-in agent</option>
              <option value="command">A command (Claude Code, Codex, aider…)</option>
            </select>
          </Field>
          <Field id="model" label="Model" hint={chosen?.agent.model ? `Project default: ${chosen.agent.model}` : 'Empty: the server default.'}>
            <input id="model" value={model} onChange={(e) => setModel(e.target.value)} list="models" placeholder={chosen?.agent.model ?? ''} />
          </Field>
          <datalist id="models">
            {['gpt-4o-mini', 'gpt-4.1', 'o4-mini', 'claude-sonnet-4-5', 'claude-opus-4-1'].map((m) => <option key={m} value={m} />)}
          </datalist>
        </div>
        {agent === 'command' && (
          <Field id="command" label="Command" hint="Runs inside the environment; it reaches models through Berth's gateway.">
            <input id="command" value={command} onChange={(e) => setCommand(e.target.value)} required />
          </Field>
        )}
        <fieldset>
          <legend>Budget</legend>
          <div className="row">
            <Field id="max-steps" label="Max steps" hint="Model round trips (default 50).">
              <input id="max-steps" type="number" min={1} max={10000} value={maxSteps} onChange={(e) => setMaxSteps(e.target.value)} />
            </Field>
            <Field id="max-cost" label="Max cost (USD)">
              <input id="max-cost" type="number" min={0.01} step={0.01} value={maxCost} onChange={(e) => setMaxCost(e.target.value)} />
            </Field>
            <Field id="timeout" label="Timeout" hint="Such as 30m (default 60m).">
              <input id="timeout" value={timeout} onChange={(e) => setTimeoutValue(e.target.value)} pattern="[0-9]+[smhd]?" />
            </Field>
          </div>
        </fieldset>
        <ErrorNote error={error} />
        <div>
          <button className="primary" type="submit" disabled={busy}>{busy ? 'Starting…' : 'Start task'}</button>
        </div>
      </form>
    </>
  );
}
