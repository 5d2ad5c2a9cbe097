// The audit log: who did what in an org, hash-chained so tampering shows, listed and
// exported for the API, and streamed to a SIEM.
export { AuditLog, type AuditLogOptions } from './log.ts';
export { WebhookSink, type WebhookSinkOptions } from './webhook.ts';
export { computeHash, GENESIS_HASH } from './chain.ts';
export { AUDIT_KEY_FILE, AuditKey, type Checkpoint } from './key.ts';
export type { AuditEntry, AuditFilter, AuditListOptions, AuditLogger, AuditPage, AuditSink, NewAuditEntry, VerifyResult } from './types.ts';
