// The web UI end to end: a real berth (real runner, real environments), a real git remote,
// the scripted model over the OpenAI protocol, and a real Chromium and a real Firefox
// clicking through it (the same tests in each; screenshots come from Chromium).
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Locator, Page } from 'playwright-core';
import type { TestBerth } from '../helpers.ts';
import { BROWSERS, SCREENSHOTS, testBrowsers, typeInto, type TestBrowser } from './browser.ts';
import { GOAL, PROJECT, startWebFixture, type WebFixture } from './fixture.ts';

for (const { name: browserName, skip } of testBrowsers()) describe(`web UI in ${BROWSERS[browserName].label}`, { skip }, () => {
  let fixture: WebFixture;
  let t: TestBerth;
  let b: TestBrowser;
  let taskId = '';

  before(async () => {
    mkdirSync(SCREENSHOTS, { recursive: true });
    ({ t, b } = fixture = await startWebFixture(browserName));
  });
  after(() => fixture?.close());
  // The README's screenshots are Chromium's.
  const shot = async (page: Page, name: string) => {
    if (browserName === 'chromium') await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`) });
  };

  test('the control plane serves the UI at / with a fallback for deep links and long-cached assets', async () => {
    const index = await fetch(`${t.client.url}/tasks/task_000000000000`);
    assert.equal(index.status, 200);
    assert.match(index.headers.get('content-type') ?? '', /text\/html/);
    assert.equal(index.headers.get('cache-control'), 'no-cache');
    assert.match(index.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
    const html = await index.text();
    const asset = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    assert.ok(asset, html);
    const js = await fetch(`${t.client.url}${asset}`, { headers: { 'accept-encoding': 'gzip' } });
    assert.equal(js.status, 200);
    assert.equal(js.headers.get('cache-control'), 'public, max-age=31536000, immutable');
    assert.equal((await fetch(`${t.client.url}/assets/missing-0000.js`)).status, 404);
    // The API keeps its own 404s and its auth.
    const api = await fetch(`${t.client.url}/api/nothing-here`, { headers: { authorization: `Bearer ${t.client.token}` } });
    assert.equal(api.status, 404);
    assert.equal((await api.json()).error.kind, 'not_found');
    assert.equal((await fetch(`${t.client.url}/api/me`)).status, 401);
  });

  test('sign in with a token; a wrong token is refused with a message', async () => {
    const { context, page } = await b.context();
    await page.goto('/');
    await typeInto(page.getByLabel('API token'), 'berth_not-a-real-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'not accepted' }).waitFor();
    await typeInto(page.getByLabel('API token'), t.client.token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Tasks', level: 1 }).waitFor();
    // The org switcher offers only the caller's orgs.
    const orgs = await page.getByLabel('Org').locator('option').allTextContents();
    assert.deepEqual(orgs, ['default (owner)']);
    // Kept for this tab only: a new tab (context) starts signed out.
    assert.ok(await page.evaluate(() => sessionStorage.getItem('berth.token')));
    assert.equal(await page.evaluate(() => localStorage.getItem('berth.token')), null);
    await context.close();
  });

  test('create a task, watch it stream to a change request, and read the diff', async () => {
    const { context, page } = await b.context({ token: t.client.token });
    await page.getByRole('link', { name: 'New task' }).click();
    await page.getByLabel('Project', { exact: true }).selectOption(PROJECT);
    await typeInto(page.getByLabel('Goal'), GOAL);
    await typeInto(page.getByLabel('Max steps'), '20');
    await page.getByRole('button', { name: 'Start task' }).click();
    await page.waitForURL(/\/tasks\/task_[0-9a-z]{12}$/);
    taskId = /task_[0-9a-z]{12}/.exec(page.url())![0];

    // The transcript streams in while the task runs; the state ends at succeeded.
    const log = page.getByRole('log', { name: 'Transcript' });
    await log.getByText('edit_file').first().waitFor({ timeout: 180_000 });
    await page.locator('.facts .badge', { hasText: 'succeeded' }).waitFor({ timeout: 180_000 });
    await page.getByText('Change request in Berth').waitFor();
    await page.locator('.facts').getByText('passed', { exact: true }).waitFor();
    const task = (await t.api('GET', `/api/orgs/default/tasks/${taskId}`)).body;
    assert.equal(task.state, 'succeeded', task.stateReason);
    assert.equal(task.trigger, 'web');
    await page.getByText(task.branch).first().waitFor();

    // Every stored event is in the transcript exactly once (the list is virtual: count by seq).
    const events = (await t.api('GET', `/api/orgs/default/tasks/${taskId}/events`)).body.items as { seq: number; data: Record<string, unknown> }[];
    await page.getByRole('tab', { name: `Transcript (${events.length})` }).waitFor();
    // Commands show their exit codes; tool output is collapsed until asked for.
    await log.getByText('exit 0').first().waitFor();
    const show = log.getByRole('button', { name: /Show output/ }).last();
    await show.click();
    await log.locator('.ev-detail').first().waitFor();

    // The agent's curl went through the environment's egress proxy, which refused it (no
    // policy applies) and recorded the denial in the transcript, where it is highlighted.
    const curl = events.find((e) => e.data.type === 'tool' && JSON.stringify(e.data.args).includes('curl'));
    assert.ok(curl && curl.data.exitCode !== 0 && /403/.test(String(curl.data.output)), JSON.stringify(curl?.data));
    const refusal = events.find((e) => e.data.type === 'network');
    assert.ok(refusal, 'no network event in the transcript');
    assert.deepEqual([refusal.data.allowed, refusal.data.host, refusal.data.port, refusal.data.method], [false, 'example.com', 443, 'CONNECT']);
    const denied = await findRow(page, log.locator('.ev.tone-deny', { hasText: 'Network request denied' }));
    await denied.getByText('example.com:443').waitFor();
    assert.equal(await denied.locator('.ev-kind').textContent(), 'denied');
    // For the screenshot: curl's own error above the denial, a few rows from the top.
    const curlRow = log.locator('.ev', { hasText: 'curl -sS' });
    await curlRow.getByRole('button', { name: /Show output/ }).click();
    await curlRow.locator('.ev-detail').waitFor();
    await curlRow.evaluate((el) => {
      const scroller = el.closest('.transcript')!;
      scroller.scrollTop += el.getBoundingClientRect().top - scroller.getBoundingClientRect().top - 4 * 31;
    });
    await denied.waitFor();
    await shot(page, 'task');

    await page.getByRole('tab', { name: 'Diff' }).click();
    const diff = page.locator('.diff');
    await diff.getByRole('heading', { name: 'sum.js' }).waitFor();
    await diff.locator('td.src.add', { hasText: 'return a + b;' }).first().waitFor();
    await diff.locator('td.src.del', { hasText: 'return a - b;' }).first().waitFor();
    // Syntax highlighted, and both views work per file.
    assert.ok((await diff.locator('td.src .hljs-keyword').count()) > 0);
    await diff.getByRole('group', { name: 'sum.js: view' }).getByRole('button', { name: 'Unified' }).click();
    assert.equal(await diff.locator('table.code.unified').count(), 1);
    await diff.getByRole('group', { name: 'sum.js: view' }).getByRole('button', { name: 'Side by side' }).click();
    assert.equal(await diff.locator('table.code.split').count(), 1);
    await shot(page, 'diff');

    // The list shows it, with the counts, and filters by state.
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Tasks' }).click();
    await page.getByRole('link', { name: GOAL }).waitFor();
    await page.getByText('0 running').waitFor();
    await page.getByLabel('State').selectOption('failed');
    await page.getByText('No tasks match these filters.').waitFor();
    await page.getByLabel('State').selectOption('succeeded');
    await page.getByRole('link', { name: GOAL }).waitFor();
    assert.match(page.url(), /state=succeeded/);
    await page.getByLabel('State').selectOption('');
    await shot(page, 'tasks');
    await context.close();
  });

  test('the tasks list updates without a reload', async () => {
    const { context, page } = await b.context({ token: t.client.token });
    // The list first shows what the API has now (counted only once it is on screen).
    const before = (await t.api('GET', '/api/orgs/default/tasks?limit=100')).body.items.length as number;
    for (let i = 0; (await page.locator('table.list tbody tr').count()) !== before; i++) {
      if (i > 150) assert.fail(`the list never showed the ${before} tasks the API has`);
      await new Promise((r) => setTimeout(r, 100));
    }
    // A task made elsewhere (the API) appears by itself; it has no model steps left, so it fails.
    const created = await t.api('POST', '/api/orgs/default/tasks', { goal: 'A task from the API', project: PROJECT, trigger: 'api' });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    await page.getByRole('link', { name: 'A task from the API' }).waitFor({ timeout: 15_000 });
    assert.equal(await page.locator('table.list tbody tr').count(), before + 1);
    await t.api('POST', `/api/orgs/default/tasks/${created.body.id}/cancel`);
    await context.close();
  });

  test('a terminal into a running environment: run a command, resize, paste', async () => {
    const env = await t.api('POST', '/api/orgs/default/environments', { name: 'web-term' });
    assert.equal(env.status, 201, JSON.stringify(env.body));
    const { context, page } = await b.context({ token: t.client.token });
    await b.allowClipboard(context);
    await page.getByRole('link', { name: 'Environments' }).click();
    await page.getByRole('row', { name: /web-term/ }).getByText('running').waitFor({ timeout: 60_000 });
    await page.getByRole('button', { name: 'Open a terminal in web-term' }).click();
    const term = page.getByTestId('terminal');
    await page.getByRole('status').filter({ hasText: 'connected' }).waitFor();
    await term.click();
    await page.keyboard.type('echo hello-$((6*7))\n');
    await term.locator('.xterm-rows', { hasText: 'hello-42' }).waitFor();

    // The terminal's size follows the window.
    await page.keyboard.type('stty size\n');
    const sizeBefore = await waitForSize(page);
    await page.setViewportSize({ width: 900, height: 700 });
    await page.keyboard.type('clear; stty size\n');
    const sizeAfter = await waitForSize(page, sizeBefore);
    assert.notEqual(sizeAfter, sizeBefore);
    await page.setViewportSize({ width: 1360, height: 860 });

    // Paste from the clipboard, and copy a selection back to it.
    await page.evaluate(() => navigator.clipboard.writeText('echo pasted-$((2+3))\n'));
    await page.getByRole('button', { name: 'Paste' }).click();
    // The shell takes a paste as text (bracketed paste): Enter runs it.
    await term.locator('.xterm-rows', { hasText: 'echo pasted-$((2+3))' }).waitFor();
    await page.keyboard.press('Enter');
    await term.locator('.xterm-rows', { hasText: 'pasted-5' }).waitFor();
    await page.keyboard.type('clear; echo ready-for-the-screenshot; uname -s\n');
    await term.locator('.xterm-rows', { hasText: 'Linux' }).waitFor();
    await page.waitForTimeout(300);
    await shot(page, 'environments');

    // Stop and start from the list.
    await page.getByRole('button', { name: 'Close terminal' }).click();
    await page.getByRole('button', { name: 'Stop web-term' }).click();
    await page.getByRole('row', { name: /web-term/ }).getByText('stopped').waitFor({ timeout: 60_000 });
    await page.getByRole('button', { name: 'Start web-term' }).click();
    await page.getByRole('row', { name: /web-term/ }).getByText('running').waitFor({ timeout: 60_000 });
    page.once('dialog', (d) => void d.accept());
    await page.getByRole('button', { name: 'Delete web-term' }).click();
    await page.getByRole('row', { name: /web-term/ }).waitFor({ state: 'detached', timeout: 60_000 });
    await context.close();
  });

  test('a viewer is offered no terminal, no cancel, no retry and no new task, and the server refuses the attach', async () => {
    const viewer = await t.api('POST', '/api/orgs/default/tokens', { role: 'viewer', name: 'web viewer' });
    assert.equal(viewer.status, 201);
    const env = await t.api('POST', '/api/orgs/default/environments', { name: 'viewer-look' });
    assert.equal(env.status, 201);
    const { context, page } = await b.context({ token: viewer.body.token });
    assert.equal(await page.getByRole('link', { name: 'New task' }).count(), 0);
    assert.equal(await page.getByRole('link', { name: 'Audit log' }).count(), 0);
    await page.goto(`/tasks/${taskId}`);
    await page.locator('.facts .badge', { hasText: 'succeeded' }).waitFor();
    for (const name of ['Cancel', 'Retry', 'Approve and merge', 'Start follow-up task']) assert.equal(await page.getByRole('button', { name }).count(), 0, name);
    await page.getByRole('link', { name: 'Environments' }).click();
    await page.getByRole('row', { name: /viewer-look/ }).getByText('running').waitFor({ timeout: 60_000 });
    assert.equal(await page.getByRole('button', { name: /terminal/i }).count(), 0);
    assert.equal(await page.getByRole('button', { name: /^(Stop|Delete)/ }).count(), 0);
    // Asking for it anyway: the server refuses the upgrade.
    await page.goto(`/environments?terminal=${env.body.id}`);
    assert.equal(await page.getByTestId('terminal').count(), 0);
    const outcome = await page.evaluate(async (id) => {
      const token = sessionStorage.getItem('berth.token');
      const ws = new WebSocket(`ws://${location.host}/api/orgs/default/environments/${id}/attach`, ['berth', `berth.bearer.${token}`]);
      return new Promise<string>((resolve) => {
        ws.onopen = () => resolve('open');
        ws.onclose = (e) => resolve(`closed ${e.code}`);
      });
    }, env.body.id);
    assert.equal(outcome, 'closed 1006');
    await context.close();
    await t.api('DELETE', `/api/orgs/default/environments/${env.body.id}`);
  });

  test('audit log with filters and the chain verification; settings', async () => {
    const { context, page } = await b.context({ token: t.client.token });
    await page.getByRole('link', { name: 'Audit log' }).click();
    await page.getByText(/Chain verified: \d+ entries/).waitFor();
    await page.getByRole('cell', { name: 'task.create' }).first().waitFor();
    await typeInto(page.getByLabel('Action'), 'project.create');
    await page.getByRole('button', { name: 'Apply' }).click();
    await page.locator('table.audit tbody tr').first().getByText('project.create').waitFor();
    await page.waitForFunction(() => [...document.querySelectorAll('table.audit tbody tr td:nth-child(4)')].every((td) => td.textContent === 'project.create'));
    await page.getByRole('button', { name: 'Clear' }).click();
    await page.getByRole('cell', { name: 'task.create' }).first().waitFor();
    await shot(page, 'audit');

    await page.getByRole('link', { name: 'Settings' }).click();
    await page.getByRole('rowheader', { name: PROJECT, exact: true }).waitFor();
    await page.getByRole('rowheader', { name: 'GIT_TOKEN' }).waitFor();
    // Secrets are write-only: set one, and its value is nowhere on the page.
    const secrets = page.getByRole('form', { name: 'Set a secret' });
    await typeInto(secrets.getByLabel('Name'), 'WEB_SECRET');
    await typeInto(secrets.getByLabel('Value'), 'value-never-shown-123');
    await secrets.getByRole('button', { name: 'Set secret' }).click();
    await page.getByRole('rowheader', { name: 'WEB_SECRET' }).waitFor();
    assert.ok(!(await page.content()).includes('value-never-shown-123'));
    // A token made here is shown once.
    const tokens = page.getByRole('form', { name: 'Create an org token' });
    await typeInto(tokens.getByLabel('Name'), 'from the web');
    await tokens.getByLabel('Role').selectOption('member');
    await tokens.getByRole('button', { name: 'Create token' }).click();
    const value = await page.getByTestId('new-token').textContent();
    assert.match(value ?? '', /^berth_/);
    await page.getByRole('rowheader', { name: 'from the web' }).waitFor();
    await page.getByText('healthy', { exact: true }).waitFor();
    await page.getByRole('button', { name: 'Done' }).click();
    await page.getByRole('heading', { name: 'Network policies' }).waitFor();
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot(page, 'settings');
    await context.close();
  });

  test('the transcript resumes after a dropped connection without losing or repeating events', async () => {
    // A task held in `running` with events written straight to the table, the way another replica would.
    const id = 'task_webresume0001'.slice(0, 17);
    const orgId = (await t.api('GET', '/api/orgs')).body.items[0].id;
    const db = t.berth.database.db;
    await db.insertInto('tasks').values({ id, org_id: orgId, project_id: null, repo_url: 'https://example.invalid/x.git', base_branch: null, goal: 'Hold still for the stream test', agent: 'builtin', command: null, model: null, budget: JSON.stringify({ maxSteps: 1, maxTokens: null, maxCostUsd: null, timeoutMs: 60_000, maxCheckRetries: 0 }), check_command: null, state: 'running', state_reason: null, step: 'agent', trigger: 'api', created_by: 'test', runner_id: 'elsewhere', environment_id: null, branch: null, base_sha: null, head_sha: null, change_request: null, checks_passed: null, summary: null, diff: null } as never).execute();
    let seq = 0;
    const write = async (n: number) => {
      for (let i = 0; i < n; i++) {
        seq++;
        await db.insertInto('task_events').values({ task_id: id, seq, at: new Date().toISOString(), data: JSON.stringify({ type: 'log', level: 'info', message: `event number ${seq}` }) } as never).execute();
      }
    };
    await write(20);
    const { context, page } = await b.context({ token: t.client.token });
    await page.goto(`/tasks/${id}`);
    await page.getByRole('tab', { name: 'Transcript (20)' }).waitFor();
    // Live at once, though no event is coming (not only at the first heartbeat, 15 s on).
    await page.getByText('● live').waitFor({ timeout: 5_000 });
    // Cut the network (the server drops every connection, the browser goes offline), write
    // while it is down, bring it back.
    await context.setOffline(true);
    t.berth.app.server.closeAllConnections();
    await page.getByText('reconnecting…').waitFor({ timeout: 30_000 });
    await write(30);
    await context.setOffline(false);
    await page.getByRole('tab', { name: 'Transcript (50)' }).waitFor({ timeout: 30_000 });
    await write(5);
    await page.getByRole('tab', { name: 'Transcript (55)' }).waitFor({ timeout: 30_000 });
    // Exactly once each: the last rows say 51..55, in order.
    await page.getByText('event number 55').waitFor();
    await page.waitForTimeout(2500);
    await page.getByRole('tab', { name: 'Transcript (55)' }).waitFor();

    // A refused network request (the shape the egress proxy's recorder writes) stands out,
    // and an event type this UI does not know yet is shown plainly, not dropped.
    const extra = [
      { type: 'network', allowed: false, host: 'evil.example.com', port: 443, method: 'CONNECT', path: null, rule: 'not in the allowlist' },
      { type: 'something_new', message: 'an event from a newer server' },
    ];
    for (const data of extra) {
      seq++;
      await db.insertInto('task_events').values({ task_id: id, seq, at: new Date().toISOString(), data: JSON.stringify(data) } as never).execute();
    }
    const denied = page.locator('.ev.tone-deny');
    await denied.getByText('Network request denied').waitFor({ timeout: 30_000 });
    await denied.getByText('evil.example.com:443').waitFor();
    await page.getByRole('log', { name: 'Transcript' }).getByText('an event from a newer server').waitFor();
    await context.close();
  });

  test('a long transcript opens at its end and shows earlier events when asked, from the keyboard', async () => {
    const id = 'task_webearlier01';
    const orgId = (await t.api('GET', '/api/orgs')).body.items[0].id;
    const db = t.berth.database.db;
    await db.insertInto('tasks').values({ id, org_id: orgId, project_id: null, repo_url: 'https://example.invalid/x.git', base_branch: null, goal: 'A long transcript', agent: 'builtin', command: null, model: null, budget: JSON.stringify({ maxSteps: 1, maxTokens: null, maxCostUsd: null, timeoutMs: 60_000, maxCheckRetries: 0 }), check_command: null, state: 'running', state_reason: null, step: 'agent', trigger: 'api', created_by: 'test', runner_id: 'elsewhere', environment_id: null, branch: null, base_sha: null, head_sha: null, change_request: null, checks_passed: null, summary: null, diff: null } as never).execute();
    let seq = 0;
    const write = async (n: number) => {
      const rows = [];
      for (let i = 0; i < n; i++) rows.push({ task_id: id, seq: ++seq, at: new Date().toISOString(), data: JSON.stringify({ type: 'log', level: 'info', message: `event number ${seq}` }) });
      for (let i = 0; i < rows.length; i += 500) await db.insertInto('task_events').values(rows.slice(i, i + 500) as never).execute();
    };
    await write(1_205);
    const { context, page } = await b.context({ token: t.client.token });
    await page.goto(`/tasks/${id}`);
    // The count is the whole transcript's; only the last 500 were fetched.
    await page.getByRole('tab', { name: 'Transcript (1205)' }).waitFor();
    await page.getByText('(705 not loaded yet)').waitFor();
    const log = page.getByRole('log', { name: 'Transcript' });
    await log.getByText('event number 1205').waitFor();
    await page.getByText('● live').waitFor();
    // Live events still arrive while earlier ones are loaded.
    await write(3);
    await page.getByRole('tab', { name: 'Transcript (1208)' }).waitFor({ timeout: 30_000 });

    // From the keyboard: Enter on the control loads the page before, and focus stays for the next.
    const earlier = page.getByRole('button', { name: 'Show earlier events' });
    await earlier.focus();
    await page.keyboard.press('Enter');
    await page.getByText('(205 not loaded yet)').waitFor();
    await page.getByRole('tab', { name: 'Transcript (1208)' }).waitFor();
    assert.ok(await earlier.evaluate((el) => el === document.activeElement));
    await page.keyboard.press('Enter');
    await earlier.waitFor({ state: 'detached' });
    // With nothing left to load, focus moves to the transcript (in the render after the control
    // goes, so waited for: a CI run under load read it between the two), and its top is event 1.
    await page.waitForFunction(() => document.activeElement?.getAttribute('role') === 'log', undefined, { timeout: 10_000 });
    assert.ok(await log.evaluate((el) => el === document.activeElement));
    await page.keyboard.press('Home');
    await log.getByText('event number 1', { exact: true }).waitFor();
    await page.getByRole('tab', { name: 'Transcript (1208)' }).waitFor();
    // Each exactly once: the rows in the DOM at the top are 1, 2, 3… in order.
    const top = await log.locator('.ev-title').allTextContents();
    assert.deepEqual(top.slice(0, 5), ['event number 1', 'event number 2', 'event number 3', 'event number 4', 'event number 5']);
    await context.close();
  });
});

/** Scrolls the virtual transcript from the top until `row` is on screen (only rows on screen exist). */
async function findRow(page: Page, row: Locator): Promise<Locator> {
  const log = page.getByRole('log', { name: 'Transcript' });
  await log.evaluate((el) => (el.scrollTop = 0));
  for (;;) {
    if (await row.count()) return row.first();
    const moved = await log.evaluate((el) => {
      const before = el.scrollTop;
      el.scrollTop += el.clientHeight;
      return el.scrollTop !== before;
    });
    if (!moved) throw new Error('the row is not in the transcript');
    await page.waitForTimeout(50);
  }
}

/** The last `rows cols` line `stty size` printed in the terminal, once it differs from `not`. */
async function waitForSize(page: Page, not?: string): Promise<string> {
  const end = Date.now() + 10_000;
  for (;;) {
    const text = (await page.locator('.xterm-rows').innerText()).split('\n');
    const sizes = text.map((l) => l.trim()).filter((l) => /^\d+ \d+$/.test(l));
    const last = sizes.at(-1);
    if (last && last !== not) return last;
    if (Date.now() > end) throw new Error(`no new stty size in the terminal: ${text.join(' | ')}`);
    await page.waitForTimeout(100);
  }
}
