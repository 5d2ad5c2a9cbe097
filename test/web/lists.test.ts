// The web UI's longer lists and instance views in a real Chromium: the tasks list loads
// older tasks a page at a time from the keyboard, keeping its filters and its live
// refresh; Settings shows the runners and their health, refreshed live, to admins only;
// the sign-in page offers only the sign-in methods the server says it has.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { RunnerReport } from '../../src/shared/api-runners.ts';
import { startTestBerth, type TestBerth } from '../helpers.ts';
import { ensureWebBuilt, launchBrowser, type TestBrowser } from './browser.ts';

let t: TestBerth;
let b: TestBrowser;
let orgId: string;

/** Ended tasks written straight to the table (the worker claims only queued ones), a minute apart, oldest first. */
async function insertTasks(n: number, opts: { state: (i: number) => 'succeeded' | 'failed'; start: number; prefix: string }) {
  const rows = Array.from({ length: n }, (_, i) => ({
    id: `task_${opts.prefix}${String(i).padStart(12 - opts.prefix.length, '0')}`,
    org_id: orgId,
    project_id: null,
    repo_url: 'https://example.invalid/x.git',
    base_branch: null,
    goal: `${opts.prefix} task number ${i}`,
    agent: 'builtin',
    command: null,
    model: null,
    budget: JSON.stringify({ maxSteps: 1, maxTokens: null, maxCostUsd: null, timeoutMs: 60_000, maxCheckRetries: 0 }),
    check_command: null,
    state: opts.state(i),
    trigger: 'api',
    created_by: 'test',
    created_at: new Date(opts.start + i * 60_000).toISOString(),
  }));
  await t.berth.database.db.insertInto('tasks').values(rows as never).execute();
  return rows;
}

before(async () => {
  ensureWebBuilt();
  t = await startTestBerth({ runnerHeartbeatMs: 500 });
  orgId = (await t.api('GET', '/api/orgs')).body.items.find((o: { name: string }) => o.name === 'default').id;
  b = await launchBrowser(t.client.url);
});
after(async () => {
  await b?.close();
  await t?.destroy();
});

test('without an identity provider the sign-in page offers the token alone, and never starts a sign-in', async () => {
  const methods = await fetch(`${t.client.url}/api/auth/methods`);
  assert.deepEqual(await methods.json(), { token: true, oidc: { enabled: false } });
  const { context, page } = await b.context();
  const asked: string[] = [];
  page.on('request', (r) => void asked.push(new URL(r.url()).pathname));
  await page.goto('/');
  await page.getByRole('heading', { name: 'Use an API token' }).waitFor();
  await page.waitForLoadState('networkidle');
  assert.ok(asked.includes('/api/auth/methods'), asked.join(' '));
  assert.ok(!asked.includes('/api/auth/oidc/start'), asked.join(' '));
  assert.equal(await page.getByRole('link', { name: /^Sign in with/ }).count(), 0);
  await context.close();
});

test('the tasks list loads older tasks 50 at a time from the keyboard, keeping its filter and its live refresh', async () => {
  // 120 tasks a minute apart, every eleventh failed: 109 succeeded.
  const rows = await insertTasks(120, { state: (i) => (i % 11 === 0 ? 'failed' : 'succeeded'), start: Date.now() - 6 * 3_600_000, prefix: 'webpage' });
  const succeeded = rows.filter((r) => r.state === 'succeeded').reverse().map((r) => r.goal);
  assert.equal(succeeded.length, 109);
  const { context, page } = await b.context({ token: t.client.token });
  await page.goto('/tasks?state=succeeded');
  const goals = () => page.locator('table.list tbody td.goal').allTextContents();
  const rowCount = (n: number) => page.waitForFunction((want) => document.querySelectorAll('table.list tbody tr').length === want, n);
  await rowCount(50);
  await page.getByText('Showing 50 tasks, newest first.').waitFor();
  assert.deepEqual(await goals(), succeeded.slice(0, 50));

  // The control is a button named by its text and described by the count; Enter loads the next page and keeps focus there.
  const more = page.getByRole('button', { name: 'Load 50 more' });
  assert.equal(await more.getAttribute('aria-describedby'), 'tasks-shown');
  await more.focus();
  await page.keyboard.press('Enter');
  await rowCount(100);
  assert.deepEqual(await goals(), succeeded.slice(0, 100));
  assert.ok(await more.evaluate((el) => el === document.activeElement), 'focus stays on the button');
  await page.getByRole('status').filter({ hasText: '50 more tasks loaded' }).waitFor();

  // A new task arrives while older pages are shown: it appears on top by itself, and no row goes missing.
  await insertTasks(1, { state: () => 'succeeded', start: Date.now(), prefix: 'webnew' });
  await rowCount(101);
  assert.deepEqual(await goals(), ['webnew task number 0', ...succeeded.slice(0, 100)]);

  // The last page: the button goes, focus moves to the first row it brought, and the filter held throughout.
  await page.keyboard.press('Enter');
  await rowCount(110);
  await more.waitFor({ state: 'detached' });
  assert.deepEqual(await goals(), ['webnew task number 0', ...succeeded]);
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), succeeded[100]);
  await page.getByText('Showing 110 tasks, all that match.').waitFor();
  assert.match(page.url(), /[?&]state=succeeded/);
  assert.deepEqual([...new Set(await page.locator('table.list tbody .badge').allTextContents())], ['succeeded']);

  // Another filter starts from its first page.
  await page.getByLabel('State').selectOption('failed');
  await rowCount(11);
  await page.getByText('Showing 11 tasks, all that match.').waitFor();
  assert.equal(await page.getByRole('button', { name: 'Load 50 more' }).count(), 0);
  await context.close();
});

test('Settings lists the runners with their health, refreshed live; a member is told who may see them', async () => {
  const { context, page } = await b.context({ token: t.client.token });
  await page.goto('/settings');
  const section = page.getByRole('region', { name: 'Runners and health' });
  const local = section.getByRole('row', { name: /^local/ });
  await local.getByText('ok', { exact: true }).waitFor();
  await local.getByText('0 running of 0').waitFor();
  await local.getByRole('cell', { name: new RegExp(`^${t.berth.runner.backend.name}\\s*cgroup (v1|v2|hybrid)$`) }).waitFor();
  await section.getByText('healthy', { exact: true }).waitFor();

  // An environment started elsewhere shows in the runner's row without a reload.
  const env = await t.api('POST', '/api/orgs/default/environments', { name: 'settings-live' });
  assert.equal(env.status, 201, JSON.stringify(env.body));
  await local.getByText('1 running of 1').waitFor({ timeout: 30_000 });

  // A runner that stopped reporting shows as offline, with why, in the same list.
  const report: RunnerReport = {
    backend: 'crun', cgroups: 'v2', cpus: 8, memoryBytes: 32 * 1024 ** 3, environments: { running: 0, total: 3 }, tasks: { running: 0, concurrency: 16 },
    network: { egressProxy: true, nftables: false }, diskQuota: true, dataDisk: { freeBytes: 1024 ** 3, totalBytes: 100 * 1024 ** 3 },
    problems: ['nftables (nft) is missing: environments with a network cannot start (apt-get install nftables)'], heartbeatMs: 5_000,
  };
  await t.berth.database.db
    .insertInto('runners')
    .values({ id: 'remote:web-7', name: 'web-7', host: 'web-7.internal', version: '0.0.9', report: JSON.stringify(report), started_at: new Date(Date.now() - 3_600_000), heartbeat_at: new Date(Date.now() - 600_000) })
    .execute();
  const remote = section.getByRole('row', { name: /^web-7/ });
  await remote.getByText('offline', { exact: true }).waitFor({ timeout: 30_000 });
  await remote.getByRole('listitem').filter({ hasText: /^no heartbeat for 10m/ }).waitFor();
  await remote.getByRole('listitem').filter({ hasText: 'nftables (nft) is missing' }).waitFor();
  await remote.getByText('no nftables').waitFor();
  await context.close();

  const member = await t.api('POST', '/api/orgs/default/tokens', { role: 'member', name: 'web member' });
  assert.equal(member.status, 201);
  const m = await b.context({ token: member.body.token });
  await m.page.goto('/settings');
  const mine = m.page.getByRole('region', { name: 'Runners and health' });
  await mine.getByText('Runners and their health are shown to admins and owners of an org.').waitFor();
  await mine.getByText('healthy', { exact: true }).waitFor();
  assert.equal(await mine.getByRole('table').count(), 0);
  assert.equal(await mine.getByRole('alert').count(), 0);
  await m.context.close();
  await t.api('DELETE', '/api/orgs/default/environments/settings-live');
});
