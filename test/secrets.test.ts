// Secrets: write-only through the API and CLI, encrypted at rest, handed to environments
// as variables, and never in any output, response or audit entry that Berth records.
// sandbox: none (test/fakes/fake-runner.ts; scripts/test.ts runs these more at once)
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startTestBerth, type TestBerth } from './helpers.ts';

const VALUE = 'sk-live-4f9a8b7c6d5e4f3a2b1c';
let t: TestBerth;
before(async () => {
  t = await startTestBerth({ fake: true });
});
after(async () => {
  await t?.destroy();
});

test('a secret set from stdin reaches its project environment and never comes back out', async () => {
  const set = await t.cli(['secret', 'set', 'API_KEY'], { input: `${VALUE}\n` });
  assert.equal(set.code, 0, set.stderr);
  const fromArgv = await t.cli(['secret', 'set', 'OTHER', VALUE]);
  assert.notEqual(fromArgv.code, 0, 'a value on the command line is refused');
  assert.equal((await t.cli(['project', 'create', 'shop', '--repo', 'http://127.0.0.1:9/acme/app.git', '--secret', 'API_KEY'])).code, 0);

  // At rest: only ciphertext, under a key file only root can read.
  const row = await t.berth.database.db.selectFrom('secrets').selectAll().where('name', '=', 'API_KEY').executeTakeFirstOrThrow();
  assert.doesNotMatch(row.ciphertext, new RegExp(VALUE));
  assert.doesNotMatch(Buffer.from(row.ciphertext, 'base64').toString('latin1'), new RegExp(VALUE));
  assert.equal(statSync(join(t.dataDir, 'secret.key')).mode & 0o777, 0o600);

  const env = (await t.api('POST', '/api/orgs/default/environments', { name: 'with-secrets', project: 'shop' })).body;
  assert.equal(env.state, 'running', JSON.stringify(env));

  // Inside, the command has it; what comes back has [secret:NAME] in its place, also when
  // printed in two halves across output chunks, and in base64.
  const script = 'test "$API_KEY" = "' + VALUE + '" && echo has-it; echo "key=$API_KEY"; printf %s "${API_KEY:0:9}"; sleep 0.3; printf "%s\\n" "${API_KEY:9}"; printf %s "$API_KEY" | base64';
  const r = (await t.api('POST', `/api/orgs/default/environments/${env.id}/exec`, { cmd: ['bash', '-c', script] })).body;
  assert.equal(r.stdout, 'has-it\nkey=[secret:API_KEY]\n[secret:API_KEY]\n[secret:API_KEY]\n');

  const cli = await t.cli(['env', 'exec', 'with-secrets', '--', 'sh', '-c', 'echo $API_KEY >&2']);
  assert.equal(cli.stderr, '[secret:API_KEY]\n');

  // Nowhere in what the API and the audit log give out.
  const everything = [
    JSON.stringify((await t.api('GET', '/api/orgs/default/secrets')).body),
    JSON.stringify((await t.api('GET', '/api/orgs/default/projects')).body),
    JSON.stringify((await t.api('GET', `/api/orgs/default/environments/${env.id}`)).body),
    (await t.api('GET', '/api/orgs/default/audit/export')).body as string,
  ].join('\n');
  assert.doesNotMatch(everything, new RegExp(VALUE));
  assert.match(everything, /"API_KEY"/);

  const audit = await t.api('GET', '/api/orgs/default/audit?action=secret.read');
  assert.ok(audit.body.items.length >= 1);
  assert.deepEqual(audit.body.items[0].details.names, ['API_KEY']);
  assert.equal(audit.body.items[0].actor, `environment:${env.id}`);
});

test('viewers and members cannot manage secrets; values are never readable', async () => {
  for (const role of ['viewer', 'member']) {
    const token = (await t.api('POST', '/api/orgs/default/tokens', { role })).body.token;
    const res = await fetch(`${t.client.url}/api/orgs/default/secrets/X_KEY`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ value: 'zzzzzzzz' }),
    });
    assert.equal(res.status, 403, role);
  }
  const list = await t.api('GET', '/api/orgs/default/secrets');
  for (const item of list.body.items) assert.deepEqual(Object.keys(item).sort(), ['name', 'project', 'updatedAt', 'updatedBy']);
});

test('files copied out of an environment with secrets arrive byte for byte', async () => {
  const r = (await t.api('POST', '/api/orgs/default/environments/with-secrets/exec', { cmd: ['sh', '-c', 'head -c 200000 /dev/urandom > /workspace/blob && sha256sum /workspace/blob'] })).body;
  const expected = r.stdout.split(' ')[0];
  const out = await import('node:fs').then((fs) => fs.mkdtempSync(join(t.dataDir, 'out-')));
  const cp = await t.cli(['env', 'cp', 'with-secrets:/workspace/blob', out]);
  assert.equal(cp.code, 0, cp.stderr);
  const { createHash } = await import('node:crypto');
  const { readFileSync } = await import('node:fs');
  assert.equal(createHash('sha256').update(readFileSync(join(out, 'blob'))).digest('hex'), expected);
});
