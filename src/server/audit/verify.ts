// Walks an org's chain from the first entry, a page at a time, and reports the first entry
// that does not check out.
//
// What it proves: every entry up to the head is the one written (hashes and links), and the
// head is one a server holding the audit key signed; so a rewrite, even with every later
// hash recomputed, and a cut of the newest entries, show unless the key was used. What it
// cannot prove alone: that the head is the newest one ever signed. Someone who copied an
// older signed head can cut the log back to it; a checkpoint kept outside Berth (see
// AuditLog.checkpoint) catches that. Deleting a whole org's log and its head is the same case.
import type { Db } from '../db/index.ts';
import { computeHash, GENESIS_HASH } from './chain.ts';
import type { AuditKey, Checkpoint } from './key.ts';
import { toEntry } from './rows.ts';
import type { VerifyResult } from './types.ts';

const PAGE = 1000;

/** @param checkpoint one this server signed (checked by the caller): the chain must still hold its entry. */
export async function verifyChain(db: Db, key: AuditKey, orgId: string, checkpoint?: Checkpoint): Promise<VerifyResult> {
  // The head first: entries up to it were committed with it, and entries appended while
  // we walk lie beyond it and are left for the next run.
  const head = await db.selectFrom('audit_heads').select(['seq', 'hash', 'mac']).where('org_id', '=', orgId).executeTakeFirst();
  const end = head ? Number(head.seq) : Number.MAX_SAFE_INTEGER;

  let last = 0;
  let lastHash = GENESIS_HASH;
  const bad = (firstBadSeq: number, reason: string): VerifyResult => ({ ok: false, entries: last, firstBadSeq, reason });

  for (;;) {
    const rows = await db
      .selectFrom('audit_entries')
      .selectAll()
      .where('org_id', '=', orgId)
      .where('seq', '>', String(last))
      .where('seq', '<=', String(end))
      .orderBy('seq', 'asc')
      .limit(PAGE)
      .execute();
    for (const row of rows) {
      const entry = toEntry(row);
      const expected = last + 1;
      if (entry.seq !== expected) return bad(expected, `entry ${expected} is missing: the chain goes from ${last} to ${entry.seq}`);
      if (entry.prevHash !== lastHash) {
        return bad(entry.seq, `entry ${entry.seq} does not link to entry ${last}: its prev_hash is not that entry's hash`);
      }
      if (computeHash(entry) !== entry.hash) return bad(entry.seq, `entry ${entry.seq} was altered: its hash does not match its contents`);
      if (checkpoint && entry.seq === checkpoint.seq && entry.hash !== checkpoint.hash) {
        return bad(entry.seq, `entry ${entry.seq} is not the one the checkpoint of ${checkpoint.at} recorded: it or an entry before it was rewritten since`);
      }
      last = entry.seq;
      lastHash = entry.hash;
    }
    if (rows.length < PAGE) break;
  }

  if (checkpoint && last < checkpoint.seq) {
    return bad(last + 1, `the checkpoint of ${checkpoint.at} recorded entries up to ${checkpoint.seq}, but the chain now ends at ${last}: entries ${last + 1}..${checkpoint.seq} were deleted`);
  }

  if (!head) return last === 0 ? { ok: true, entries: 0 } : bad(last + 1, `the chain head is missing: ${last} entries have no head row`);
  if (last < end) return bad(last + 1, `the head is at entry ${end} but the chain ends at ${last}: entries ${last + 1}..${end} are missing`);
  if (head.hash !== lastHash) return { ok: false, entries: last - 1, firstBadSeq: last, reason: `entry ${last} was rewritten: its hash is not the one the head recorded` };

  // The chain is consistent; whether it is the one Berth wrote only the key can say. A bad
  // signature cannot tell which entry changed, so no entry is vouched for.
  const unsigned = (reason: string): VerifyResult => ({ ok: false, entries: 0, firstBadSeq: Math.max(1, end), reason });
  if (head.mac === null) {
    return unsigned(
      `the head (entry ${end}) is not signed with the audit key: it was written before Berth signed heads, after an unsigned head, or its signature was removed; ` +
        'once the entries are checked, `berth audit reseal` signs it',
    );
  }
  if (!key.checkHead(orgId, end, head.hash, head.mac)) {
    return unsigned(
      `the head's signature does not match entry ${end}: entries up to it were rewritten, or newer ones deleted, by someone without the audit key ` +
        '(or BERTH_AUDIT_KEY changed); a checkpoint taken earlier (`berth audit verify --since-checkpoint FILE`) narrows down what changed',
    );
  }

  // A row past the head was not written by an append. The newest seq first, the head
  // second: an append commits its entries and its head together, so any seq it wrote
  // that we saw is at most the head we read after it.
  const newest = await db.selectFrom('audit_entries').select((eb) => eb.fn.max('seq').as('seq')).where('org_id', '=', orgId).executeTakeFirst();
  const headNow = await db.selectFrom('audit_heads').select('seq').where('org_id', '=', orgId).executeTakeFirstOrThrow();
  if (newest?.seq != null && Number(newest.seq) > Number(headNow.seq)) {
    const stray = await db
      .selectFrom('audit_entries')
      .select((eb) => eb.fn.min('seq').as('seq'))
      .where('org_id', '=', orgId)
      .where('seq', '>', String(headNow.seq))
      .executeTakeFirstOrThrow();
    const seq = Number(stray.seq);
    return bad(seq, `entry ${seq} lies beyond the head (at ${headNow.seq}): it was not written by the audit log`);
  }
  return { ok: true, entries: last };
}
