// The few GitLab REST API v4 calls the trigger makes with the bot user's token: who the bot
// is, a member's access level, an issue and its notes, and the one note a task writes and
// edits. Answers are checked with zod like the webhooks: a GitLab is trusted to be GitLab,
// not to be well-formed.
import { z } from 'zod';
import { hostFetch } from '../../../forges/upstream.ts';

const TIMEOUT_MS = 15_000;
/** Notes read for a goal: the first pages, oldest first. */
const MAX_NOTE_PAGES = 3;

export type Noteable = { type: 'issue'; iid: number } | { type: 'merge_request'; iid: number };

const User = z.object({ id: z.number(), username: z.string() });
const Issue = z.object({ iid: z.number(), title: z.string(), description: z.string().nullish(), web_url: z.string().nullish(), author: z.object({ username: z.string() }).nullish() });
const Note = z.object({ id: z.number(), body: z.string(), system: z.boolean().nullish(), author: z.object({ id: z.number(), username: z.string() }) });
const Member = z.object({ access_level: z.number() });

export type GitLabIssue = z.infer<typeof Issue>;
export type GitLabNote = z.infer<typeof Note>;

/** A GitLab answer other than success; `status` 0 when GitLab could not be reached. */
export class GitLabApiError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = 'GitLabApiError';
    this.status = status;
  }
}

export class GitLabApi {
  readonly apiUrl: string;
  readonly #token: string;

  constructor(o: { apiUrl: string; token: string }) {
    this.apiUrl = o.apiUrl;
    this.#token = o.token;
  }

  /** The token's user: the bot, whose own notes start nothing. */
  async currentUser(): Promise<z.infer<typeof User>> {
    return User.parse(await this.#call('GET', '/user'));
  }

  /** The user's access level on the project, inherited from groups too; 0 for no member. */
  async accessLevel(projectId: number, userId: number): Promise<number> {
    try {
      return Member.parse(await this.#call('GET', `/projects/${projectId}/members/all/${userId}`)).access_level;
    } catch (err) {
      if (err instanceof GitLabApiError && err.status === 404) return 0;
      throw err;
    }
  }

  async issue(projectId: number, iid: number): Promise<GitLabIssue> {
    return Issue.parse(await this.#call('GET', `/projects/${projectId}/issues/${iid}`));
  }

  /** The first notes of an issue or merge request, oldest first (a few pages: enough for a goal). */
  async notes(projectId: number, on: Noteable): Promise<GitLabNote[]> {
    const all: GitLabNote[] = [];
    for (let page = 1; page <= MAX_NOTE_PAGES; page++) {
      const batch = z.array(Note).parse(await this.#call('GET', `${notesPath(projectId, on)}?sort=asc&order_by=created_at&per_page=100&page=${page}`));
      all.push(...batch);
      if (batch.length < 100) break;
    }
    return all;
  }

  async createNote(projectId: number, on: Noteable, body: string): Promise<GitLabNote> {
    return Note.parse(await this.#call('POST', notesPath(projectId, on), { body }));
  }

  async updateNote(projectId: number, on: Noteable, noteId: number, body: string): Promise<GitLabNote> {
    return Note.parse(await this.#call('PUT', `${notesPath(projectId, on)}/${noteId}`, { body }));
  }

  async #call(method: string, path: string, body?: unknown): Promise<unknown> {
    const doing = `GitLab ${method} ${path.split('?')[0]}`;
    let res: Response;
    try {
      res = await hostFetch(`${this.apiUrl}${path}`, {
        method,
        headers: { 'private-token': this.#token, accept: 'application/json', 'user-agent': 'berth', ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
    } catch (e) {
      const cause = e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message) : String(e);
      throw new GitLabApiError(0, `${doing}: GitLab could not be reached at ${this.apiUrl} (${cause})`);
    }
    const text = await res.text();
    if (!res.ok) throw new GitLabApiError(res.status, `${doing}: GitLab answered ${res.status}${hint(res.status)} (${text.slice(0, 200)})`);
    try {
      return JSON.parse(text);
    } catch {
      throw new GitLabApiError(res.status, `${doing}: GitLab answered ${res.status} with something other than JSON`);
    }
  }
}

function notesPath(projectId: number, on: Noteable): string {
  return `/projects/${projectId}/${on.type === 'issue' ? 'issues' : 'merge_requests'}/${on.iid}/notes`;
}

function hint(status: number): string {
  if (status === 401) return ': the integration\'s token is refused; set a new one with `berth integration gitlab --token-file`';
  if (status === 403) return ': the bot user may not do this; give it at least the Reporter role on the project';
  return '';
}
