// Policy rows in and out of the database.
import type { Db, NetworkPolicyTable, PolicyScopeKind, Role } from '../db/index.ts';
import type { Selectable } from 'kysely';
import { EMPTY_FIELDS, type PolicyFields } from './resolve.ts';

export type PolicyRow = Selectable<NetworkPolicyTable>;

export const fieldsOf = (r: PolicyRow | undefined): PolicyFields =>
  r
    ? { allowDomains: r.allow_domains, presets: r.presets, allowPorts: r.allow_ports, allowMethods: r.allow_methods, maxConnections: r.max_connections, mirrors: r.mirrors ?? null }
    : EMPTY_FIELDS;

const json = (v: unknown[] | null) => (v === null ? null : JSON.stringify(v));

/** Writes one scope's settings whole (upsert), with the role that set them. */
export async function writePolicy(db: Db, row: { orgId: string; kind: PolicyScopeKind; scopeId: string; fields: PolicyFields; actor: string; role: Role }): Promise<void> {
  const f = row.fields;
  const values = {
    allow_domains: json(f.allowDomains),
    presets: json(f.presets),
    allow_ports: json(f.allowPorts),
    allow_methods: json(f.allowMethods),
    max_connections: f.maxConnections,
    mirrors: f.mirrors === null ? null : JSON.stringify(f.mirrors),
    updated_at: new Date(),
    updated_by: row.actor,
    set_by_role: row.role,
  };
  await db
    .insertInto('network_policies')
    .values({ org_id: row.orgId, scope_kind: row.kind, scope_id: row.scopeId, ...values })
    .onConflict((oc) => oc.columns(['org_id', 'scope_kind', 'scope_id']).doUpdateSet(values))
    .execute();
}

export async function readPolicy(db: Db, orgId: string, kind: PolicyScopeKind, scopeId: string): Promise<PolicyRow | undefined> {
  return db.selectFrom('network_policies').selectAll().where('org_id', '=', orgId).where('scope_kind', '=', kind).where('scope_id', '=', scopeId).executeTakeFirst();
}
