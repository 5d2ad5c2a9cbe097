// Who may start a task from GitLab: a member of the project with the Developer role or more
// (they could push the branch themselves). Asked of GitLab and kept for a minute, so a burst
// of notes costs one call, and a role taken away stops working within that minute.
import type { GitLabApi } from './api.ts';

/** GitLab's Developer access level. */
export const DEVELOPER = 30;
const KEEP_MS = 60_000;
const MAX_ENTRIES = 10_000;

export class AccessLevels {
  readonly #now: () => number;
  readonly #seen = new Map<string, { level: number; at: number }>();

  constructor(o: { now?: (() => Date) | undefined } = {}) {
    this.#now = () => (o.now ? o.now().getTime() : Date.now());
  }

  /** The user's access level on the project (0: no member); a failure to ask throws and is not kept. */
  async level(api: GitLabApi, projectId: number, userId: number): Promise<number> {
    const key = `${api.apiUrl} ${projectId} ${userId}`;
    const hit = this.#seen.get(key);
    if (hit && this.#now() - hit.at < KEEP_MS) return hit.level;
    const level = await api.accessLevel(projectId, userId);
    if (this.#seen.size >= MAX_ENTRIES) this.#seen.delete(this.#seen.keys().next().value!);
    this.#seen.delete(key);
    this.#seen.set(key, { level, at: this.#now() });
    return level;
  }
}
