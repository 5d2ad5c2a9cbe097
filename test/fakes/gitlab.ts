// A GitLab for tests: the REST API v4 endpoints Berth calls, with GitLab's shapes and errors,
// git's smart HTTP for the same projects, and webhook deliveries as GitLab sends them, on
// loopback. Projects are addressed as GitLab does: by URL-encoded path (`group%2Fproject`) or
// numeric id. The API takes `PRIVATE-TOKEN` (or `Authorization: Bearer`); git takes Basic
// `oauth2:<token>`. Every token belongs to a user (the ones given at start to `root`), who
// is the author of what it writes and the only one who may edit that.
import { randomUUID } from 'node:crypto';
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
  /** Opened from a fork: its source branch is the fork's, not this project's. */
  fromFork: boolean;
  draft: boolean;
  webUrl: string;
  /** The token that opened it. */
  token: string;
  /** opened, merged or closed, as GET …/merge_requests/IID says. */
  state: 'opened' | 'merged' | 'closed';
  /** Its head pipeline's status (success, failed, running, …); null: none ran. */
  pipeline: string | null;
  /** Usernames that approved it. */
  approvedBy: string[];
  /** Reviewers and what each said (GitLab 17: unreviewed, reviewed, requested_changes, approved). */
  reviewers: { username: string; state: 'unreviewed' | 'reviewed' | 'requested_changes' | 'approved' }[];
}

export interface FakeGitLabUser {
  id: number;
  username: string;
  name: string;
}

export interface IssueRecord {
  id: number;
  iid: number;
  /** `group/project`. */
  project: string;
  title: string;
  description: string;
  author: FakeGitLabUser;
  labels: string[];
  assignees: FakeGitLabUser[];
  webUrl: string;
}

export interface NoteRecord {
  id: number;
  /** `group/project`. */
  project: string;
  on: { type: 'Issue' | 'MergeRequest'; iid: number };
  body: string;
  author: FakeGitLabUser;
  system: boolean;
  /** Every body it had, first to last (an edit appends). */
  history: string[];
}

/** GitLab's access levels (members API `access_level`). */
export const ACCESS = { guest: 10, reporter: 20, developer: 30, maintainer: 40, owner: 50 } as const;

export interface FakeGitLab {
  /** `http://127.0.0.1:PORT`. */
  url: string;
  /** `${url}/api/v4`. */
  apiUrl: string;
  root: string;
  /** The clone URL of `group/project`. */
  repoUrl(path: string): string;
  createRepo(path: string, files: Record<string, string | Buffer>, defaultBranch?: string): Promise<{ path: string; sha: string }>;
  /** The user every token given at start belongs to. */
  rootUser: FakeGitLabUser;
  /** A user; with `token`, that token is accepted from now on and acts as them. */
  addUser(username: string, o?: { token?: string }): FakeGitLabUser;
  /** Makes `user` a member of `path` at `level` (ACCESS); null removes them. */
  setAccess(path: string, user: FakeGitLabUser, level: number | null): void;
  createIssue(path: string, o: { title: string; description?: string; author: FakeGitLabUser; labels?: string[]; assignees?: FakeGitLabUser[] }): IssueRecord;
  /** A note written on GitLab (not through the API: no request is recorded). */
  addNote(path: string, on: NoteRecord['on'], body: string, author: FakeGitLabUser, o?: { system?: boolean }): NoteRecord;
  /** A merge request opened on GitLab by someone (not through the API). */
  addMergeRequest(path: string, o: { sourceBranch: string; targetBranch?: string; title: string; author: FakeGitLabUser; fromFork?: boolean }): MergeRequestRecord;
  /** Changes a merge request as GitLab's web UI would: merged or closed, its pipeline's status, approvals, reviewers. */
  updateMergeRequest(path: string, iid: number, o: Partial<Pick<MergeRequestRecord, 'state' | 'pipeline' | 'approvedBy' | 'reviewers'>>): MergeRequestRecord;
  /** The next merge request opened on `path` through the API is made, but its answer is a 502 (lost on the way). */
  loseNextMergeRequestAnswer(path: string): void;
  mergeRequests: MergeRequestRecord[];
  issues: IssueRecord[];
  notes: NoteRecord[];
  /** The payload of an Issue Hook as GitLab sends it: `user` did `action`; `changes` as GitLab words them. */
  issueHook(issue: IssueRecord, user: FakeGitLabUser, o: { action: 'open' | 'update' | 'close' | 'reopen'; previousLabels?: string[]; previousAssignees?: FakeGitLabUser[] }): Record<string, unknown>;
  /** The payload of a Note Hook for `note` (on an issue or a merge request). */
  noteHook(note: NoteRecord): Record<string, unknown>;
  /** The payload of a Push Hook: `user` moved `ref` of `path` from `before` to `after` (all zeros: deleted). */
  pushHook(path: string, user: FakeGitLabUser, o: { ref: string; before: string; after: string }): Record<string, unknown>;
  /** POSTs a payload to `url` with GitLab's headers: the event name, the secret token, the event UUID, the idempotency key. */
  deliver(url: string, payload: Record<string, unknown> | string, o?: { token?: string | null; uuid?: string | null; idempotencyKey?: string | null; event?: string }): Promise<{ status: number; body: any; uuid: string | null }>;
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
  members: Map<number, number>;
}

/** GitLab's own rule for what makes a merge request title a draft. */
const DRAFT_TITLE = /^\s*(\[draft\]|\(draft\)|draft:|draft\s-\s|draft\s)/i;
const AT = '2026-01-05T10:00:00.000Z';

export async function startFakeGitLab(o: { tokens: string[]; root?: string }): Promise<FakeGitLab> {
  const ownRoot = o.root === undefined;
  const root = o.root ?? (await mkdtemp(join(tmpdir(), 'berth-fake-gitlab-')));
  const rootUser: FakeGitLabUser = { id: 1, username: 'root', name: 'Administrator' };
  const users: FakeGitLabUser[] = [rootUser];
  /** token → the user it acts as. */
  const tokens = new Map<string, FakeGitLabUser>(o.tokens.map((t) => [t, rootUser]));
  const projects = new Map<string, Project>();
  const mergeRequests: MergeRequestRecord[] = [];
  const mrAuthors = new Map<MergeRequestRecord, FakeGitLabUser>();
  const loseMergeRequestAnswers = new Set<string>();
  const issues: IssueRecord[] = [];
  const notes: NoteRecord[] = [];
  const apiRequests: FakeGitLab['apiRequests'] = [];
  const gitRequests: GitRequestRecord[] = [];
  let url = '';
  let ids = 1000;

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

  const projectOf = (path: string): Project => {
    const p = projects.get(path);
    if (!p) throw new Error(`the fake GitLab has no project ${path}`);
    return p;
  };
  const userJson = (u: FakeGitLabUser) => ({ id: u.id, username: u.username, name: u.name, state: 'active', locked: false, avatar_url: null, web_url: `${url}/${u.username}` });
  const issueJson = (i: IssueRecord) => ({
    id: i.id,
    iid: i.iid,
    project_id: projectOf(i.project).id,
    title: i.title,
    description: i.description,
    state: 'opened',
    created_at: AT,
    updated_at: AT,
    closed_at: null,
    closed_by: null,
    labels: i.labels,
    milestone: null,
    assignees: i.assignees.map(userJson),
    author: userJson(i.author),
    type: 'ISSUE',
    assignee: i.assignees[0] ? userJson(i.assignees[0]) : null,
    user_notes_count: notes.filter((n) => n.project === i.project && n.on.type === 'Issue' && n.on.iid === i.iid && !n.system).length,
    upvotes: 0,
    downvotes: 0,
    confidential: false,
    discussion_locked: null,
    issue_type: 'issue',
    web_url: i.webUrl,
    references: { short: `#${i.iid}`, relative: `#${i.iid}`, full: `${i.project}#${i.iid}` },
  });
  const noteJson = (n: NoteRecord) => ({
    id: n.id,
    type: null,
    body: n.body,
    attachment: null,
    author: userJson(n.author),
    created_at: AT,
    updated_at: AT,
    system: n.system,
    noteable_id: n.on.type === 'Issue' ? issues.find((i) => i.project === n.project && i.iid === n.on.iid)?.id : 5000 + n.on.iid,
    noteable_type: n.on.type,
    project_id: projectOf(n.project).id,
    resolvable: false,
    confidential: false,
    internal: false,
    noteable_iid: n.on.iid,
  });
  const note = (path: string, on: NoteRecord['on'], body: string, author: FakeGitLabUser, system = false): NoteRecord => {
    const n: NoteRecord = { id: ++ids, project: path, on, body, author, system, history: [body] };
    notes.push(n);
    return n;
  };

  async function api(req: IncomingMessage, res: ServerResponse, rawPath: string, query: URLSearchParams): Promise<void> {
    const method = req.method ?? 'GET';
    const token = (req.headers['private-token'] as string | undefined) ?? /^Bearer (.+)$/i.exec(req.headers.authorization ?? '')?.[1];
    // Split before decoding: a project path arrives as one URL-encoded segment.
    const segments = rawPath.split('/').filter((s) => s !== '').map(decodeURIComponent);
    const record: FakeGitLab['apiRequests'][number] = { method, path: segments.join('/'), auth: token === undefined ? 'none' : 'refused' };
    apiRequests.push(record);
    const caller = token === undefined ? undefined : tokens.get(token);
    if (token === undefined || !caller) return sendJson(res, 401, { message: '401 Unauthorized' });
    record.auth = 'accepted';

    if (segments.length === 1 && segments[0] === 'user' && method === 'GET') return sendJson(res, 200, { ...userJson(caller), email: `${caller.username}@example.com`, bot: false });

    const [collection, id, sub, subId, leaf, leafId] = segments;
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
    // GET /projects/:id/members/all/:user_id: direct or inherited membership.
    if (sub === 'members' && subId === 'all' && leaf !== undefined && segments.length === 5 && method === 'GET') {
      const user = users.find((u) => u.id === Number(leaf));
      const level = user ? project.members.get(user.id) : undefined;
      if (!user || level === undefined) return sendJson(res, 404, { message: '404 Not found' });
      return sendJson(res, 200, { ...userJson(user), created_at: AT, expires_at: null, access_level: level, group_saml_identity: null, membership_state: 'active' });
    }
    if (sub === 'issues' && subId !== undefined) {
      const issue = issues.find((i) => i.project === project.path && i.iid === Number(subId));
      if (!issue) return sendJson(res, 404, { message: '404 Issue Not Found' });
      if (leaf === undefined && method === 'GET') return sendJson(res, 200, issueJson(issue));
      if (leaf === 'notes') return notesApi(req, res, method, query, project, { type: 'Issue', iid: issue.iid }, leafId, caller);
    }
    if (sub === 'merge_requests' && subId !== undefined && leaf === 'notes') {
      const mr = mergeRequests.find((m) => m.project === project.path && m.iid === Number(subId));
      if (!mr) return sendJson(res, 404, { message: '404 Merge Request Not Found' });
      return notesApi(req, res, method, query, project, { type: 'MergeRequest', iid: mr.iid }, leafId, caller);
    }
    if (sub === 'merge_requests' && subId !== undefined && segments.length <= 5) {
      const mr = mergeRequests.find((m) => m.project === project.path && m.iid === Number(subId));
      if (!mr) return sendJson(res, 404, { message: '404 Not found' });
      if (leaf === undefined && method === 'GET') return sendJson(res, 200, mergeRequestJson(project, mr));
      // PUT: the title (a Draft: prefix makes or unmakes a draft), the description, state_event close/reopen.
      if (leaf === undefined && method === 'PUT') {
        const body = (await readJson(req)) as { title?: unknown; description?: unknown; state_event?: unknown } | undefined;
        if (body?.title !== undefined) {
          if (typeof body.title !== 'string' || body.title.trim() === '') return sendJson(res, 400, { message: { title: ["can't be blank"] } });
          mr.title = body.title;
          mr.draft = DRAFT_TITLE.test(mr.title);
        }
        if (typeof body?.description === 'string') mr.description = body.description;
        if (body?.state_event === 'close' && mr.state === 'opened') mr.state = 'closed';
        if (body?.state_event === 'reopen' && mr.state === 'closed') mr.state = 'opened';
        return sendJson(res, 200, mergeRequestJson(project, mr));
      }
      if (leaf === 'approvals' && method === 'GET') {
        const by = mr.approvedBy.map((username) => users.find((u) => u.username === username) ?? { id: 0, username, name: username });
        return sendJson(res, 200, { id: 5000 + mr.iid, iid: mr.iid, project_id: project.id, state: mr.state, approved: by.length > 0, approvals_required: 0, approvals_left: 0, approved_by: by.map((u) => ({ user: userJson(u) })) });
      }
      if (leaf === 'reviewers' && method === 'GET') {
        return sendJson(res, 200, mr.reviewers.map((r) => ({ user: userJson(users.find((u) => u.username === r.username) ?? { id: 0, username: r.username, name: r.username }), state: r.state, created_at: AT })));
      }
    }
    // GET /projects/:id/merge_requests: those targeting this project (from forks too), newest first, paginated.
    if (sub === 'merge_requests' && segments.length === 3 && method === 'GET') {
      const state = query.get('state') ?? 'all';
      if (!['opened', 'closed', 'locked', 'merged', 'all'].includes(state)) return sendJson(res, 400, { error: 'state does not have a valid value' });
      const source = query.get('source_branch');
      const target = query.get('target_branch');
      const matching = mergeRequests.filter((m) => m.project === project.path && (state === 'all' || m.state === state) && (source === null || m.sourceBranch === source) && (target === null || m.targetBranch === target));
      const ordered = query.get('sort') === 'asc' ? matching : [...matching].reverse();
      const perPage = Math.min(100, Math.max(1, Number(query.get('per_page') ?? 20) || 20));
      const page = Math.max(1, Number(query.get('page') ?? 1) || 1);
      const slice = ordered.slice((page - 1) * perPage, page * perPage);
      const headers: Record<string, string> = { 'x-total': String(matching.length), 'x-total-pages': String(Math.max(1, Math.ceil(matching.length / perPage))), 'x-page': String(page), 'x-per-page': String(perPage) };
      if (page * perPage < matching.length) headers['x-next-page'] = String(page + 1);
      const bare = join(root, `${project.path}.git`);
      const items = [];
      for (const mr of slice) items.push(mergeRequestListJson(project, mr, mr.fromFork ? null : await refSha(bare, `refs/heads/${mr.sourceBranch}`)));
      return sendJson(res, 200, items, headers);
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
      const existing = mergeRequests.find((m) => m.project === project.path && !m.fromFork && m.sourceBranch === source && m.targetBranch === target && m.state === 'opened');
      if (existing) return sendJson(res, 409, { message: [`Another open merge request already exists for this source branch: !${existing.iid}`] });
      const mr = openMergeRequest(project, { sourceBranch: source, targetBranch: target, title: String(body!.title), description: typeof body!.description === 'string' ? body!.description : null, token, author: caller });
      if (loseMergeRequestAnswers.delete(project.path)) return sendJson(res, 502, { message: '502 Bad Gateway' });
      return sendJson(res, 201, {
        id: 5000 + mr.iid,
        iid: mr.iid,
        project_id: project.id,
        title: mr.title,
        description: mr.description,
        state: 'opened',
        draft: mr.draft,
        work_in_progress: mr.draft,
        source_branch: source,
        target_branch: target,
        author: userJson(caller),
        web_url: mr.webUrl,
        merge_status: 'checking',
      });
    }
    return sendJson(res, 404, { error: '404 Not Found' });
  }

  /** GET (paginated, oldest first with sort=asc), POST and PUT of an issue's or a merge request's notes. */
  async function notesApi(req: IncomingMessage, res: ServerResponse, method: string, query: URLSearchParams, project: Project, on: NoteRecord['on'], noteId: string | undefined, caller: FakeGitLabUser): Promise<void> {
    const mine = notes.filter((n) => n.project === project.path && n.on.type === on.type && n.on.iid === on.iid);
    if (noteId === undefined && method === 'GET') {
      const perPage = Math.min(100, Math.max(1, Number(query.get('per_page') ?? 20) || 20));
      const page = Math.max(1, Number(query.get('page') ?? 1) || 1);
      const ordered = query.get('sort') === 'asc' ? mine : [...mine].reverse();
      const slice = ordered.slice((page - 1) * perPage, page * perPage);
      const headers: Record<string, string> = { 'x-total': String(mine.length), 'x-page': String(page), 'x-per-page': String(perPage) };
      if (page * perPage < mine.length) headers['x-next-page'] = String(page + 1);
      return sendJson(res, 200, slice.map(noteJson), headers);
    }
    if (noteId === undefined && method === 'POST') {
      const body = (await readJson(req)) as { body?: unknown } | undefined;
      if (typeof body?.body !== 'string' || body.body.trim() === '') return sendJson(res, 400, { message: { note: ["can't be blank"] } });
      if (body.body.length > 1_000_000) return sendJson(res, 400, { message: { note: ['is too long (maximum is 1000000 characters)'] } });
      return sendJson(res, 201, noteJson(note(project.path, on, body.body, caller)));
    }
    const existing = mine.find((n) => n.id === Number(noteId));
    if (!existing) return sendJson(res, 404, { message: '404 Note Not Found' });
    if (method === 'GET') return sendJson(res, 200, noteJson(existing));
    if (method === 'PUT') {
      if (existing.author.id !== caller.id) return sendJson(res, 403, { message: '403 Forbidden' });
      const body = (await readJson(req)) as { body?: unknown } | undefined;
      if (typeof body?.body !== 'string' || body.body.trim() === '') return sendJson(res, 400, { message: { note: ["can't be blank"] } });
      existing.body = body.body;
      existing.history.push(body.body);
      return sendJson(res, 200, noteJson(existing));
    }
    return sendJson(res, 405, { message: '405 Method Not Allowed' });
  }

  /** A merge request as GET /projects/:id/merge_requests/:iid answers. */
  function mergeRequestJson(project: Project, mr: MergeRequestRecord): Record<string, unknown> {
    const author = mrAuthors.get(mr) ?? rootUser;
    return {
      id: 5000 + mr.iid,
      iid: mr.iid,
      project_id: project.id,
      title: mr.title,
      description: mr.description,
      state: mr.state,
      draft: mr.draft,
      work_in_progress: mr.draft,
      source_branch: mr.sourceBranch,
      target_branch: mr.targetBranch,
      source_project_id: sourceProjectId(project, mr),
      target_project_id: project.id,
      author: userJson(author),
      web_url: mr.webUrl,
      merged_at: mr.state === 'merged' ? AT : null,
      closed_at: mr.state === 'closed' ? AT : null,
      detailed_merge_status: mr.draft ? 'draft_status' : 'mergeable',
      head_pipeline: mr.pipeline === null ? null : { id: 9000 + mr.iid, iid: mr.iid, project_id: project.id, status: mr.pipeline, source: 'merge_request_event', ref: mr.sourceBranch, web_url: `${url}/${project.path}/-/pipelines/${9000 + mr.iid}` },
    };
  }

  /** A fork's id stands in for the fork (the fake keeps no fork projects). */
  const sourceProjectId = (project: Project, mr: MergeRequestRecord) => (mr.fromFork ? 100_000 + project.id : project.id);

  /** A merge request as GET /projects/:id/merge_requests lists it: no pipeline, the head commit as `sha`. */
  function mergeRequestListJson(project: Project, mr: MergeRequestRecord, sha: string | null): Record<string, unknown> {
    // The single answer's fields, less its pipeline, and what only the list has.
    const { head_pipeline: _pipeline, ...one } = mergeRequestJson(project, mr);
    return {
      ...one,
      created_at: AT,
      updated_at: AT,
      merged_by: null,
      merge_user: null,
      closed_by: null,
      user_notes_count: notes.filter((n) => n.project === mr.project && n.on.type === 'MergeRequest' && n.on.iid === mr.iid && !n.system).length,
      upvotes: 0,
      downvotes: 0,
      assignees: [],
      assignee: null,
      reviewers: mr.reviewers.map((r) => userJson(users.find((u) => u.username === r.username) ?? { id: 0, username: r.username, name: r.username })),
      labels: [],
      milestone: null,
      merge_when_pipeline_succeeds: false,
      merge_status: mr.state === 'opened' ? 'can_be_merged' : 'cannot_be_merged',
      sha,
      merge_commit_sha: null,
      squash_commit_sha: null,
      discussion_locked: null,
      should_remove_source_branch: null,
      force_remove_source_branch: true,
      prepared_at: AT,
      reference: `!${mr.iid}`,
      references: { short: `!${mr.iid}`, relative: `!${mr.iid}`, full: `${mr.project}!${mr.iid}` },
      web_url: mr.webUrl,
      time_stats: { time_estimate: 0, total_time_spent: 0, human_time_estimate: null, human_total_time_spent: null },
      squash: false,
      squash_on_merge: false,
      task_completion_status: { count: 0, completed_count: 0 },
      has_conflicts: false,
      blocking_discussions_resolved: true,
    };
  }

  function openMergeRequest(project: Project, o: { sourceBranch: string; targetBranch: string; title: string; description: string | null; token: string; author: FakeGitLabUser; fromFork?: boolean }): MergeRequestRecord {
    const iid = mergeRequests.filter((m) => m.project === project.path).length + 1;
    const mr: MergeRequestRecord = {
      iid,
      project: project.path,
      title: o.title,
      description: o.description,
      sourceBranch: o.sourceBranch,
      targetBranch: o.targetBranch,
      fromFork: o.fromFork ?? false,
      draft: DRAFT_TITLE.test(o.title),
      webUrl: `${url}/${project.path}/-/merge_requests/${iid}`,
      token: o.token,
      state: 'opened',
      pipeline: null,
      approvedBy: [],
      reviewers: [],
    };
    mergeRequests.push(mr);
    mrAuthors.set(mr, o.author);
    return mr;
  }

  // The `project` object of every hook, as GitLab's documented examples have it.
  const hookProject = (path: string) => {
    const p = projectOf(path);
    const name = path.split('/').at(-1)!;
    return {
      id: p.id,
      name,
      description: null,
      web_url: `${url}/${path}`,
      avatar_url: null,
      git_ssh_url: `git@127.0.0.1:${path}.git`,
      git_http_url: `${url}/${path}.git`,
      namespace: path.split('/')[0],
      visibility_level: 0,
      path_with_namespace: path,
      default_branch: p.defaultBranch,
      ci_config_path: null,
      homepage: `${url}/${path}`,
      url: `git@127.0.0.1:${path}.git`,
      ssh_url: `git@127.0.0.1:${path}.git`,
      http_url: `${url}/${path}.git`,
    };
  };
  const hookUser = (u: FakeGitLabUser) => ({ id: u.id, name: u.name, username: u.username, avatar_url: null, email: '[REDACTED]' });
  const hookRepository = (path: string) => ({ name: path.split('/').at(-1), url: `git@127.0.0.1:${path}.git`, description: null, homepage: `${url}/${path}` });
  const labelId = (title: string) => [...title].reduce((h, c) => (h * 31 + c.charCodeAt(0)) % 100_000, 7);
  const hookLabel = (path: string, title: string) => ({ id: labelId(title), title, color: '#6699cc', project_id: projectOf(path).id, created_at: AT, updated_at: AT, template: false, description: null, type: 'ProjectLabel', group_id: null });
  const hookIssue = (i: IssueRecord) => ({
    id: i.id,
    title: i.title,
    assignee_ids: i.assignees.map((a) => a.id),
    assignee_id: i.assignees[0]?.id ?? null,
    author_id: i.author.id,
    project_id: projectOf(i.project).id,
    created_at: '2026-01-05 10:00:00 UTC',
    updated_at: '2026-01-05 10:00:00 UTC',
    updated_by_id: null,
    last_edited_at: null,
    last_edited_by_id: null,
    relative_position: 0,
    description: i.description,
    milestone_id: null,
    state_id: 1,
    confidential: false,
    discussion_locked: null,
    due_date: null,
    moved_to_id: null,
    duplicated_to_id: null,
    time_estimate: 0,
    total_time_spent: 0,
    time_change: 0,
    human_total_time_spent: null,
    human_time_estimate: null,
    human_time_change: null,
    weight: null,
    health_status: null,
    type: 'Issue',
    iid: i.iid,
    url: i.webUrl,
    state: 'opened',
    severity: 'unknown',
    labels: i.labels.map((l) => hookLabel(i.project, l)),
  });

  const server = createServer((req, res) => {
    const [raw = '/', search = ''] = (req.url ?? '/').split('?');
    if (raw.startsWith('/api/v4/')) {
      api(req, res, raw.slice('/api/v4'.length), new URLSearchParams(search)).catch((e: unknown) => sendJson(res, 500, { message: String(e) }));
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
      projects.set(path, { id: projects.size + 1, path, defaultBranch, members: new Map() });
      return created;
    },
    rootUser,
    addUser(username, uo = {}) {
      const user = { id: users.length + 1, username, name: username[0]!.toUpperCase() + username.slice(1) };
      users.push(user);
      if (uo.token) tokens.set(uo.token, user);
      return user;
    },
    setAccess(path, user, level) {
      if (level === null) projectOf(path).members.delete(user.id);
      else projectOf(path).members.set(user.id, level);
    },
    createIssue(path, io) {
      projectOf(path);
      const iid = issues.filter((i) => i.project === path).length + 1;
      const issue: IssueRecord = { id: ++ids, iid, project: path, title: io.title, description: io.description ?? '', author: io.author, labels: io.labels ?? [], assignees: io.assignees ?? [], webUrl: `${url}/${path}/-/issues/${iid}` };
      issues.push(issue);
      return issue;
    },
    addNote: (path, on, body, author, no = {}) => note(path, on, body, author, no.system ?? false),
    addMergeRequest(path, mo) {
      return openMergeRequest(projectOf(path), { sourceBranch: mo.sourceBranch, targetBranch: mo.targetBranch ?? projectOf(path).defaultBranch, title: mo.title, description: null, token: '', author: mo.author, fromFork: mo.fromFork });
    },
    updateMergeRequest(path, iid, uo) {
      const mr = mergeRequests.find((m) => m.project === path && m.iid === iid);
      if (!mr) throw new Error(`no merge request ${path}!${iid} on the fake GitLab`);
      Object.assign(mr, uo);
      return mr;
    },
    loseNextMergeRequestAnswer(path) {
      projectOf(path);
      loseMergeRequestAnswers.add(path);
    },
    mergeRequests,
    issues,
    notes,
    issueHook(issue, user, ho) {
      const changes: Record<string, unknown> = { updated_at: { previous: '2026-01-05 09:59:00 UTC', current: '2026-01-05 10:00:00 UTC' } };
      if (ho.previousLabels) changes.labels = { previous: ho.previousLabels.map((l) => hookLabel(issue.project, l)), current: issue.labels.map((l) => hookLabel(issue.project, l)) };
      if (ho.previousAssignees) changes.assignees = { previous: ho.previousAssignees.map(hookUser), current: issue.assignees.map(hookUser) };
      return {
        object_kind: 'issue',
        event_type: 'issue',
        user: hookUser(user),
        project: hookProject(issue.project),
        object_attributes: { ...hookIssue(issue), action: ho.action },
        labels: issue.labels.map((l) => hookLabel(issue.project, l)),
        changes,
        repository: hookRepository(issue.project),
        assignees: issue.assignees.map(hookUser),
      };
    },
    noteHook(n) {
      const base = {
        object_kind: 'note',
        event_type: 'note',
        user: hookUser(n.author),
        project_id: projectOf(n.project).id,
        project: hookProject(n.project),
        object_attributes: {
          attachment: null,
          author_id: n.author.id,
          change_position: null,
          commit_id: null,
          created_at: '2026-01-05 10:00:00 UTC',
          discussion_id: randomUUID().replaceAll('-', ''),
          id: n.id,
          line_code: null,
          note: n.body,
          noteable_id: noteJson(n).noteable_id,
          noteable_type: n.on.type,
          original_position: null,
          position: null,
          project_id: projectOf(n.project).id,
          resolved_at: null,
          resolved_by_id: null,
          resolved_by_push: null,
          st_diff: null,
          system: n.system,
          type: null,
          updated_at: '2026-01-05 10:00:00 UTC',
          updated_by_id: null,
          description: n.body,
          url: `${url}/${n.project}/-/${n.on.type === 'Issue' ? 'issues' : 'merge_requests'}/${n.on.iid}#note_${n.id}`,
          action: 'create',
        },
        repository: hookRepository(n.project),
      };
      if (n.on.type === 'Issue') {
        const issue = issues.find((i) => i.project === n.project && i.iid === n.on.iid)!;
        return { ...base, issue: hookIssue(issue) };
      }
      const mr = mergeRequests.find((m) => m.project === n.project && m.iid === n.on.iid)!;
      const author = mrAuthors.get(mr) ?? rootUser;
      return {
        ...base,
        merge_request: {
          assignee_id: null,
          author_id: author.id,
          created_at: '2026-01-05 09:00:00 UTC',
          description: mr.description,
          draft: mr.draft,
          head_pipeline_id: null,
          id: 5000 + mr.iid,
          iid: mr.iid,
          last_edited_at: null,
          last_edited_by_id: null,
          merge_commit_sha: null,
          merge_error: null,
          merge_params: { force_remove_source_branch: '1' },
          merge_status: 'can_be_merged',
          merge_user_id: null,
          merge_when_pipeline_succeeds: false,
          milestone_id: null,
          source_branch: mr.sourceBranch,
          source_project_id: projectOf(mr.project).id,
          state_id: 1,
          target_branch: mr.targetBranch,
          target_project_id: projectOf(mr.project).id,
          time_estimate: 0,
          title: mr.title,
          updated_at: '2026-01-05 10:00:00 UTC',
          updated_by_id: null,
          url: mr.webUrl,
          source: hookProject(mr.project),
          target: hookProject(mr.project),
          last_commit: null,
          work_in_progress: mr.draft,
          total_time_spent: 0,
          time_change: 0,
          human_total_time_spent: null,
          human_time_change: null,
          human_time_estimate: null,
          assignee_ids: [],
          reviewer_ids: [],
          labels: [],
          state: 'opened',
          blocking_discussions_resolved: true,
          first_contribution: false,
          detailed_merge_status: 'mergeable',
        },
      };
    },
    pushHook(path, user, po) {
      const deleted = /^0+$/.test(po.after);
      const commits = deleted ? [] : [{ id: po.after, message: 'A change\n', title: 'A change', timestamp: '2026-01-05T10:00:00+00:00', url: `${url}/${path}/-/commit/${po.after}`, author: { name: user.name, email: '[REDACTED]' }, added: [], modified: ['README.md'], removed: [] }];
      return {
        object_kind: 'push',
        event_name: 'push',
        before: po.before,
        after: po.after,
        ref: po.ref,
        ref_protected: po.ref === `refs/heads/${projectOf(path).defaultBranch}`,
        checkout_sha: deleted ? null : po.after,
        message: null,
        user_id: user.id,
        user_name: user.name,
        user_username: user.username,
        user_email: '',
        user_avatar: null,
        project_id: projectOf(path).id,
        project: hookProject(path),
        commits,
        total_commits_count: commits.length,
        push_options: {},
        repository: { ...hookRepository(path), git_http_url: `${url}/${path}.git`, git_ssh_url: `git@127.0.0.1:${path}.git`, visibility_level: 0 },
      };
    },
    async deliver(to, payload, d = {}) {
      const kind = typeof payload === 'string' ? '' : String(payload.object_kind ?? '');
      const uuid = d.uuid === undefined ? randomUUID() : d.uuid;
      const headers: Record<string, string> = {
        'content-type': 'application/json',
        'user-agent': 'GitLab/17.6.0',
        'x-gitlab-event': d.event ?? ({ issue: 'Issue Hook', note: 'Note Hook' } as Record<string, string>)[kind] ?? 'Push Hook',
        'x-gitlab-webhook-uuid': randomUUID(),
        'x-gitlab-instance': url,
      };
      if (uuid !== null) headers['x-gitlab-event-uuid'] = uuid;
      if (d.idempotencyKey !== null) headers['idempotency-key'] = d.idempotencyKey ?? randomUUID();
      if (d.token !== null && d.token !== undefined) headers['x-gitlab-token'] = d.token;
      const res = await fetch(to, { method: 'POST', headers, body: typeof payload === 'string' ? payload : JSON.stringify(payload) });
      const text = await res.text();
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        // not JSON
      }
      return { status: res.status, body, uuid };
    },
    apiRequests,
    gitRequests,
    async close() {
      await closeServer(server);
      if (ownRoot) await rm(root, { recursive: true, force: true });
    },
  };
}
