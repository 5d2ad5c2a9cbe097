// The audit log on both databases: the hash chain under concurrent appends (one process
// and two replicas), tamper detection, list and export, and the SIEM webhook against a
// real HTTP server. Run directly it covers PGlite and, when reachable, PostgreSQL; under
// `npm test` (BERTH_TEST_DATABASE set) it covers the database of that pass.
import assert from 'node:assert/strict';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import pino from 'pino';
import { AuditLog, computeHash, WebhookSink, type AuditEntry, type AuditLogger } from '../src/server/audit/index.ts';
import { openDatabase, type Db } from '../src/server/db/index.ts';
import { BerthError } from '../src/shared/errors.ts';
import { freshDatabase, POSTGRES_SERVER, postgresReachable } from './postgres.ts';

const silent = pino({ level: 'silent' });
const pass = process.env.BERTH_TEST_DATABASE;
const server = pass === 'embedded' ? false : await postgresReachable();

interface Backend {
  db: Db;
  /** A second connection to the same database, as another replica would have. */
  replica(): Promise<{ db: Db; close(): Promise<void> }>;
  close(): Promise<void>;
}

async function pglite(): Promise<Backend> {
  const dir = mkdtempSync(join(tmpdir(), 'berth-audit-'));
  const handle = await openDatabase({ dataDir: dir });
  return {
    db: handle.db,
    // One process owns a PGlite directory: the "replica" is a second AuditLog on it.
    replica: async () => ({ db: handle.db, close: async () => {} }),
    async close() {
      await handle.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function postgres(): Promise<Backend> {
  const database = await freshDatabase();
  const handle = await openDatabase({ dataDir: '', databaseUrl: database.url });
  return {
    db: handle.db,
    async replica() {
      const other = await openDatabase({ dataDir: '', databaseUrl: database.url });
      return { db: other.db, close: other.close };
    },
    async close() {
      await handle.close();
      await database.drop();
    },
  };
}

let orgs = 0;
async function newOrg(db: Db): Promise<string> {
  const id = `org_audit_${process.pid}_${++orgs}`;
  await db.insertInto('orgs').values({ id, name: id }).execute();
  return id;
}

/** A clock that moves one second per reading. */
function ticking(start = Date.parse('2026-01-01T00:00:00.000Z')) {
  let t = start - 1000;
  return () => new Date((t += 1000));
}

const backends = [
  { name: 'PGlite', open: pglite, skip: pass === 'postgres' ? 'this pass runs on PostgreSQL' : false },
  { name: 'PostgreSQL', open: postgres, skip: pass === 'embedded' ? 'this pass runs on PGlite' : server ? false : `no PostgreSQL at ${POSTGRES_SERVER}` },
] as const;

for (const backend of backends) {
  describe(`audit log on ${backend.name}`, { skip: backend.skip }, () => {
    let b: Backend;
    let audit: AuditLog;
    before(async () => {
      b = await backend.open();
      audit = new AuditLog({ db: b.db, logger: silent });
    });
    after(async () => {
      await audit.close();
      await b.close();
    });

    /** An org with n entries, appended one after another. */
    async function chain(n: number): Promise<{ orgId: string; entries: AuditEntry[] }> {
      const orgId = await newOrg(b.db);
      const entries: AuditEntry[] = [];
      for (let i = 1; i <= n; i++) entries.push(await audit.append({ orgId, actor: 'user:u1', action: 'command.run', details: { n: i } }));
      return { orgId, entries };
    }
    const run = (query: ReturnType<typeof sql>) => query.execute(b.db);

    test('1,000 appends issued at once form one chain, seq 1..1000, and export in order', async () => {
      const orgId = await newOrg(b.db);
      const results = await Promise.all(
        Array.from({ length: 1000 }, (_, i) =>
          audit.append({ orgId, actor: `user:u${i % 7}`, action: 'command.run', target: `env_${i % 3}`, environmentId: `env_${i % 3}`, details: { i, argv: ['ls', '-la'] } }),
        ),
      );
      const bySeq = [...results].sort((x, y) => x.seq - y.seq);
      assert.deepEqual(
        bySeq.map((e) => e.seq),
        Array.from({ length: 1000 }, (_, i) => i + 1),
      );
      assert.equal(bySeq[0]!.prevHash, '0'.repeat(64));
      for (let i = 1; i < bySeq.length; i++) assert.equal(bySeq[i]!.prevHash, bySeq[i - 1]!.hash);
      assert.deepEqual(await audit.verify(orgId), { ok: true, entries: 1000 });

      // Exactly one export page is full: the next, empty page ends the stream.
      const lines: string[] = [];
      for await (const line of audit.exportJsonl(orgId)) lines.push(line);
      assert.equal(lines.length, 1000);
      assert.ok(lines.every((l) => l.endsWith('\n') && !l.slice(0, -1).includes('\n')));
      assert.deepEqual(
        lines.map((l) => JSON.parse(l)),
        bySeq,
      );
    });

    test('two replicas appending to one org at once keep one unbroken chain', async () => {
      const replica = await b.replica();
      // Small batches, so the two replicas' transactions interleave many times.
      const mine = new AuditLog({ db: b.db, logger: silent, maxBatchSize: 16 });
      const other = new AuditLog({ db: replica.db, logger: silent, maxBatchSize: 16 });
      try {
        // A fresh org: both replicas race to create its head row too.
        const orgId = await newOrg(b.db);
        const appends: Promise<AuditEntry>[] = [];
        for (let i = 0; i < 400; i++) {
          appends.push(mine.append({ orgId, actor: 'replica:a', action: 'command.run', details: { i } }));
          appends.push(other.append({ orgId, actor: 'replica:b', action: 'command.run', details: { i } }));
        }
        const seqs = (await Promise.all(appends)).map((e) => e.seq).sort((x, y) => x - y);
        assert.deepEqual(
          seqs,
          Array.from({ length: 800 }, (_, i) => i + 1),
        );
        assert.deepEqual(await mine.verify(orgId), { ok: true, entries: 800 });
        assert.deepEqual(await other.verify(orgId), { ok: true, entries: 800 });
      } finally {
        await mine.close();
        await other.close();
        await replica.close();
      }
    });

    test('details come back from jsonb reordered and renormalized, and hash the same', async () => {
      const orgId = await newOrg(b.db);
      const details = {
        zeta: 1,
        a: { 'a much longer key': 1.0, b: [3, 2, { y: 1, x: 2 }], '': 'empty key' },
        big: 1e21,
        tiny: 5e-324,
        sum: 0.1 + 0.2,
        negativeZero: -0,
        text: 'ünïcödé 😀 \u2028 "quoted" \\ \n\t',
        when: new Date(0),
        gone: undefined,
        nan: Number.NaN,
        nested: { deeper: { deepest: [null, true, false, 'x'] } },
      };
      const appended = await audit.append({ orgId, actor: 'user:u1', action: 'secret.read', target: 'GITHUB_TOKEN', details });
      const [stored] = (await audit.list(orgId)).items;
      assert.ok(stored);
      assert.deepEqual(stored, appended);
      assert.deepEqual(stored.details, JSON.parse(JSON.stringify(details)));
      assert.equal(computeHash(stored), stored.hash);
      assert.deepEqual(await audit.verify(orgId), { ok: true, entries: 1 });
    });

    test('an entry the database would refuse or alter is refused alone; the rest of its batch commits', async () => {
      const orgId = await newOrg(b.db);
      const results = await Promise.allSettled([
        audit.append({ orgId, actor: 'user:u1', action: 'command.run', details: { n: 1 } }),
        audit.append({ orgId, actor: 'user:u1', action: 'command.run', details: { nul: 'a\u0000b' } }),
        audit.append({ orgId, actor: 'user:\ud800', action: 'command.run' }),
        audit.append({ orgId, actor: '', action: 'command.run' }),
        audit.append({ orgId, actor: 'user:u1', action: 'command.run', details: [1, 2] as never }),
        audit.append({ orgId, actor: 'user:u1', action: 'command.run', details: { n: 2 } }),
      ]);
      assert.deepEqual(
        results.map((r) => r.status),
        ['fulfilled', 'rejected', 'rejected', 'rejected', 'rejected', 'fulfilled'],
      );
      for (const r of results) if (r.status === 'rejected') assert.ok(r.reason instanceof BerthError && r.reason.kind === 'invalid', String(r.reason));
      assert.deepEqual(await audit.verify(orgId), { ok: true, entries: 2 });
    });

    test('a failed batch rejects its appends and writes nothing; other orgs are unaffected', async () => {
      const orgId = await newOrg(b.db);
      const [missing, fine] = await Promise.allSettled([
        Promise.all([1, 2, 3].map((n) => audit.append({ orgId: 'org_does_not_exist', actor: 'system', action: 'x.y', details: { n } }))),
        audit.append({ orgId, actor: 'system', action: 'x.y' }),
      ]);
      assert.equal(missing.status, 'rejected');
      assert.equal(fine.status, 'fulfilled');
      const rows = await b.db.selectFrom('audit_entries').select('seq').where('org_id', '=', 'org_does_not_exist').execute();
      assert.equal(rows.length, 0);
      assert.deepEqual(await audit.verify(orgId), { ok: true, entries: 1 });
    });

    test('tampering: an edited entry is reported at its seq', async () => {
      const { orgId } = await chain(10);
      await run(sql`update audit_entries set details = '{"n": 500}' where org_id = ${orgId} and seq = 5`);
      const result = await audit.verify(orgId);
      assert.equal(result.ok, false);
      assert.ok(!result.ok);
      assert.equal(result.firstBadSeq, 5);
      assert.equal(result.entries, 4);
      assert.match(result.reason, /altered/);
    });

    test('tampering: a deleted middle entry is a gap', async () => {
      const { orgId } = await chain(10);
      await run(sql`delete from audit_entries where org_id = ${orgId} and seq = 5`);
      const result = await audit.verify(orgId);
      assert.ok(!result.ok);
      assert.equal(result.firstBadSeq, 5);
      assert.match(result.reason, /entry 5 is missing/);
    });

    test('tampering: a deleted last entry no longer matches the head', async () => {
      const { orgId } = await chain(10);
      await run(sql`delete from audit_entries where org_id = ${orgId} and seq = 10`);
      const result = await audit.verify(orgId);
      assert.ok(!result.ok);
      assert.equal(result.firstBadSeq, 10);
      assert.equal(result.entries, 9);
      assert.match(result.reason, /head/);
    });

    test('tampering: a changed hash is caught, and a forged entry with a recomputed hash breaks the next link', async () => {
      const garbled = await chain(10);
      await run(sql`update audit_entries set hash = ${'f'.repeat(64)} where org_id = ${garbled.orgId} and seq = 5`);
      const first = await audit.verify(garbled.orgId);
      assert.ok(!first.ok);
      assert.equal(first.firstBadSeq, 5);

      // The careful forger rewrites entry 5 and gives it the hash its new contents deserve.
      const forged = await chain(10);
      const original = forged.entries[4]!;
      const rewritten = { ...original, details: { n: 'forged' } };
      const hash = computeHash(rewritten);
      await run(sql`update audit_entries set details = ${JSON.stringify(rewritten.details)}::jsonb, hash = ${hash} where org_id = ${forged.orgId} and seq = 5`);
      const second = await audit.verify(forged.orgId);
      assert.ok(!second.ok);
      assert.equal(second.firstBadSeq, 6);
      assert.equal(second.entries, 5);
      assert.match(second.reason, /does not link to entry 5/);

      // Forging the last entry instead leaves the head pointing at the old hash.
      const last = await chain(3);
      const rewrittenLast = { ...last.entries[2]!, details: { n: 'forged' } };
      await run(
        sql`update audit_entries set details = '{"n":"forged"}'::jsonb, hash = ${computeHash(rewrittenLast)} where org_id = ${last.orgId} and seq = 3`,
      );
      const third = await audit.verify(last.orgId);
      assert.ok(!third.ok);
      assert.equal(third.firstBadSeq, 3);
    });

    test('tampering: a row inserted past the head is reported', async () => {
      const { orgId, entries } = await chain(10);
      const extra = { ...entries[9]!, seq: 11, prevHash: entries[9]!.hash, details: { n: 11 } };
      await run(sql`insert into audit_entries (org_id, seq, at, actor, action, details, prev_hash, hash)
        values (${orgId}, 11, ${extra.at}, ${extra.actor}, ${extra.action}, '{"n":11}', ${extra.prevHash}, ${computeHash(extra)})`);
      const result = await audit.verify(orgId);
      assert.ok(!result.ok);
      assert.equal(result.firstBadSeq, 11);
      assert.match(result.reason, /beyond the head/);
    });

    test('verify: an org without entries is ok; entries appended during a walk are left for the next', async () => {
      const empty = await newOrg(b.db);
      assert.deepEqual(await audit.verify(empty), { ok: true, entries: 0 });
      const { orgId } = await chain(5);
      const [result] = await Promise.all([audit.verify(orgId), ...Array.from({ length: 50 }, () => audit.append({ orgId, actor: 'system', action: 'x.y' }))]);
      assert.equal(result.ok, true);
      assert.ok(result.entries >= 5);
      assert.deepEqual(await audit.verify(orgId), { ok: true, entries: 55 });
    });

    test('list: newest first, filters, keyset pages; export takes the same filters oldest first', async () => {
      const orgId = await newOrg(b.db);
      const log = new AuditLog({ db: b.db, logger: silent, now: ticking() });
      // seq n happens at 2026-01-01T00:00:(n-1)s.
      for (let n = 1; n <= 25; n++) {
        await log.append({
          orgId,
          actor: n % 2 ? 'user:a' : 'user:b',
          action: n % 5 === 0 ? 'environment.create' : 'command.run',
          environmentId: n % 3 === 0 ? 'env_three' : null,
          details: { n },
        });
      }
      const seqs = (items: AuditEntry[]) => items.map((e) => e.seq);
      const range = (from: number, to: number) => Array.from({ length: from - to + 1 }, (_, i) => from - i);

      const all = await log.list(orgId);
      assert.deepEqual(seqs(all.items), range(25, 1));
      assert.equal(all.nextCursor, null);

      const pages: number[][] = [];
      let cursor: string | undefined;
      do {
        const page = await log.list(orgId, { limit: 10, cursor });
        pages.push(seqs(page.items));
        cursor = page.nextCursor ?? undefined;
      } while (cursor);
      assert.deepEqual(pages, [range(25, 16), range(15, 6), range(5, 1)]);

      assert.deepEqual(seqs((await log.list(orgId, { actor: 'user:b' })).items), range(24, 2).filter((n) => n % 2 === 0));
      assert.deepEqual(seqs((await log.list(orgId, { action: 'environment.create' })).items), [25, 20, 15, 10, 5]);
      assert.deepEqual(seqs((await log.list(orgId, { environmentId: 'env_three' })).items), [24, 21, 18, 15, 12, 9, 6, 3]);
      const window = { since: new Date('2026-01-01T00:00:10Z'), until: new Date('2026-01-01T00:00:15Z') };
      assert.deepEqual(seqs((await log.list(orgId, window)).items), range(15, 11));

      // Filters and pages together.
      const first = await log.list(orgId, { actor: 'user:a', action: 'command.run', limit: 4 });
      assert.deepEqual(seqs(first.items), [23, 21, 19, 17]);
      const second = await log.list(orgId, { actor: 'user:a', action: 'command.run', limit: 4, cursor: first.nextCursor! });
      assert.deepEqual(seqs(second.items), [13, 11, 9, 7]);
      const third = await log.list(orgId, { actor: 'user:a', action: 'command.run', limit: 4, cursor: second.nextCursor! });
      assert.deepEqual(seqs(third.items), [3, 1]);
      assert.equal(third.nextCursor, null);

      assert.equal((await log.list(orgId, { limit: 5000 })).items.length, 25);
      await assert.rejects(log.list(orgId, { limit: 0 }), (err: BerthError) => err.kind === 'invalid');
      await assert.rejects(log.list(orgId, { cursor: 'not-a-cursor' }), (err: BerthError) => err.kind === 'invalid');
      // Another org's entries never show.
      assert.deepEqual((await log.list(await newOrg(b.db))).items, []);

      const exported: AuditEntry[] = [];
      for await (const line of log.exportJsonl(orgId, { actor: 'user:b', since: window.since })) exported.push(JSON.parse(line));
      assert.deepEqual(seqs(exported), [12, 14, 16, 18, 20, 22, 24]);
      assert.equal(exported[0]!.at, '2026-01-01T00:00:11.000Z');
      assert.deepEqual(exported, (await log.list(orgId, { actor: 'user:b', since: window.since })).items.reverse());
    });
  });
}

describe('SIEM webhook sink', () => {
  interface Received {
    seqs: number[];
    requests: number;
    badSignatures: number;
    contentTypes: Set<string>;
    batchSizes: number[];
  }
  const SECRET = 'siem-shared-secret';

  /** A collector on 127.0.0.1 that answers `statuses` in turn, then 200; records what it took. */
  async function collector(statuses: number[] = []) {
    const got: Received = { seqs: [], requests: 0, badSignatures: 0, contentTypes: new Set(), batchSizes: [] };
    const server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const body = Buffer.concat(chunks);
      got.requests++;
      const status = statuses.shift() ?? 200;
      if (status === 200) {
        const expected = Buffer.from(`sha256=${createHmac('sha256', SECRET).update(body).digest('hex')}`);
        const signature = Buffer.from(String(req.headers['x-berth-signature'] ?? ''));
        if (signature.length !== expected.length || !timingSafeEqual(signature, expected)) got.badSignatures++;
        got.contentTypes.add(String(req.headers['content-type']));
        const lines = body.toString('utf8').split('\n').filter(Boolean);
        got.batchSizes.push(lines.length);
        for (const line of lines) got.seqs.push((JSON.parse(line) as AuditEntry).seq);
      }
      res.writeHead(status).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/audit`;
    return { got, url, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
  }

  let b: Backend;
  before(async () => {
    b = await pglite();
  });
  after(() => b.close());

  test('every committed entry reaches the collector once, signed, in batches', async () => {
    const siem = await collector();
    const sink = new WebhookSink({ url: siem.url, secret: SECRET, batchSize: 50, flushIntervalMs: 20, logger: silent });
    const audit = new AuditLog({ db: b.db, logger: silent, sinks: [sink] });
    try {
      const orgId = await newOrg(b.db);
      await Promise.all(Array.from({ length: 237 }, (_, i) => audit.append({ orgId, actor: 'system', action: 'x.y', details: { i } })));
      await audit.close();
      assert.deepEqual(
        [...siem.got.seqs].sort((x, y) => x - y),
        Array.from({ length: 237 }, (_, i) => i + 1),
      );
      assert.deepEqual(siem.got.seqs, [...siem.got.seqs].sort((x, y) => x - y), 'in commit order');
      assert.equal(siem.got.badSignatures, 0);
      assert.deepEqual([...siem.got.contentTypes], ['application/x-ndjson']);
      assert.ok(siem.got.batchSizes.every((n) => n <= 50));
    } finally {
      await siem.close();
    }
  });

  test('a collector answering 500 twice, then 200, still gets every entry exactly once', async () => {
    const siem = await collector([500, 500]);
    const warnings: unknown[][] = [];
    const logger: AuditLogger = { warn: (...args: unknown[]) => void warnings.push(args), error: () => {} };
    const sink = new WebhookSink({ url: siem.url, secret: SECRET, batchSize: 40, flushIntervalMs: 10, retryBaseMs: 10, logger });
    const audit = new AuditLog({ db: b.db, logger: silent, sinks: [sink] });
    try {
      const orgId = await newOrg(b.db);
      await Promise.all(Array.from({ length: 120 }, (_, i) => audit.append({ orgId, actor: 'system', action: 'x.y', details: { i } })));
      await audit.close();
      assert.deepEqual(
        siem.got.seqs,
        Array.from({ length: 120 }, (_, i) => i + 1),
      );
      assert.equal(siem.got.requests, siem.got.batchSizes.length + 2);
      assert.equal(siem.got.badSignatures, 0);
      assert.equal(warnings.length, 2, 'one warning per failed attempt');
    } finally {
      await siem.close();
    }
  });

  test('while the SIEM is down the queue stays bounded, dropping the oldest with a warning', async () => {
    let up = false;
    const delivered: number[] = [];
    const fakeFetch = (async (_url: string, init: RequestInit) => {
      if (!up) throw new TypeError('fetch failed: connect ECONNREFUSED');
      for (const line of String(init.body).split('\n').filter(Boolean)) delivered.push((JSON.parse(line) as AuditEntry).seq);
      return new Response(null, { status: 204 });
    }) as typeof fetch;
    const warnings: string[] = [];
    const logger: AuditLogger = { warn: (_obj: unknown, msg?: string) => void warnings.push(String(msg)), error: () => {} };
    const sink = new WebhookSink({ url: 'http://siem.invalid/', batchSize: 10, maxQueue: 100, flushIntervalMs: 5, retryBaseMs: 5, retryMaxMs: 20, fetch: fakeFetch, logger });
    const entry = (seq: number) => ({ orgId: 'o', seq, at: new Date(0).toISOString(), actor: 'system', action: 'x.y', target: null, environmentId: null, details: {}, prevHash: '', hash: '' });

    for (let seq = 1; seq <= 500; seq += 10) {
      await sink.deliver(Array.from({ length: 10 }, (_, i) => entry(seq + i)));
      await new Promise((r) => setTimeout(r, 1));
    }
    assert.equal(warnings.filter((w) => /dropping the oldest/.test(w)).length, 1, 'one warning per outage, not per entry');
    up = true;
    await sink.flush();
    await sink.close();
    // The batch in flight when the SIEM went down, then the newest 100.
    assert.ok(delivered.length <= 110, `delivered ${delivered.length}`);
    assert.deepEqual(delivered.slice(-100), Array.from({ length: 100 }, (_, i) => 401 + i));
    assert.ok(warnings.some((w) => /taking audit entries again/.test(w)));
  });
});
