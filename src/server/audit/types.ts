import type { Logger } from 'pino';

/** One entry of an org's audit log, as the API and the SIEM see it. */
export interface AuditEntry {
  orgId: string;
  /** Position in the org's chain: 1, 2, 3, … with no gaps. */
  seq: number;
  /** When it happened, ISO 8601 in UTC with milliseconds. */
  at: string;
  /** Who: 'user:<id>', 'token:<id>', 'environment:<id>' or 'system'. */
  actor: string;
  /** What, as noun.verb: 'environment.create', 'command.run', 'secret.read'. */
  action: string;
  target: string | null;
  environmentId: string | null;
  details: Record<string, unknown>;
  /** The hash of entry seq - 1; 64 zeros for the first entry. */
  prevHash: string;
  /** sha256 hex of prevHash + the entry's canonical JSON (see chain.ts). */
  hash: string;
}

export interface NewAuditEntry {
  orgId: string;
  actor: string;
  action: string;
  target?: string | null | undefined;
  environmentId?: string | null | undefined;
  details?: Record<string, unknown> | undefined;
}

export interface AuditFilter {
  /** Entries at or after this instant. */
  since?: Date | undefined;
  /** Entries before this instant. */
  until?: Date | undefined;
  actor?: string | undefined;
  action?: string | undefined;
  environmentId?: string | undefined;
}

export interface AuditListOptions extends AuditFilter {
  /** 1 to 1000; 100 when absent. */
  limit?: number | undefined;
  /** nextCursor of the previous page. */
  cursor?: string | undefined;
}

export interface AuditPage {
  /** Newest first. */
  items: AuditEntry[];
  nextCursor: string | null;
}

export type VerifyResult =
  | { ok: true; entries: number }
  /** entries: how many entries checked out before the first bad one. */
  | { ok: false; entries: number; firstBadSeq: number; reason: string };

/** Somewhere committed entries go besides the database (a SIEM). */
export interface AuditSink {
  /** Takes a committed batch; must return quickly and never reject for delivery trouble. */
  deliver(entries: AuditEntry[]): Promise<void>;
  /** Delivers what is queued (within a deadline) and stops. */
  close?(): Promise<void>;
}

export type AuditLogger = Pick<Logger, 'warn' | 'error'>;
