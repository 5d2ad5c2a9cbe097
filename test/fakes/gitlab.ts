// A GitLab for tests: the REST API v4 endpoints Berth calls, with GitLab's shapes and errors,
// and git's smart HTTP for the same projects, on loopback. Projects are addressed as GitLab
// does: by URL-encoded path (`group%2Fproject`) or numeric id. The API takes `PRIVATE-TOKEN`
// (or `Authorization: Bearer`); git takes Basic `oauth2:<token>`.
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closeServer, createBareRepo, listen, readJson, refSha, sendJson, serveGit, type GitRequestRecord } from './git-server.ts';

export interface MergeRequestRecord {
  iid: number;
  /** `group/project`. */
  project: string;
  title: string;
  description: string | null;
  sourceBranch: string;
  targetBranch: string;
  draft: boolean;
  webUrl: string;
  /** The token that opened it. */
  token: string;
}

export interface FakeGitLab {
  /** `http://127.0.0.1:PORT`. */
  url: string;
  /** `${url}/api/v4`. */
  apiUrl: string;
  root: string;
  /** The clone URL of `group/project`. */
  repoUrl(path: string): string;
  createRepo(path: string, files: Record<string, string | Buffer>, defaultBranch?: string): Promise<{ path: string; sha: string }>;
  mergeRequests: MergeRequestRecord[];
  /** Every API request: method, path and whether its token was accepted. */
  apiRequests: { method: string; path: string; auth: 'accepted' | 'refused' | 'none' }[];
  gitRequests: GitRequestRecord[];
  /** Stops the server; removes `root` if the server made it. */
  close(): Promise<void>;
}

interface Project {
  id: number;
  path: string;
  defaultBranch: string;
}

/** GitLab's own rule for what makes a merge request title a draft. */
const DRAFT_TITLE = /^\s*(\[draft\]|\(draft\)|draft:|draft\s-\s|draft\s)/i;

export async function startFakeGitLab(o: { tokens: string[]; root?: string }): Promise<FakeGitLab> {
  const ownRoot = o.root === undefined;
  const root = o.root ?? (await mkdtemp(join(tmpdir(), 'berth-fake-gitlab-')));
  const tokens = new Set(o.tokens);
  const projects = new Map<string, Project>();
  const mergeRequests: MergeRequestRecord[] = [];
  const apiRequests: FakeGitLab['apiRequests'] = [];
  const gitRequests: GitRequestRecord[] = [];
  let url = '';

  const git = {
    root,
    records: gitRequests,
    authorize: (header: string | undefined, repo: string) => {
      const basic = /^Basic (.+)$/i.exec(header ?? '')?.[1];
      if (!basic || !projects.has(repo.replace(/\.git$/, ''))) return false;
      const decoded = Buffer.from(basic, 'base64').toString('utf8');
      return decoded.startsWith('oauth2:') && tokens.has(decoded.slice('oauth2:'.length));
    },
  };

  async function api(req: IncomingMessage, res: ServerResponse, rawPath: string): Promise<void> {
    const method = req.method ?? 'GET';
    const token = (req.headers['private-token'] as string | undefined) ?? /^Bearer (.+)$/i.exec(req.headers.authorization ?? '')?.[1];
    // Split before decoding: a project path arrives as one URL-encoded segment.
    const segments = rawPath.split('/').filter((s) => s !== '').map(decodeURIComponent);
    const record: FakeGitLab['apiRequests'][number] = { method, path: segments.join('/'), auth: token === undefined ? 'none' : 'refused' };
    apiRequests.push(record);
    if (token === undefined || !tokens.has(token)) return sendJson(res, 401, { message: '401 Unauthorized' });
    record.auth = 'accepted';

    const [collection, id, sub] = segments;
    if (collection !== 'projects' || id === undefined) return sendJson(res, 404, { error: '404 Not Found' });
    const project = /^\d+$/.test(id) ? [...projects.values()].find((p) => p.id === Number(id)) : projects.get(id);
    if (!project) return sendJson(res, 404, { message: '404 Project Not Found' });

    if (sub === undefined && method === 'GET') {
      return sendJson(res, 200, {
        id: project.id,
        path_with_namespace: project.path,
        default_branch: project.defaultBranch,
        web_url: `${url}/${project.path}`,
        http_url_to_repo: `${url}/${project.path}.git`,
      });
    }
    if (sub === 'merge_requests' && segments.length === 3 && method === 'POST') {
      const body = (await readJson(req)) as { source_branch?: unknown; target_branch?: unknown; title?: unknown; description?: unknown } | undefined;
      for (const field of ['source_branch', 'target_branch', 'title'] as const) {
        if (typeof body?.[field] !== 'string' || body[field] === '') return sendJson(res, 400, { error: `${field} is missing` });
      }
      const source = String(body!.source_branch);
      const target = String(body!.target_branch);
      const bare = join(root, `${project.path}.git`);
      if (!(await refSha(bare, `refs/heads/${source}`))) return sendJson(res, 422, { message: [`Source branch "${source}" does not exist`] });
      if (!(await refSha(bare, `refs/heads/${target}`))) return sendJson(res, 422, { message: [`Target branch "${target}" does not exist`] });
      const existing = mergeRequests.find((m) => m.project === project.path && m.sourceBranch === source && m.targetBranch === target);
      if (existing) return sendJson(res, 409, { message: [`Another open merge request already exists for this source branch: !${existing.iid}`] });
      const iid = mergeRequests.filter((m) => m.project === project.path).length + 1;
      const title = String(body!.title);
      const mr: MergeRequestRecord = {
        iid,
        project: project.path,
        title,
        description: typeof body!.description === 'string' ? body!.description : null,
        sourceBranch: source,
        targetBranch: target,
        draft: DRAFT_TITLE.test(title),
        webUrl: `${url}/${project.path}/-/merge_requests/${iid}`,
        token,
      };
      mergeRequests.push(mr);
      return sendJson(res, 201, {
        id: 5000 + mergeRequests.length,
        iid,
        project_id: project.id,
        title,
        description: mr.description,
        state: 'opened',
        draft: mr.draft,
        work_in_progress: mr.draft,
        source_branch: source,
        target_branch: target,
        web_url: mr.webUrl,
        merge_status: 'checking',
      });
    }
    return sendJson(res, 404, { error: '404 Not Found' });
  }

  const server = createServer((req, res) => {
    const raw = (req.url ?? '/').split('?')[0] ?? '/';
    if (raw.startsWith('/api/v4/')) {
      api(req, res, raw.slice('/api/v4'.length)).catch((e: unknown) => sendJson(res, 500, { message: String(e) }));
      return;
    }
    const parsed = new URL(req.url ?? '/', 'http://x');
    const path = decodeURIComponent(parsed.pathname);
    if (/^\/.+\.git\//.test(path)) return serveGit(git, req, res, path, parsed.search.replace(/^\?/, ''));
    sendJson(res, 404, { error: '404 Not Found' });
  });
  const port = await listen(server);
  url = `http://127.0.0.1:${port}`;

  return {
    url,
    apiUrl: `${url}/api/v4`,
    root,
    repoUrl: (path) => `${url}/${path}.git`,
    async createRepo(path, files, defaultBranch = 'main') {
      const created = await createBareRepo({ root, name: `${path}.git`, files, branch: defaultBranch });
      projects.set(path, { id: projects.size + 1, path, defaultBranch });
      return created;
    },
    mergeRequests,
    apiRequests,
    gitRequests,
    async close() {
      await closeServer(server);
      if (ownRoot) await rm(root, { recursive: true, force: true });
    },
  };
}
