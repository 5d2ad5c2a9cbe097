// Who may start a task from GitHub: someone with write access to the repository (admin,
// maintain or write), as GitHub says when asked. Answers are kept for a minute, so a burst of
// comments asks once, and a revoked collaborator is refused within a minute.
import type { RepoApi } from './client.ts';

export const WRITE_ROLES: ReadonlySet<string> = new Set(['admin', 'maintain', 'write']);
const TTL_MS = 60_000;
const MAX_ENTRIES = 5_000;

export class WriteAccess {
  readonly #now: () => number;
  readonly #cache = new Map<string, { at: number; role: string }>();

  constructor(o: { now?: () => number } = {}) {
    this.#now = o.now ?? Date.now;
  }

  /** The user's role on the repository (cached); fails closed: an error asking GitHub throws, never allows. */
  async role(api: RepoApi, apiUrl: string, login: string): Promise<string> {
    const key = `${apiUrl}|${api.fullName}|${login}`.toLowerCase();
    const hit = this.#cache.get(key);
    if (hit && this.#now() - hit.at < TTL_MS) return hit.role;
    const role = await api.permission(login);
    if (this.#cache.size >= MAX_ENTRIES) this.#cache.delete(this.#cache.keys().next().value!);
    this.#cache.set(key, { at: this.#now(), role });
    return role;
  }

  async canWrite(api: RepoApi, apiUrl: string, login: string): Promise<boolean> {
    return WRITE_ROLES.has(await this.role(api, apiUrl, login));
  }
}
