// The sandbox's firewall and the record of what it refused: a real environment on the real
// runner (the rest of the policy tests, in policy.test.ts, run on the fake one).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { NetworkEvent } from '../src/server/policy/types.ts';
import { startTestBerth, type TestBerth } from './helpers.ts';

let t: TestBerth;
before(async () => {
  t = await startTestBerth();
});
after(async () => {
  await t?.destroy();
});

test("a direct connection the firewall refuses is an event with its destination, port and rule: in the CLI, the API and the audit log", async () => {
  const env = (await t.api('POST', '/api/orgs/default/environments', { name: 'direct' })).body;
  assert.equal(env.state, 'running', JSON.stringify(env));
  const r = await t.cli(['env', 'exec', 'direct', '--', 'python3', '-c', "import socket\nfor p in (443, 443, 8443):\n  s=socket.socket();s.settimeout(3)\n  try: s.connect(('1.1.1.1',p))\n  except OSError as e: print(e)"]);
  assert.match(r.stdout, /refused/i, r.stderr);
  let cli = '';
  await until(async () => /TCP\s+1\.1\.1\.1:8443/.test((cli = (await t.cli(['env', 'network', 'direct', '--denied'])).stdout)));
  assert.match(cli, /TCP\s+1\.1\.1\.1:443\s+-\s+DENIED \(\d packets?\)\s+deny:firewall:direct-connection/);
  const api = await t.api('GET', `/api/orgs/default/environments/${env.id}/network?denied=true`);
  // Both attempts on 443 in one event, or in two if a read fell between them.
  const on443 = api.body.items.filter((e: { port: number }) => e.port === 443);
  assert.deepEqual([...new Set(on443.map((e: NetworkEvent) => `${e.kind} ${e.method} ${e.host} ${e.allowed} ${e.rule}`))], ['firewall TCP 1.1.1.1 false deny:firewall:direct-connection']);
  assert.equal(on443.reduce((n: number, e: NetworkEvent) => n + e.packets!, 0), 2);
  await until(async () => (await t.api('GET', `/api/orgs/default/audit?action=network.denied&environment=${env.id}`)).body.items.length === 2);
  const audit = (await t.api('GET', `/api/orgs/default/audit?action=network.denied&environment=${env.id}`)).body.items;
  assert.deepEqual(audit.map((a: { target: string }) => a.target).sort(), ['1.1.1.1:443', '1.1.1.1:8443']);
  assert.ok(audit.every((a: { details: { packets: number } }) => a.details.packets >= 1));
});

async function until(check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 100));
  }
}
