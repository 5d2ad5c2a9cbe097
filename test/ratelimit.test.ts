// Rate limits: per token on the API, per address on sign-in.
// sandbox: none (test/fakes/fake-runner.ts; scripts/test.ts runs these more at once)
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startTestBerth, type TestBerth } from './helpers.ts';

let t: TestBerth;
before(async () => {
  t = await startTestBerth({ fake: true, tokenRateLimit: 5 });
});
after(async () => {
  await t?.destroy();
});

test('a token past its limit gets 429 with when to retry; another token is unaffected', async () => {
  const statuses: number[] = [];
  for (let i = 0; i < 7; i++) statuses.push((await t.api('GET', '/api/orgs/default/environments')).status);
  assert.deepEqual(statuses.slice(0, 5), [200, 200, 200, 200, 200]);
  const limited = await t.api('GET', '/api/orgs/default/environments');
  assert.equal(limited.status, 429);
  assert.match(limited.body.error.message, /too many requests .* try again in \d+ s/);
  const anonymous = await fetch(`${t.client.url}/api/orgs/default/environments`);
  assert.equal(anonymous.status, 401, 'no token: its own budget, by address');
});
