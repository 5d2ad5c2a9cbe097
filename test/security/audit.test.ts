// Issue #11, findings 8 and 9: attacks on the audit log.
//
// 8. A command must not run off the record: argv the log cannot store (a lone UTF-16
//    surrogate, NUL) is refused before anything runs, argv too big for an entry runs and is
//    recorded cut short with a hash of the whole, and a command whose entry cannot be
//    written does not run. Attacked through the real exec API, stream, terminal and the
//    service the task pipeline uses, in a real environment.
// 9. Someone with write access to the database (but not the audit key) rewrites history,
//    recomputing every later hash, or cuts off the newest entries: verify says so. Rolling
//    back to a head the server once signed is what a checkpoint kept outside detects.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { WebSocket } from 'ws';
import { computeHash } from '../../src/server/audit/index.ts';
import { toEntry } from '../../src/server/audit/rows.ts';
import { callTool } from '../../src/agent/tools/index.ts';
import { TOOLS } from '../../src/agent/index.ts';
import { runIn, SandboxWorkspace, taskScope } from '../../src/server/tasks/sandbox.ts';
import { sh, startTestBerth, type TestBerth } from '../helpers.ts';

let t: TestBerth;
let env: { id: string };
const TASK = 'task_audit_test';
before(async () => {
  t = await startTestBerth();
  env = (await t.api('POST', '/api/orgs/default/environments', { name: 'audit-attacks' })).body;
  // The callers inside the control plane below act as a task, and a task uses only the environment it made.
  await t.berth.database.db.updateTable('environments').set({ task_id: TASK }).where('id', '=', env.id).execute();
});
after(async () => {
  await t?.destroy();
});

const db = () => t.berth.database.db;
const execPath = () => `/api/orgs/default/environments/${env.id}/exec`;
const exists = async (path: string) => (await sh(t, env.id, `test -e ${path} && echo yes || echo no`)).stdout.trim() === 'yes';
type Item = { seq: number; action: string; details: Record<string, unknown> };
const entriesOf = async (action: string): Promise<Item[]> =>
  (await t.api('GET', `/api/orgs/default/audit?action=${action}&environment=${env.id}&limit=1000`)).body.items;
/** The entries of the commands that would have created `/tmp/MARKER` (not those that looked for it). */
const recorded = async (action: string, marker: string) => (await entriesOf(action)).filter((e) => String((e.details.cmd as string[])[2]).startsWith(`touch /tmp/${marker}`));

describe('finding 8: no command runs off the record', () => {
  test('a lone surrogate in argv is refused with 400 before the command runs (JSON and streaming exec)', async () => {
    const cmd = ['sh', '-c', 'touch /tmp/surrogate-ran; echo "$1"', 'sh', 'evade\ud800'];
    const res = await t.api('POST', execPath(), { cmd });
    assert.equal(res.status, 400, JSON.stringify(res.body));
    assert.equal(res.body.error.kind, 'invalid');
    assert.match(res.body.error.message, /UTF-16/);

    const streamed = await fetch(`${t.client.url}${execPath()}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t.client.token}`, 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify({ cmd }),
    });
    assert.equal(streamed.status, 400);
    await streamed.body?.cancel();

    assert.equal(await exists('/tmp/surrogate-ran'), false, 'the refused command did not run');
    assert.deepEqual(await recorded('command.start', 'surrogate-ran'), []);
  });

  test('a lone surrogate in a terminal start frame is refused before the command runs', async () => {
    const ws = new WebSocket(`${t.client.url.replace('http', 'ws')}/api/orgs/default/environments/${env.id}/attach`, { headers: { authorization: `Bearer ${t.client.token}` } });
    const frames: string[] = [];
    await new Promise<void>((resolve, reject) => {
      ws.on('error', reject);
      ws.on('open', () => ws.send(JSON.stringify({ type: 'start', cmd: ['sh', '-c', 'touch /tmp/attach-ran', 'sh', '\udc00'] })));
      ws.on('message', (data, binary) => void (!binary && frames.push(data.toString())));
      ws.on('close', () => resolve());
    });
    assert.ok(frames.some((f) => /"kind":"invalid"/.test(f) && /UTF-16/.test(f)), frames.join('\n'));
    assert.equal(await exists('/tmp/attach-ran'), false);
  });

  test('callers inside the control plane (task pipeline, agent tools) get the same refusal', async () => {
    const scope = taskScope((await db().selectFrom('orgs').select('id').where('name', '=', 'default').executeTakeFirstOrThrow()).id, TASK);
    for (const bad of ['\ud83d', 'a\u0000b']) {
      await assert.rejects(t.berth.environments.exec(scope, env.id, { cmd: ['sh', '-c', 'touch /tmp/task-ran', 'sh', bad] }), (err: Error & { kind?: string }) => err.kind === 'invalid');
    }
    await assert.rejects(t.berth.environments.exec(scope, env.id, { cmd: ['sh', '-c', 'touch /tmp/task-ran'], cwd: '/tmp/\udfff' }), (err: Error & { kind?: string }) => err.kind === 'invalid');
    assert.equal(await exists('/tmp/task-ran'), false);
  });

  test("an agent's run_command with a lone surrogate comes back to the model as a refusal, and nothing runs", async () => {
    const scope = taskScope((await db().selectFrom('orgs').select('id').where('name', '=', 'default').executeTakeFirstOrThrow()).id, TASK);
    const workspace = new SandboxWorkspace({ root: '/tmp', env: {}, run: (cmd, o) => runIn(t.berth.environments, scope, env.id, cmd, o) });
    const out = await callTool(TOOLS, { id: 'call_1', name: 'run_command', arguments: JSON.stringify({ command: 'touch /tmp/agent-ran; echo \ud800' }) }, { workspace, deadline: null });
    assert.equal(out.error, true);
    assert.match(out.output, /run_command was refused: .*UTF-16/);
    assert.equal(await exists('/tmp/agent-ran'), false);
  });

  test('more than 64 KiB of argv runs and is on record, cut short, with the size and hash of the whole', async () => {
    const cmd = ['sh', '-c', 'touch /tmp/big-argv-ran', 'sh', ...Array.from({ length: 4 }, (_, i) => `${i}`.repeat(30 * 1024)), 'x'.repeat(100 * 1024)];
    const res = await t.api('POST', execPath(), { cmd });
    assert.equal(res.status, 200, JSON.stringify(res.body).slice(0, 500));
    assert.equal(await exists('/tmp/big-argv-ran'), true);

    const whole = JSON.stringify(cmd);
    for (const action of ['command.start', 'command.run']) {
      const [entry] = await recorded(action, 'big-argv-ran');
      assert.ok(entry, `a ${action} entry for the big command`);
      assert.equal(entry.details.cmdTruncated, true);
      assert.equal(entry.details.cmdBytes, Buffer.byteLength(whole));
      assert.equal(entry.details.cmdSha256, createHash('sha256').update(whole).digest('hex'));
      assert.ok(Buffer.byteLength(JSON.stringify(entry.details)) < 64 * 1024);
      assert.deepEqual((entry.details.cmd as string[]).slice(0, 3), cmd.slice(0, 3), 'the program and script are kept whole');
    }
    const [run] = await recorded('command.run', 'big-argv-ran');
    const [start] = await recorded('command.start', 'big-argv-ran');
    assert.equal(run!.details.exitCode, 0);
    assert.equal(run!.details.startSeq, start!.seq);
    assert.ok(start!.seq < run!.seq, 'on record before it ran');
    assert.equal((await t.cli(['audit', 'verify'])).code, 0);
  });

  test('a command whose audit entry cannot be written does not run; a change that cannot be recorded is not reported as done', async () => {
    // The database refuses command entries (a full disk, a lost connection, a revoked grant all look alike to Berth).
    await sql`create or replace function berth_test_refuse_audit() returns trigger language plpgsql as $$
      begin
        if new.action in ('command.start', 'command.run', 'secret.set') then raise exception 'audit storage unavailable'; end if;
        return new;
      end $$`.execute(db());
    await sql`create trigger berth_test_refuse_audit before insert on audit_entries for each row execute function berth_test_refuse_audit()`.execute(db());
    try {
      const res = await t.api('POST', execPath(), { cmd: ['sh', '-c', 'touch /tmp/unrecorded-ran'] });
      assert.equal(res.status, 503, JSON.stringify(res.body));
      assert.match(res.body.error.message, /audit log/);
      assert.doesNotMatch(res.body.error.message, /audit storage unavailable/, 'the database error stays in the server log');

      const change = await t.api('PUT', '/api/orgs/default/secrets/UNRECORDED', { value: 'v' });
      assert.equal(change.status, 503, JSON.stringify(change.body));
      assert.match(change.body.error.message, /not recorded in the audit log/);
    } finally {
      await sql`drop trigger berth_test_refuse_audit on audit_entries`.execute(db());
      await sql`drop function berth_test_refuse_audit()`.execute(db());
    }
    assert.equal(await exists('/tmp/unrecorded-ran'), false, 'the command did not run');
    assert.deepEqual(await recorded('command.start', 'unrecorded-ran'), []);
  });
});

describe('finding 9: the chain head is signed with a key the database does not hold', () => {
  let orgs = 0;
  /** A fresh org with n entries (org.create, then secret.set), so each attack has its own chain. */
  async function orgWithEntries(n: number): Promise<{ name: string; id: string }> {
    const name = `chain-${++orgs}`;
    assert.equal((await t.api('POST', '/api/orgs', { name })).status, 201);
    for (let i = 2; i <= n; i++) assert.equal((await t.api('PUT', `/api/orgs/${name}/secrets/S${i}`, { value: 'v' })).status, 200);
    const { id } = await db().selectFrom('orgs').select('id').where('name', '=', name).executeTakeFirstOrThrow();
    return { name, id };
  }
  const rowsOf = async (orgId: string) => (await db().selectFrom('audit_entries').selectAll().where('org_id', '=', orgId).orderBy('seq').execute()).map(toEntry);
  const verify = (org: string, ...args: string[]) => t.cli(['--org', org, 'audit', 'verify', ...args]);

  test('rewriting an entry and recomputing every later hash and the head is reported', async () => {
    const org = await orgWithEntries(6);
    assert.equal((await verify(org.name)).code, 0);
    const entries = await rowsOf(org.id);
    let prev = entries[1]!.hash;
    for (const e of entries.slice(2)) {
      const forged = { ...e, prevHash: prev, ...(e.seq === 3 && { actor: 'user:someone_else' }) };
      const hash = computeHash(forged);
      await db().updateTable('audit_entries').set({ actor: forged.actor, prev_hash: prev, hash }).where('org_id', '=', org.id).where('seq', '=', String(e.seq)).execute();
      prev = hash;
    }
    await db().updateTable('audit_heads').set({ hash: prev }).where('org_id', '=', org.id).execute();

    const res = await verify(org.name);
    assert.equal(res.code, 1, res.stdout);
    assert.match(res.stdout, /BROKEN.*signature/);
  });

  test('deleting the newest entries and moving the head back is reported', async () => {
    const org = await orgWithEntries(6);
    const entries = await rowsOf(org.id);
    await db().deleteFrom('audit_entries').where('org_id', '=', org.id).where('seq', '>', '4').execute();
    await db().updateTable('audit_heads').set({ seq: 4, hash: entries[3]!.hash }).where('org_id', '=', org.id).execute();

    const res = await verify(org.name);
    assert.equal(res.code, 1, res.stdout);
    assert.match(res.stdout, /BROKEN.*signature/);

    // Removing the signature is no way out either.
    await sql`update audit_heads set mac = null where org_id = ${org.id}`.execute(db());
    const unsigned = await verify(org.name);
    assert.equal(unsigned.code, 1);
    assert.match(unsigned.stdout, /BROKEN.*not signed/);

    // The next append does not launder the break: the head it moves to stays unsigned.
    assert.equal((await t.api('PUT', `/api/orgs/${org.name}/secrets/AFTER`, { value: 'v' })).status, 200);
    assert.match((await verify(org.name)).stdout, /BROKEN.*not signed/);
    // Until an owner who has looked reseals it; the reseal is on record.
    const resealed = await t.cli(['--org', org.name, 'audit', 'reseal']);
    assert.equal(resealed.code, 0, resealed.stderr);
    assert.equal((await verify(org.name)).code, 0);
    const [newest] = (await t.api('GET', `/api/orgs/${org.name}/audit?limit=1`)).body.items;
    assert.equal(newest.action, 'audit.reseal');
    assert.match((await t.cli(['--org', org.name, 'audit', 'reseal'])).stderr, /signed already/);
  });

  test('a checkpoint kept outside detects a later cut back to a head the server once signed', async () => {
    const org = await orgWithEntries(5);
    // The attacker keeps a copy of the signed head at entry 5...
    const oldHead = await db().selectFrom('audit_heads').selectAll().where('org_id', '=', org.id).executeTakeFirstOrThrow();
    for (let i = 6; i <= 8; i++) assert.equal((await t.api('PUT', `/api/orgs/${org.name}/secrets/T${i}`, { value: 'v' })).status, 200);
    // ...the SIEM stores a checkpoint at entry 8...
    const file = join(t.dataDir, `checkpoint-${org.name}.json`);
    const taken = await t.cli(['--org', org.name, 'audit', 'checkpoint', '--output', file]);
    assert.equal(taken.code, 0, taken.stderr);
    const checkpoint = JSON.parse(readFileSync(file, 'utf8')).checkpoint as { org: string; seq: number; hash: string; at: string; hmac: string };
    assert.equal(checkpoint.seq, 8);
    assert.equal(checkpoint.org, org.id);
    assert.equal((await verify(org.name, '--since-checkpoint', file)).code, 0, 'an intact log passes');
    for (let i = 9; i <= 10; i++) await t.api('PUT', `/api/orgs/${org.name}/secrets/T${i}`, { value: 'v' });

    // ...and later the attacker cuts the log back to entry 5 and restores the old head.
    await db().deleteFrom('audit_entries').where('org_id', '=', org.id).where('seq', '>', '5').execute();
    await db().updateTable('audit_heads').set(oldHead).where('org_id', '=', org.id).execute();

    const res = await verify(org.name, '--since-checkpoint', file);
    assert.equal(res.code, 1, res.stdout);
    assert.match(res.stdout, /BROKEN at entry 6: .*checkpoint/);

    // A checkpoint someone edited is refused rather than trusted.
    writeFileSync(file, JSON.stringify({ checkpoint: { ...checkpoint, seq: 4 } }));
    const edited = await verify(org.name, '--since-checkpoint', file);
    assert.notEqual(edited.code, 0);
    assert.match(edited.stderr, /checkpoint .*not one this server signed/);
  });

  test('the export offers a signed checkpoint for what it contains', async () => {
    const org = await orgWithEntries(3);
    const file = join(t.dataDir, `export-checkpoint-${org.name}.json`);
    const exported = await t.cli(['--org', org.name, 'audit', 'export', '--checkpoint', file]);
    assert.equal(exported.code, 0, exported.stderr);
    const lines = exported.stdout.trim().split('\n').map((l) => JSON.parse(l) as { seq: number; hash: string });
    const { checkpoint } = JSON.parse(readFileSync(file, 'utf8')) as { checkpoint: { seq: number; hash: string } };
    assert.equal(checkpoint.seq, 3);
    assert.equal(lines.find((l) => l.seq === checkpoint.seq)?.hash, checkpoint.hash, 'an outside system can match the export against the checkpoint');
  });

  test('--since longer than the log can be old lists from the start instead of crashing (finding 20: durations past what a Date holds)', async () => {
    const listed = await t.cli(['audit', 'list', '--since', '999999999999999d', '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    assert.doesNotMatch(listed.stderr, /RangeError/);
    assert.ok((JSON.parse(listed.stdout) as unknown[]).length > 0, 'every entry is since the start');
  });
});

describe('the audit key on upgrade', () => {
  test('heads from before signing are adopted only by the start that creates the key file', async () => {
    const first = await startTestBerth();
    let current = first;
    try {
      assert.equal((await first.api('PUT', '/api/orgs/default/secrets/BEFORE', { value: 'v' })).status, 200);
      // As a database from before heads were signed looks.
      await sql`update audit_heads set mac = null`.execute(first.berth.database.db);
      await first.close();

      // The key file is there: an unsigned head is not trusted on sight.
      current = await startTestBerth({ dataDir: first.dataDir, database: first.database });
      assert.match((await current.cli(['audit', 'verify'])).stdout, /BROKEN.*not signed/);
      await current.close();

      // A new key file cannot have signed anything: the heads it finds unsigned are adopted.
      rmSync(join(first.dataDir, 'audit.key'));
      current = await startTestBerth({ dataDir: first.dataDir, database: first.database });
      assert.equal((statSync(join(first.dataDir, 'audit.key')).mode & 0o777).toString(8), '600');
      const ok = await current.cli(['audit', 'verify']);
      assert.equal(ok.code, 0, ok.stdout);
    } finally {
      await current.destroy();
    }
  });
});
