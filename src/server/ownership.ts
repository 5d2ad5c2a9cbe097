// Who may use an environment or a task, in one place. Both belong to whoever made them (a
// task's environment to the task's owner). Reading them is the org's: anyone whose role has
// the route's permission (viewers read). Using them is for their owner, the org's admins and
// owners, and, for an environment, whoever it is shared with. The environment, task, policy
// and network-event services call these before they act on a row, so a route cannot forget
// them; every route on one declares which it needs (app.ts), and test/ownership.test.ts
// walks them all.
//
// A caller that is not allowed to use an object it can see gets 403 with what to do next (ask
// the owner to share it), not 404: it is in the list they read, and a 404 would send them
// looking for a typo. Objects of another org stay 404 (authz.ts).
import { notFound } from '../shared/errors.ts';
import { atLeast, forbidden, PERMISSIONS, type Scope } from './authz.ts';
import type { Db } from './db/index.ts';

/**
 * What a route does with the environment or task it names:
 * - 'org': reads it; anyone whose role has the route's permission.
 * - 'shared': uses it (commands, terminal, files, start and stop, its egress policy, its
 *   network log): the owner, the org's admins and owners, and those it is shared with.
 * - 'owner': removes or shares it, cancels or retries a task: the owner, admins and owners.
 */
export type Ownership = 'org' | 'shared' | 'owner';
export const OWNERSHIPS: readonly Ownership[] = ['org', 'shared', 'owner'];

/** Shared with everyone in the org; otherwise a share's grantee is a user id. */
export const ORG_GRANTEE = 'org';

/**
 * Whom what the caller makes belongs to: its user (for an org token, the user who made the
 * token), else the token itself (an org token with no maker); a task's, its owner.
 */
export function ownerIdOf(scope: Scope): string | null {
  if (scope.task) return scope.task.ownerId;
  return scope.caller.userId ?? scope.caller.tokenId;
}

export interface OwnedEnvironment {
  id: string;
  name: string;
  owner_id: string | null;
  task_id: string | null;
}

/** Whether the caller may do `need` with the environment, and why. */
async function environmentAccess(db: Db, scope: Scope, row: OwnedEnvironment, need: Ownership): Promise<'org' | 'admin' | 'task' | 'owner' | 'shared' | undefined> {
  if (need === 'org') return 'org';
  if (atLeast(scope.role, 'admin')) return 'admin';
  // A task acts only on the environment it made, whoever owns the task.
  if (scope.task) return row.task_id === scope.task.id ? 'task' : undefined;
  if (row.owner_id !== null && row.owner_id === ownerIdOf(scope)) return 'owner';
  if (need === 'owner') return undefined;
  return (await sharedWith(db, scope, [row.id])).has(row.id) ? 'shared' : undefined;
}

/** Refuses (403, saying whom to ask) unless the caller may do `need` with the environment. */
export async function assertEnvironmentAccess(db: Db, scope: Scope, row: OwnedEnvironment, need: Ownership): Promise<void> {
  if (await environmentAccess(db, scope, row, need)) return;
  const owner = await ownerLabel(db, row.owner_id);
  const whose = row.owner_id === null ? `environment '${row.name}' has no owner on record (admins and owners use it)` : `environment '${row.name}' belongs to ${owner}`;
  if (need === 'owner') {
    const shared = (await sharedWith(db, scope, [row.id])).has(row.id);
    throw forbidden(`${whose}${shared ? ' and is shared with you to use' : ''}: only its owner or an admin may remove it or change who shares it`);
  }
  throw forbidden(
    `${whose}: members use their own environments and those shared with them; ask ${row.owner_id === null ? 'an admin' : `${owner} or an admin`} to share it with you ` +
      `(\`berth env share ${row.name} --with ${(await callerEmail(db, scope)) ?? 'YOUR-EMAIL'}\`)`,
  );
}

/** Refuses (403) unless the caller may do `need` with the task: tasks are not shared. */
export async function assertTaskAccess(db: Db, scope: Scope, row: { id: string; owner_id: string | null }, need: Ownership): Promise<void> {
  if (need === 'org' || atLeast(scope.role, 'admin')) return;
  if (!scope.task && row.owner_id !== null && row.owner_id === ownerIdOf(scope)) return;
  const whose = row.owner_id === null ? `task ${row.id} has no owner on record` : `task ${row.id} belongs to ${await ownerLabel(db, row.owner_id)}`;
  throw forbidden(`${whose}: members cancel and retry their own tasks; ask its owner or an admin (its transcript and diff you may read)`);
}

/** Of these environments, the ids the caller may use ('shared'), for lists: a few queries for a page. */
export async function usableEnvironments(db: Db, scope: Scope, rows: OwnedEnvironment[]): Promise<Set<string>> {
  if (atLeast(scope.role, 'admin')) return new Set(rows.map((r) => r.id));
  const me = ownerIdOf(scope);
  const usable = new Set(rows.filter((r) => (scope.task ? r.task_id === scope.task.id : r.owner_id !== null && r.owner_id === me)).map((r) => r.id));
  if (scope.task) return usable;
  const rest = rows.filter((r) => !usable.has(r.id)).map((r) => r.id);
  for (const id of await sharedWith(db, scope, rest)) usable.add(id);
  return usable;
}

/** Which of these environments are shared with the caller (by name or with the whole org). */
async function sharedWith(db: Db, scope: Scope, ids: string[]): Promise<Set<string>> {
  if (!ids.length) return new Set();
  const grantees = scope.caller.userId && !scope.task ? [ORG_GRANTEE, scope.caller.userId] : [ORG_GRANTEE];
  const rows = await db
    .selectFrom('environment_shares')
    .select('environment_id')
    .where('org_id', '=', scope.orgId)
    .where('environment_id', 'in', ids)
    .where('grantee', 'in', grantees)
    .execute();
  return new Set(rows.map((r) => r.environment_id));
}

export interface Person {
  id: string;
  email: string | null;
  name: string | null;
}

/** The people (or makerless tokens) behind owner and grantee ids. */
export async function people(db: Db, ids: (string | null)[]): Promise<Map<string, Person>> {
  const wanted = [...new Set(ids.filter((id): id is string => id !== null && id !== ORG_GRANTEE))];
  if (!wanted.length) return new Map();
  const [users, tokens] = await Promise.all([
    db.selectFrom('users').select(['id', 'email', 'name']).where('id', 'in', wanted).execute(),
    db.selectFrom('tokens').select(['id', 'name']).where('id', 'in', wanted).execute(),
  ]);
  const found = new Map<string, Person>();
  for (const u of users) found.set(u.id, { id: u.id, email: u.email, name: u.name });
  for (const t of tokens) found.set(t.id, { id: t.id, email: null, name: `token ${t.name}` });
  for (const id of wanted) if (!found.has(id)) found.set(id, { id, email: null, name: null });
  return found;
}

async function ownerLabel(db: Db, ownerId: string | null): Promise<string> {
  if (ownerId === null) return 'no one on record';
  const p = (await people(db, [ownerId])).get(ownerId)!;
  return p.email ?? (p.name ? `the ${p.name}` : ownerId);
}

async function callerEmail(db: Db, scope: Scope): Promise<string | undefined> {
  if (!scope.caller.userId) return undefined;
  return (await db.selectFrom('users').select('email').where('id', '=', scope.caller.userId).executeTakeFirst())?.email;
}

/** Who an environment belongs to and who else may use it, as the API shows them. */
export interface EnvironmentOwnership {
  owner: Person | null;
  sharedWith: { org: boolean; users: Person[] };
  /** The caller may use it (and their role lets them run commands). */
  mayUse: boolean;
  /** The caller may remove or share it: its owner, admins and owners (not someone it is shared with). */
  mayManage: boolean;
}

/** The ownership view of each environment, for the caller: three queries for a page. */
export async function environmentOwnership(db: Db, scope: Scope, rows: OwnedEnvironment[]): Promise<Map<string, EnvironmentOwnership>> {
  const ids = rows.map((r) => r.id);
  const [shares, usable] = await Promise.all([
    ids.length ? db.selectFrom('environment_shares').select(['environment_id', 'grantee']).where('environment_id', 'in', ids).orderBy('created_at').execute() : [],
    usableEnvironments(db, scope, rows),
  ]);
  const named = await people(db, [...rows.map((r) => r.owner_id), ...shares.map((s) => s.grantee)]);
  const mayRun = atLeast(scope.role, PERMISSIONS['environment.exec']);
  return new Map(
    rows.map((r) => {
      const mine = shares.filter((s) => s.environment_id === r.id);
      return [
        r.id,
        {
          owner: r.owner_id === null ? null : named.get(r.owner_id)!,
          sharedWith: { org: mine.some((s) => s.grantee === ORG_GRANTEE), users: mine.filter((s) => s.grantee !== ORG_GRANTEE).map((s) => named.get(s.grantee)!) },
          mayUse: mayRun && usable.has(r.id),
          mayManage: atLeast(scope.role, 'admin') || (mayRun && !scope.task && r.owner_id !== null && r.owner_id === ownerIdOf(scope)),
        },
      ];
    }),
  );
}

/** The grantee a share names: `org`, or a member of the org by email or user id (404 otherwise). */
export async function granteeOf(db: Db, scope: Scope, grantee: string): Promise<string> {
  if (grantee === ORG_GRANTEE) return ORG_GRANTEE;
  const member = await db
    .selectFrom('memberships')
    .innerJoin('users', 'users.id', 'memberships.user_id')
    .select('users.id')
    .where('memberships.org_id', '=', scope.orgId)
    .where((eb) => eb.or([eb('users.email', '=', grantee.toLowerCase()), eb('users.id', '=', grantee)]))
    .executeTakeFirst();
  if (!member) throw notFound(`no member '${grantee}' in org '${scope.orgName}': \`berth member list\` shows them; share with everyone in the org with --everyone`);
  return member.id;
}
