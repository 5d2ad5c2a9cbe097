// The environment a project's tasks would get, as `berth project show` prints it: the
// repository's berth.yaml or devcontainer.json (and compose file) on its default branch, with
// the project's settings on top, each field with where it came from. The repository is read
// from a fresh shallow clone on the host, made the way the task pipeline makes its clone (the
// same reach rules and forge credentials), into a temporary directory removed afterwards:
// always the branch as it is now, at the cost of one clone of one commit per call.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cloneRepo, forgeFor, type ForgeAuth, type ForgeSettings, type RepoAccess } from '../../forges/index.ts';
import { BerthError, invalid, unavailable } from '../../shared/errors.ts';
import type { ProjectRow } from '../db/index.ts';
import type { SecretService } from '../secrets/service.ts';
import { mergeSpec, readRepoSpec, SPEC_FIELDS, type WorkSpec } from './repo-config.ts';

export interface ResolvedProjectSpec {
  branch: string;
  commit: string;
  /** The file the repository's spec came from, or null when it has none. */
  file: 'berth.yaml' | 'devcontainer.json' | null;
  spec: Omit<WorkSpec, 'sources' | 'source' | 'notes'>;
  /** Each field's source: a file (and compose service), "project setting" or "Berth default". */
  sources: Record<string, string>;
  /** What the repository asks for that Berth does not do. */
  notes: string[];
}

export async function resolveProjectSpec(
  deps: { repos: RepoAccess; secrets: SecretService },
  project: ProjectRow,
  signal?: AbortSignal,
  /** Called with the clone and the merged spec before the clone is removed (`berth project check` builds from it). */
  inCheckout?: (repoDir: string, spec: WorkSpec) => Promise<void>,
): Promise<ResolvedProjectSpec> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-spec-'));
  try {
    const repoDir = join(dir, 'repo');
    const cloned = await cloneProject(deps, project, repoDir, { depth: 1, signal });
    const repo = await readRepoSpec(repoDir);
    const merged = mergeSpec(repo, project.settings.work ?? {});
    await inCheckout?.(repoDir, merged);
    const { sources, source: _source, notes, ...spec } = merged;
    const ordered: Record<string, string> = {};
    for (const f of SPEC_FIELDS) ordered[f] = sources[f] ?? 'Berth default';
    return { branch: cloned.branch, commit: cloned.baseSha, file: repo?.source === 'berth.yaml' || repo?.source === 'devcontainer.json' ? repo.source : null, spec, sources: ordered, notes };
  } finally {
    await rm(dir, { recursive: true, force: true }).catch(() => {});
  }
}

/**
 * Clones the project's default branch into `dir` on the host, with the project's forge
 * credentials and the same reach rules as the task pipeline; `depth` 1 for one commit. Returns
 * the credentials' secret values too, so a caller can redact them from what it records.
 */
export async function cloneProject(deps: { repos: RepoAccess; secrets: SecretService }, project: ProjectRow, dir: string, o: { depth?: number; signal?: AbortSignal | undefined } = {}): Promise<{ branch: string; baseSha: string; secrets: string[] }> {
  if (!project.repo_url) throw invalid(`project '${project.name}' has no repository: set one with \`berth project update ${project.name} --repo URL\``);
  const settings: ForgeSettings = project.settings.forge ?? {};
  let reach;
  try {
    if (settings.apiUrl) await deps.repos.reachApi(settings.apiUrl);
    reach = await deps.repos.reach(project.repo_url);
  } catch (e) {
    throw unavailable(`the repository cannot be reached from this server: ${(e as Error).message}`);
  }
  const deployKey = settings.deployKeySecret ? await secretNamed(deps.secrets, project, settings.deployKeySecret) : null;
  const forge = forgeFor(project.repo_url, settings, await forgeAuth(deps.secrets, project, settings), deployKey);
  const credentials = await forge.gitCredentials();
  const cloned = await cloneRepo({ url: project.repo_url, reach, dir, branch: project.default_branch, credentials, signal: o.signal, ...(o.depth && { depth: o.depth }) });
  return { branch: cloned.branch, baseSha: cloned.baseSha, secrets: credentials.secrets };
}

/** The forge credentials the project's settings name, as the task pipeline finds them. */
async function secretNamed(secrets: SecretService, project: ProjectRow, name: string): Promise<string> {
  const found = await secrets.forgeSecret(project.org_id, project.id, name);
  if (found === null) throw new BerthError('invalid', `the project's forge settings name secret '${name}', which does not exist: \`berth secret set ${name}\``);
  return found;
}

async function forgeAuth(secrets: SecretService, project: ProjectRow, settings: ForgeSettings): Promise<ForgeAuth> {
  const byName = (name: string) => secretNamed(secrets, project, name);
  if (settings.app) return { app: { appId: settings.app.appId, installationId: settings.app.installationId, privateKey: await byName(settings.app.privateKeySecret) } };
  if (settings.tokenSecret) return { token: await byName(settings.tokenSecret) };
  return null;
}
