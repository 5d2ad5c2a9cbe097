// The one place the UI talks to the control plane: the token, JSON calls, and errors as values.
import type { Task, TaskList } from '../../src/shared/api-tasks.ts';
import type { AuditEntry, AuthMethods, Environment, EnvironmentDetail } from '../../src/shared/api.ts';
import type { TaskEventData } from '../../src/shared/tasks.ts';
import type { Runner, RunnerList } from '../../src/shared/api-runners.ts';

export type { AuditEntry, AuthMethods, Environment, EnvironmentDetail, Runner, RunnerList, Task, TaskList };
export type Role = 'viewer' | 'member' | 'admin' | 'owner';
export interface Org {
  id: string;
  name: string;
  role: Role;
}
export interface Me {
  kind: 'user' | 'org';
  userId: string | null;
  email: string | null;
  /** The token this session signed in with (what owns what an org token makes with no user behind it). */
  token?: { id: string };
  orgs: Org[];
}
/** An event as it arrives: known shapes, plus any type this UI does not know yet. */
export interface TaskEvent {
  seq: number;
  at: string;
  data: TaskEventData | { type: string; [k: string]: unknown };
}

// The token lives in sessionStorage unless the user asks to stay signed in: a tab that
// closes takes it along, and a script on another origin can never read it either way.
const KEY = 'berth.token';

export function getToken(): string | null {
  return sessionStorage.getItem(KEY) ?? localStorage.getItem(KEY);
}

export function setToken(token: string, remember: boolean): void {
  clearToken();
  (remember ? localStorage : sessionStorage).setItem(KEY, token);
}

export function clearToken(): void {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
}

export class ApiError extends Error {
  readonly status: number;
  readonly kind: string;
  readonly field: string | undefined;
  constructor(status: number, kind: string, message: string, field?: string) {
    super(message);
    this.status = status;
    this.kind = kind;
    this.field = field;
  }
}

export const SIGNED_OUT = 'berth:signed-out';

export async function api<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  const token = getToken();
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
  } catch (err) {
    if ((err as Error).name === 'AbortError') throw err;
    throw new ApiError(0, 'unavailable', 'the control plane cannot be reached: check the connection and try again');
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  if (!res.ok) {
    const e = (parsed as { error?: { kind?: string; message?: string; field?: string } } | undefined)?.error;
    if (res.status === 401) {
      clearToken();
      window.dispatchEvent(new Event(SIGNED_OUT));
    }
    throw new ApiError(res.status, e?.kind ?? 'internal', e?.message ?? `${res.status} ${res.statusText}`, e?.field);
  }
  return parsed as T;
}

/** Path of an org-scoped API route. */
export const orgPath = (org: string, rest: string) => `/api/orgs/${encodeURIComponent(org)}/${rest}`;

export const qs = (params: Record<string, string | number | undefined | null>) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
};

const RANK: Record<Role, number> = { viewer: 0, member: 1, admin: 2, owner: 3 };

/** What the UI offers a role: the server checks again, this only hides what would be refused. */
export const can = {
  createTask: (r: Role) => RANK[r] >= RANK.member,
  exec: (r: Role) => RANK[r] >= RANK.member,
  writeEnvironment: (r: Role) => RANK[r] >= RANK.member,
  approve: (r: Role) => RANK[r] >= RANK.admin,
  readAudit: (r: Role) => RANK[r] >= RANK.admin,
  manageSecrets: (r: Role) => RANK[r] >= RANK.admin,
  manageProjects: (r: Role) => RANK[r] >= RANK.admin,
  /** The org's and projects' egress policies (policy.manage). */
  managePolicy: (r: Role) => RANK[r] >= RANK.admin,
  manageMembers: (r: Role) => RANK[r] >= RANK.admin,
  createToken: (r: Role) => RANK[r] >= RANK.member,
  grant: (have: Role, want: Role) => RANK[have] >= RANK[want],
};
export const ROLES: Role[] = ['viewer', 'member', 'admin', 'owner'];
