// Who may do what, in one place. Every route under /api/orgs/:org declares the
// permission it needs (app.ts refuses to start with one that does not), and the caller's
// role in that org is resolved here before the handler runs. Objects of an org the caller
// has no role in do not exist for them: 404, never 403.
import { BerthError, notFound } from '../shared/errors.ts';
import type { Db, Role } from './db/index.ts';
import { Recent } from './recent.ts';

export const ROLES: readonly Role[] = ['viewer', 'member', 'admin', 'owner'];
export const roleRank = (r: Role) => ROLES.indexOf(r);
export const atLeast = (have: Role, need: Role) => roleRank(have) >= roleRank(need);

/** What each permission needs, at least. */
export const PERMISSIONS = {
  'org.read': 'viewer',
  'org.manage': 'owner',
  // The org's settings (auto-start): owners and admins.
  'org.settings': 'admin',
  'environment.read': 'viewer',
  'environment.write': 'member',
  'environment.exec': 'member',
  'project.read': 'viewer',
  'project.manage': 'admin',
  'member.read': 'viewer',
  'member.manage': 'admin',
  'token.read': 'viewer',
  'token.create': 'member',
  'token.manage': 'admin',
  'secret.read': 'viewer', // names and metadata only: values never leave
  'secret.manage': 'admin',
  'audit.read': 'admin',
  // Signing a head vouches for the chain below it (audit/log.ts reseal).
  'audit.reseal': 'owner',
  'task.read': 'viewer',
  'task.create': 'member',
  // Merging into the base branch is a reviewer's call, not every member's.
  'task.approve': 'admin',
  'policy.read': 'viewer',
  // The org's and projects' egress policies.
  'policy.manage': 'admin',
  // An environment's own policy: members may narrow it, only admins widen it (policy/service.ts).
  'policy.environment': 'member',
  // An org's and its projects' model settings: which model API and which key secret tasks use.
  'model.read': 'viewer',
  'model.manage': 'admin',
} as const satisfies Record<string, Role>;

export type Permission = keyof typeof PERMISSIONS;

/** Who is calling: resolved from the bearer token on every request. */
export interface Caller {
  tokenId: string;
  /** 'user' tokens act with the user's memberships; 'org' tokens act in one org with one role. */
  kind: 'user' | 'org';
  userId: string | null;
  orgId: string | null;
  role: Role | null;
  instanceAdmin: boolean;
}

/** The caller inside one org: what every org-scoped service method takes. */
export interface Scope {
  orgId: string;
  orgName: string;
  role: Role;
  /** How the audit log names the caller. */
  actor: string;
  caller: Caller;
  /**
   * Set when a task acts (tasks/sandbox.ts taskScope): it may use the environment it made,
   * and what it makes belongs to the task's owner (ownership.ts).
   */
  task?: { id: string; ownerId: string | null } | undefined;
}

export const actorOf = (c: Caller) => (c.kind === 'user' ? `user:${c.userId}` : `token:${c.tokenId}`);

/**
 * The caller's role in an org, given the role their user (for an org token, the user who
 * made it) holds there now. A user token has its user's role. An org token has the lower
 * of its own role and its maker's current one, and none once its maker has left: demoting
 * or removing a person reaches every token they made. A token without a maker keeps its own.
 */
export function effectiveRole(caller: Pick<Caller, 'kind' | 'orgId' | 'userId' | 'role'>, orgId: string, memberRole: Role | null | undefined): Role | undefined {
  if (caller.kind === 'user') return memberRole ?? undefined;
  if (caller.orgId !== orgId || !caller.role) return undefined;
  if (caller.userId === null) return caller.role;
  if (!memberRole) return undefined;
  return roleRank(memberRole) < roleRank(caller.role) ? memberRole : caller.role;
}

export const forbidden = (message: string) => new BerthError('forbidden', message);

type Found = { orgId: string; orgName: string; role: Role } | undefined;

export class Authorizer {
  readonly #db: Db;
  /** Roles resolved in the last second, by token and org reference; membership changes on this replica clear them. */
  readonly #recent = new Recent<Found>();

  constructor(db: Db) {
    this.#db = db;
  }

  /** Forgets resolved roles: call after any change to orgs or memberships. */
  forget(): void {
    this.#recent.clear();
  }

  /** The caller's role in the org named by id or name, or undefined when they have none. */
  async roleIn(caller: Caller, orgRef: string): Promise<Found> {
    const key = `${caller.tokenId}\u0000${orgRef}`;
    const hit = this.#recent.get(key);
    if (hit) return hit.value;
    const found = await this.#lookup(caller, orgRef);
    this.#recent.set(key, found);
    return found;
  }

  async #lookup(caller: Caller, orgRef: string): Promise<Found> {
    // One round trip: the org and the caller's membership in it, on every scoped request.
    const row = await this.#db
      .selectFrom('orgs')
      .leftJoin('memberships', (join) => join.onRef('memberships.org_id', '=', 'orgs.id').on('memberships.user_id', '=', caller.userId ?? ''))
      .select(['orgs.id', 'orgs.name', 'memberships.role'])
      .where((eb) => eb.or([eb('orgs.id', '=', orgRef), eb('orgs.name', '=', orgRef)]))
      .executeTakeFirst();
    if (!row) return undefined;
    const role = effectiveRole(caller, row.id, row.role);
    return role ? { orgId: row.id, orgName: row.name, role } : undefined;
  }

  /**
   * The caller's role in the org now, read from the database and not remembered: what an
   * open stream is checked against, so a change on another replica reaches it at once.
   */
  async roleNow(caller: Caller, orgId: string): Promise<Role | undefined> {
    return (await this.#lookup(caller, orgId))?.role;
  }

  async scope(caller: Caller, orgRef: string, permission: Permission): Promise<Scope> {
    const found = await this.roleIn(caller, orgRef);
    if (!found) throw notFound(`no org '${orgRef}': \`berth org list\` shows yours`);
    const need = PERMISSIONS[permission];
    if (!atLeast(found.role, need)) {
      throw forbidden(`your role in org '${found.orgName}' is ${found.role}; this needs ${need} or above (${permission})`);
    }
    return { ...found, actor: actorOf(caller), caller };
  }

  /**
   * Instance-wide views (the runners serve every org): instance administrators, and the
   * admins and owners of any org, who need them to tell why their tasks wait.
   */
  async assertInstanceView(caller: Caller, what: string): Promise<void> {
    if (caller.instanceAdmin) return;
    const roles = (await this.orgsOf(caller)).map((o) => o.role);
    if (roles.some((r) => atLeast(r, 'admin'))) return;
    const highest = roles.sort((a, b) => roleRank(b) - roleRank(a))[0];
    throw forbidden(`${what} are shown to admins and owners of an org and to instance administrators; ${highest ? `your highest role is ${highest}` : 'you have no role in any org'}`);
  }

  /** The orgs the caller can see, with their role in each. */
  async orgsOf(caller: Caller): Promise<{ id: string; name: string; role: Role }[]> {
    if (caller.kind === 'org') {
      const found = await this.roleIn(caller, caller.orgId!);
      return found ? [{ id: found.orgId, name: found.orgName, role: found.role }] : [];
    }
    return this.#db
      .selectFrom('memberships')
      .innerJoin('orgs', 'orgs.id', 'memberships.org_id')
      .select(['orgs.id', 'orgs.name', 'memberships.role'])
      .where('memberships.user_id', '=', caller.userId!)
      .orderBy('orgs.name')
      .execute();
  }
}
