// The audit key signs each org's chain head and the checkpoints Berth hands out. The hash
// chain alone shows an edit only to someone who did not recompute the hashes after it;
// the signature is what someone with write access to the database, but not the key,
// cannot redo. It comes from BERTH_AUDIT_KEY or <dataDir>/audit.key (created on first use,
// mode 0600), never from the database.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { KEY_BYTES, loadKey, type KeyKind, type KeySource } from '../keyfile.ts';

export const AUDIT_KEY_FILE = 'audit.key';

const AUDIT_KEY: KeyKind = {
  variable: 'BERTH_AUDIT_KEY',
  file: AUDIT_KEY_FILE,
  what: 'audit key',
  loss: "the audit log's signed heads and checkpoints verify only with the key that signed them",
};

/** A point in an org's chain, signed: held outside Berth, it shows a later cut or rewrite. */
export interface Checkpoint {
  /** The org's id. */
  org: string;
  seq: number;
  /** The hash of entry seq (64 zeros for an empty log). */
  hash: string;
  /** When it was signed, ISO 8601. */
  at: string;
  /** hex HMAC-SHA256 under the audit key. */
  hmac: string;
}

export class AuditKey {
  // A private field keeps the key out of util.inspect, JSON and logged objects.
  readonly #key: Buffer;

  constructor(key: Buffer) {
    if (key.length !== KEY_BYTES) throw new Error(`an audit key is ${KEY_BYTES} bytes, not ${key.length}`);
    this.#key = key;
  }

  /** `created`: the key file was made just now, so nothing can have been signed with this key before. */
  static load(opts: KeySource): { key: AuditKey; created: boolean } {
    const { key, created } = loadKey(AUDIT_KEY, opts);
    return { key: new AuditKey(key), created };
  }

  // Each kind of signature has its own prefix, so a checkpoint's signature can never pass as a head's.
  signHead(orgId: string, seq: number, hash: string): string {
    return this.#mac(`berth-audit-head/v1\n${orgId}\n${seq}\n${hash}`);
  }

  checkHead(orgId: string, seq: number, hash: string, mac: string | null): boolean {
    return mac !== null && same(mac, this.signHead(orgId, seq, hash));
  }

  checkpoint(orgId: string, seq: number, hash: string, at: Date): Checkpoint {
    const cp = { org: orgId, seq, hash, at: at.toISOString() };
    return { ...cp, hmac: this.#checkpointMac(cp) };
  }

  checkCheckpoint(cp: Checkpoint): boolean {
    return same(cp.hmac, this.#checkpointMac(cp));
  }

  #checkpointMac(cp: Omit<Checkpoint, 'hmac'>): string {
    return this.#mac(`berth-audit-checkpoint/v1\n${cp.org}\n${cp.seq}\n${cp.hash}\n${cp.at}`);
  }

  #mac(text: string): string {
    return createHmac('sha256', this.#key).update(text).digest('hex');
  }
}

let processKey: AuditKey | undefined;
/**
 * For an AuditLog made without a key (tests, tools): one random key per process, so logs in
 * one process agree. startBerth always passes the loaded key; heads signed with this one do
 * not verify after a restart.
 */
export const processAuditKey = (): AuditKey => (processKey ??= new AuditKey(randomBytes(KEY_BYTES)));

const same = (a: string, b: string) => a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));
