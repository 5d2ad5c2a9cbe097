// Which org memberships a provider's groups grant: a pure decision, kept apart from the
// sign-in flow so it can be tested (and reasoned about) without a provider.
import { ROLES, roleRank } from '../authz.ts';
import type { Role } from '../db/index.ts';

export { roleRank };

/** Roles from most to least powerful (the authorizer's order, read the other way). */
export const ROLE_ORDER: readonly Role[] = [...ROLES].reverse();

/** The more powerful of two roles. */
export const higherRole = (a: Role, b: Role): Role => (roleRank(a) >= roleRank(b) ? a : b);

/** Members of the provider group `group` get `role` in `org`. */
export interface GroupRule {
  /** The group name exactly as the provider sends it in the groups claim (case-sensitive). */
  group: string;
  org: string;
  role: Role;
}

export interface GrantedMembership {
  org: string;
  role: Role;
}

/**
 * The memberships `groups` grant under `rules`: one per org, with the highest role any matching
 * rule gives there. Orgs come out in the order their first matching rule appears.
 */
export function mapGroups(groups: readonly string[], rules: readonly GroupRule[]): GrantedMembership[] {
  const member = new Set(groups);
  const byOrg = new Map<string, Role>();
  for (const rule of rules) {
    if (!member.has(rule.group)) continue;
    const current = byOrg.get(rule.org);
    byOrg.set(rule.org, current ? higherRole(current, rule.role) : rule.role);
  }
  return [...byOrg].map(([org, role]) => ({ org, role }));
}
