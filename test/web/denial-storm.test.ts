// A denial storm on the task page, in real browsers against a real berth (a real sandbox and
// egress proxy): the task whose setup only met refusals failed fast, and its page says what
// was refused and what would allow it; an admin allows it with one click, a member sees the
// command to ask an admin for.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createBareRepo } from '../fakes/git-server.ts';
import { startTestBerth, waitFor, type TestBerth } from '../helpers.ts';
import { BROWSERS, ensureWebBuilt, launchBrowser, testBrowsers, type TestBrowser } from './browser.ts';

// A setup that retries the npm registry for as long as it is let.
const SETUP = 'while :; do curl -s -o /dev/null https://registry.npmjs.org/left-pad; sleep 0.05; done';

for (const { name: browserName, skip } of testBrowsers()) describe(`a denial storm on the task page in ${BROWSERS[browserName].label}`, { skip }, () => {
  let t: TestBerth;
  let b: TestBrowser;
  let root: string;
  let taskId: string;

  before(async () => {
    ensureWebBuilt();
    root = await mkdtemp(join(tmpdir(), 'berth-web-denials-'));
    const bare = (await createBareRepo({ root, name: 'shop.git', files: { 'README.md': 'shop\n' } })).path;
    t = await startTestBerth({ denialStorms: { threshold: 6, failFastMs: 3_000, gapMs: 60_000 } });
    assert.equal((await t.api('POST', '/api/orgs/default/projects', { name: 'shop', repoUrl: bare })).status, 201);
    assert.equal((await t.api('PATCH', '/api/orgs/default/policies/org', { presets: ['pypi'] })).status, 200);
    const created = await t.api('POST', '/api/orgs/default/tasks', { goal: 'Add left-pad', project: 'shop', agent: 'command', command: 'true', setup: [SETUP] });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    taskId = created.body.id;
    const ended = await waitFor('the task to end', async () => {
      const task = (await t.api('GET', `/api/orgs/default/tasks/${taskId}`)).body;
      return ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(task.state) ? task : null;
    }, 300_000);
    assert.equal(ended.state, 'failed');
    assert.match(ended.stateReason, /^setup command `while :; do curl[^`]*` was stopped by Berth after \d+ refusals of registry\.npmjs\.org:443/);
    b = await launchBrowser(t.client.url, browserName);
  });
  after(async () => {
    await b?.close();
    await t?.destroy();
    await rm(root, { recursive: true, force: true });
  });

  test('a member sees the hint and the command to ask an admin for, and no button', async () => {
    const member = (await t.api('POST', '/api/orgs/default/tokens', { role: 'member', name: `member-${browserName}` })).body.token as string;
    const { context, page } = await b.context({ token: member });
    await page.goto(`/tasks/${taskId}`);
    const hint = page.getByRole('note', { name: 'Refused: registry.npmjs.org:443' });
    await hint.waitFor();
    assert.match(await hint.innerText(), /`?while :; do curl[^\n]*\(setup\) tried to reach registry\.npmjs\.org:443 6 times in \S+: refused by deny:org:not-allowed; allow it with `?berth policy set --project shop --preset pypi npm/);
    await hint.getByText('Only an admin of default can allow it: ask one to run').waitFor();
    assert.equal(await hint.locator('code', { hasText: 'berth policy set --project shop --preset pypi npm' }).count(), 2, 'in the hint and in the ask');
    assert.equal(await hint.getByRole('button').count(), 0);
    // The transcript has it too, as its own line.
    const transcript = page.getByRole('log', { name: 'Transcript' });
    await transcript.locator('.ev-denials', { hasText: /tried to reach registry\.npmjs\.org:443 6 times/ }).waitFor();
    // And the task's end says why: the setup was stopped, with the hint.
    await transcript.locator('.ev-state', { hasText: /setup command `while :; do curl[^`]*` was stopped by Berth after \d+ refusals/ }).waitFor();
    await context.close();
  });

  test('an admin allows it with one click: the project gets the npm preset and keeps what the org allowed', async () => {
    const changes = async () => (await t.api('GET', '/api/orgs/default/audit?action=policy.set')).body.items.length as number;
    const before = await changes();
    const { context, page } = await b.context({ token: t.client.token });
    await page.goto(`/tasks/${taskId}`);
    const hint = page.getByRole('note', { name: 'Refused: registry.npmjs.org:443' });
    await hint.getByRole('button', { name: 'Use preset npm for project shop' }).click();
    await hint.getByRole('status').getByText('Done: project shop now allows it. Retry the task to use it.').waitFor();
    const effective = (await t.api('GET', '/api/orgs/default/policies/effective?project=shop')).body;
    assert.deepEqual(effective.own.presets, ['pypi', 'npm']);
    assert.deepEqual(effective.effective.presets, ['pypi', 'npm']);
    // On record as a policy change, like the command's.
    assert.equal(await changes(), before + 1);
    assert.equal((await t.api('DELETE', '/api/orgs/default/policies/projects/shop')).status, 204);
    await context.close();
  });
});
