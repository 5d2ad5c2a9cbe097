// The audit log as a user meets it: every change and command on record, a chain that
// shows tampering, `berth audit` to read and check it.
// sandbox: none (test/fakes/fake-runner.ts; scripts/test.ts runs these more at once)
import assert from 'node:assert/strict';
import { sql } from 'kysely';
import { after, before, test } from 'node:test';
import { sh, startTestBerth, type TestBerth } from './helpers.ts';

let t: TestBerth;
before(async () => {
  t = await startTestBerth({ fake: true });
});
after(async () => {
  await t?.destroy();
});

test('changes and commands are on record, and an edited entry breaks the chain', async () => {
  const env = (await t.api('POST', '/api/orgs/default/environments', { name: 'audited' })).body;
  await sh(t, env.id, 'exit 3');
  await t.api('POST', `/api/orgs/default/environments/${env.id}/stop`);
  await t.api('POST', '/api/orgs/default/environments', { image: 'no-such-image' }); // refused: not a change

  const list = JSON.parse((await t.cli(['audit', 'list', '--json'])).stdout) as { action: string; actor: string; target: string; details: Record<string, unknown> }[];
  const actions = list.map((e) => e.action);
  // A command is on record before it runs (command.start) and again with its outcome (command.run).
  assert.deepEqual(actions.slice(0, 4), ['environment.stop', 'command.run', 'command.start', 'environment.create']);
  const start = list.find((e) => e.action === 'command.start')!;
  assert.deepEqual(start.details, { cmd: ['sh', '-c', 'exit 3'], cwd: null, tty: false });
  const run = list.find((e) => e.action === 'command.run')!;
  assert.deepEqual(run.details.cmd, ['sh', '-c', 'exit 3']);
  assert.equal(run.details.exitCode, 3);
  assert.equal(typeof run.details.durationMs, 'number');
  assert.match(run.actor, /^user:usr_/);
  assert.equal(run.target, env.id);

  const filtered = JSON.parse((await t.cli(['audit', 'list', '--action', 'command.run', '--since', '1h', '--json'])).stdout) as unknown[];
  assert.equal(filtered.length, 1);
  const byEnv = await t.api('GET', `/api/orgs/default/audit?environment=${env.id}`);
  assert.ok(byEnv.body.items.every((e: { environmentId: string }) => e.environmentId === env.id));

  const exported = await t.cli(['audit', 'export']);
  const lines = exported.stdout.trim().split('\n').map((l) => JSON.parse(l) as { seq: number });
  assert.deepEqual(lines.map((l) => l.seq), lines.map((_, i) => i + 1), 'oldest first, every entry');

  const ok = await t.cli(['audit', 'verify']);
  assert.equal(ok.code, 0);
  assert.match(ok.stdout, /^ok: \d+ entries/);

  // Someone with database access rewrites history: the chain says where.
  await sql`update audit_entries set details = ${JSON.stringify({ cmd: ['true'], exitCode: 0 })}::jsonb where action = 'command.run'`.execute(t.berth.database.db);
  const broken = await t.cli(['audit', 'verify']);
  assert.equal(broken.code, 1);
  assert.match(broken.stdout, /BROKEN at entry 3/);
});
