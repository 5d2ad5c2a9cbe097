import type { ColumnType, Insertable, Selectable, Updateable } from 'kysely';
import type { EnvironmentState } from '../../shared/environment.ts';

// Timestamps are stored as timestamptz and read back as Date on both PGlite and pg.
type Timestamp = ColumnType<Date, Date | string, Date | string>;
/** A timestamp the database fills in on insert. */
type CreatedAt = ColumnType<Date, Date | string | undefined, Date | string>;

export interface OrgTable {
  id: string;
  name: string;
  created_at: CreatedAt;
}

export interface TokenTable {
  id: string;
  org_id: string;
  name: string;
  /** sha256 of the secret part; the token itself is shown once and never stored. */
  hash: string;
  role: 'owner' | 'admin' | 'member' | 'viewer';
  created_at: CreatedAt;
  expires_at: Timestamp | null;
  last_used_at: Timestamp | null;
  revoked_at: Timestamp | null;
}

export interface EnvironmentTable {
  id: string;
  org_id: string;
  name: string;
  image: string;
  image_digest: string | null;
  state: EnvironmentState;
  /** Why the environment is in its state, when that is not obvious (failed, stopped by idle timeout). */
  state_reason: string | null;
  cpus: number;
  memory_bytes: string; // bigint travels as string
  disk_bytes: string;
  pids_limit: number;
  idle_timeout_ms: string | null;
  max_lifetime_ms: string | null;
  created_at: CreatedAt;
  updated_at: CreatedAt;
  started_at: Timestamp | null;
  last_active_at: Timestamp | null;
}

export interface Database {
  orgs: OrgTable;
  tokens: TokenTable;
  environments: EnvironmentTable;
}

export type EnvironmentRow = Selectable<EnvironmentTable>;
export type NewEnvironmentRow = Insertable<EnvironmentTable>;
export type EnvironmentUpdate = Updateable<EnvironmentTable>;
export type TokenRow = Selectable<TokenTable>;
