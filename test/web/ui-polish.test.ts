// Issue #12's web UI items in real browsers against a real berth: tasks say who started
// them and offer only real triggers; the audit log reads in words (the agent's file tools on
// record as `file.written`, not their shell wrapper), with every detail a click away; dark
// mode follows the system and can be switched; the transcript reads at 390 px; paths that
// are not the UI's answer a JSON 404. Plus the settings' project form, every setting, and editing.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import { auditWords, commandText } from '../../src/shared/audit-words.ts';
import { isWebPage } from '../../src/shared/web-routes.ts';
import type { TestBerth } from '../helpers.ts';
import { BROWSERS, launchBrowser, testBrowsers, typeInto, type TestBrowser } from './browser.ts';
import { GOAL, PROJECT, startWebFixture, type WebFixture } from './fixture.ts';

test('audit words: each action in a sentence, a wrapper never', () => {
  const wrapper = ['sh', '-c', 'mkdir -p "$(dirname "$1")" && cat > "$1"', 'sh', '/workspace/repo/src/a.ts'];
  assert.equal(auditWords({ action: 'file.written', target: 'env_1', details: { path: 'src/a.ts', cmd: wrapper, exitCode: 0 } }), 'file written: src/a.ts');
  assert.equal(auditWords({ action: 'file.written', target: 'env_1', details: { path: 'src/a.ts', cmd: wrapper, exitCode: 1 } }), 'file not written: src/a.ts (exit 1)');
  assert.equal(auditWords({ action: 'command.start', target: 'env_1', details: { cmd: wrapper, intent: { action: 'file.written', path: 'src/a.ts' } } }), 'writing file: src/a.ts');
  assert.equal(auditWords({ action: 'file.read', target: 'env_1', details: { path: 'sum.js', exitCode: 0 } }), 'file read: sum.js');
  assert.equal(auditWords({ action: 'command.run', target: 'env_1', details: { cmd: ['npm', 'test'], exitCode: 0 } }), 'command ran: npm test (exit 0)');
  assert.equal(auditWords({ action: 'command.run', target: 'env_1', details: { cmd: ['sh', '-c', 'echo a\necho b'], timedOut: true, exitCode: 124 } }), 'command ran: echo a … (timed out)');
  assert.equal(auditWords({ action: 'environment.create', target: 'env_1', details: {} }), 'environment created: env_1');
  assert.equal(auditWords({ action: 'network.denied', target: 'example.com:443', details: { method: 'CONNECT' } }), 'network request denied: CONNECT example.com:443');
  assert.equal(auditWords({ action: 'secret.read', target: 'env_1', details: { names: ['A', 'B'] } }), 'secrets given to a command: A, B');
  assert.equal(auditWords({ action: 'something.new_thing', target: null, details: {} }), 'something.new thing');
  assert.equal(commandText(['echo', 'it is']), "echo 'it is'");
});

test('the UI answers its own pages; everything else is not its to answer', () => {
  for (const p of ['/', '/tasks', '/tasks/new', '/tasks/task_0123456789ab', '/environments', '/environments/env_0123', '/environments/my-env', '/audit', '/settings', '/auth/oidc/callback', '/sign-in']) assert.ok(isWebPage(p), p);
  for (const p of ['/metrics', '/healthz', '/api/anything', '/tasks/x/y', '/environments/a/b', '/wp-login.php', '/settings/']) assert.ok(!isWebPage(p), p);
});

for (const { name: browserName, skip } of testBrowsers()) describe(`web UI polish in ${BROWSERS[browserName].label}`, { skip }, () => {
  let fixture: WebFixture;
  let t: TestBerth;
  let b: TestBrowser;
  let taskId = '';

  before(async () => {
    ({ t, b } = fixture = await startWebFixture(browserName));
  });
  after(() => fixture?.close());

  test('paths that are not the UI\'s answer a JSON 404, never the UI\'s HTML', async () => {
    // (/healthz and /readyz are Berth's probes now: test/observability.test.ts.)
    for (const path of ['/metrics', '/livez', '/api/anything', '/api', '/nothing/here', '/tasks/not-a-task/x']) {
      const res = await fetch(`${t.client.url}${path}`, { headers: { authorization: `Bearer ${t.client.token}` } });
      assert.equal(res.status, 404, path);
      assert.match(res.headers.get('content-type') ?? '', /^application\/json/, path);
      const body = (await res.json()) as { error: { kind: string; message: string } };
      assert.equal(body.error.kind, 'not_found', path);
    }
    // The UI's own pages, deep links included, are the UI.
    for (const path of ['/tasks', '/environments/env_0123456789ab', '/settings', '/audit']) {
      const res = await fetch(`${t.client.url}${path}`);
      assert.equal(res.status, 200, path);
      assert.match(res.headers.get('content-type') ?? '', /text\/html/, path);
    }
  });

  test('a task says who started it (the person, not user:usr_…), and the trigger filter offers only real sources', async () => {
    const { context, page } = await b.context({ token: t.client.token });
    await page.getByRole('link', { name: 'New task' }).click();
    await page.getByLabel('Project', { exact: true }).selectOption(PROJECT);
    await typeInto(page.getByLabel('Goal'), GOAL);
    await page.getByRole('button', { name: 'Start task' }).click();
    await page.waitForURL(/\/tasks\/task_[0-9a-z]{12}$/);
    taskId = /task_[0-9a-z]{12}/.exec(page.url())![0];
    const task = (await t.api('GET', `/api/orgs/default/tasks/${taskId}`)).body;
    assert.match(task.createdBy, /^user:usr_/);
    const me = (await t.api('GET', '/api/me')).body;
    assert.deepEqual(task.creator, { name: task.creator.name, email: me.email });
    const person = task.creator.name || task.creator.email;
    // On the task's page and in the list, never the id.
    await page.locator('.facts').getByText(person, { exact: true }).waitFor();
    await page.locator('.facts .badge', { hasText: 'succeeded' }).waitFor({ timeout: 180_000 });
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Tasks' }).click();
    const row = page.getByRole('row', { name: new RegExp(GOAL) }).first();
    await row.getByText(person, { exact: true }).waitFor();
    assert.ok(!(await page.locator('table.list').innerText()).includes('user:usr_'));
    const list = (await t.api('GET', '/api/orgs/default/tasks')).body;
    assert.equal(list.items.find((x: { id: string }) => x.id === taskId).creator.email, me.email);

    const triggers = await page.getByLabel('Trigger').locator('option').allTextContents();
    assert.deepEqual(triggers, ['any', 'web', 'cli', 'api', 'GitHub', 'GitLab', 'Slack', 'Schedule', 'Webhook', 'Campaign']);
    await context.close();
  });

  test('the audit log reads in words: the agent\'s file edit is "file written: sum.js", the details a click away', async () => {
    assert.ok(taskId, 'the task test ran first');
    // On record as what it was, not the shell wrapper that did it.
    const entries = (await t.api('GET', '/api/orgs/default/audit?limit=500')).body.items as { action: string; actor: string; details: Record<string, unknown> }[];
    const mine = entries.filter((e) => e.actor === `task:${taskId}`);
    const written = mine.filter((e) => e.action === 'file.written');
    assert.equal(written.length, 1, JSON.stringify(mine.map((e) => e.action)));
    assert.equal(written[0]!.details.path, 'sum.js');
    assert.equal(written[0]!.details.exitCode, 0);
    assert.ok(mine.some((e) => e.action === 'file.read' && e.details.path === 'sum.js'));
    assert.ok(!mine.some((e) => e.action === 'command.run' && JSON.stringify(e.details.cmd).includes('cat > ')), 'a file write recorded as a command');
    // Each still has its start on record before it ran, with the intent beside the argv.
    const start = mine.find((e) => e.action === 'command.start' && (e.details.intent as { action?: string } | undefined)?.action === 'file.written');
    assert.deepEqual(start?.details.intent, { action: 'file.written', path: 'sum.js' });

    const { context, page } = await b.context({ token: t.client.token });
    await page.getByRole('link', { name: 'Audit log' }).click();
    await page.getByText(/Chain verified/).waitFor();
    const row = page.locator('table.audit tbody tr', { hasText: 'file written: sum.js' });
    await row.waitFor();
    assert.equal(await row.locator('td').nth(3).textContent(), 'file.written');
    // No raw JSON until asked for; then the whole entry.
    const json = row.locator('pre.json');
    assert.equal(await json.isVisible(), false);
    await row.getByText('Details').click();
    await json.waitFor();
    assert.match((await json.textContent()) ?? '', /"path": "sum\.js"/);
    // The actor is named as a person where it is one.
    await page.locator('table.audit tbody tr', { hasText: 'task created' }).first().waitFor();
    assert.ok(!(await page.locator('table.audit').innerText()).includes('mkdir -p "$(dirname'), 'the wrapper shows in the words');
    await context.close();
  });

  test('dark mode follows the system and can be switched; the choice is kept', async () => {
    const background = (page: Page) => page.evaluate(() => getComputedStyle(document.documentElement).backgroundColor);
    const themeOf = (page: Page) => page.evaluate(() => [document.documentElement.dataset.theme, getComputedStyle(document.documentElement).backgroundColor]);
    // A system set to dark: Chromium emulates it per context; Firefox, which does not
    // implement that over BiDi, is a second browser started with its own switch.
    const dark = browserName === 'chromium' ? b : await launchBrowser(t.client.url, 'firefox', { colorScheme: 'dark' });
    try {
      const { context, page } = await dark.context({ token: t.client.token, colorScheme: 'dark' });
      assert.deepEqual(await themeOf(page), ['dark', 'rgb(13, 17, 23)']);
      await page.getByLabel('Theme').selectOption('light');
      assert.deepEqual(await themeOf(page), ['light', 'rgb(255, 255, 255)']);
      await page.reload();
      await page.getByRole('heading', { name: 'Tasks', level: 1 }).waitFor();
      assert.deepEqual(await themeOf(page), ['light', 'rgb(255, 255, 255)']);
      assert.equal(await page.getByLabel('Theme').inputValue(), 'light');
      await page.getByLabel('Theme').selectOption('system');
      assert.deepEqual(await themeOf(page), ['dark', 'rgb(13, 17, 23)']);
      await context.close();
    } finally {
      if (dark !== b) await dark.close();
    }
    // A light system, switched to dark by hand.
    const { context, page } = await b.context({ token: t.client.token });
    assert.deepEqual(await themeOf(page), ['light', 'rgb(255, 255, 255)']);
    await page.getByLabel('Theme').selectOption('dark');
    assert.deepEqual(await themeOf(page), ['dark', 'rgb(13, 17, 23)']);
    assert.equal(await background(page), 'rgb(13, 17, 23)');
    await context.close();
  });

  test('the task transcript reads at 390 px wide: no sideways scrolling, each line the width of the screen', async () => {
    assert.ok(taskId);
    const { context, page } = await b.context({ token: t.client.token, viewport: { width: 390, height: 844 } });
    await page.goto(`/tasks/${taskId}`);
    await page.locator('.facts .badge', { hasText: 'succeeded' }).waitFor({ timeout: 180_000 });
    const log = page.getByRole('log', { name: 'Transcript' });
    await log.locator('.ev-title').first().waitFor();
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= 390), `the page is ${await page.evaluate(() => document.documentElement.scrollWidth)} px wide`);
    const widths = await log.locator('.ev-title').evaluateAll((els) => els.map((e) => e.getBoundingClientRect().width));
    assert.ok(widths.length > 3);
    for (const w of widths) assert.ok(w >= 300, `a transcript line is ${w} px wide: ${widths.join(', ')}`);
    // The edit the agent made reads whole on its line, and its output opens below.
    await log.locator('.ev', { hasText: 'edit_file' }).first().waitFor();
    const show = log.getByRole('button', { name: /Show output/ }).last();
    await show.click();
    await log.locator('.ev-detail').first().waitFor();
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= 390));
    await context.close();
  });

  test('Settings: a project form with every setting; a project is edited in place', async () => {
    const { context, page } = await b.context({ token: t.client.token });
    await page.goto('/settings');
    const form = page.getByRole('form', { name: 'Create a project' });
    await typeInto(form.getByLabel('Name', { exact: true }), 'polished');
    await typeInto(form.getByLabel('Repository URL'), 'https://github.com/acme/polished.git');
    await typeInto(form.getByLabel('Default branch'), 'trunk');
    await typeInto(form.getByLabel('Secrets (names)'), 'GIT_TOKEN');
    await typeInto(form.getByLabel('Image'), 'debian:bookworm');
    await typeInto(form.getByLabel('Setup commands (one a line)'), 'npm ci');
    await typeInto(form.getByLabel('Check command'), 'npm test');
    await typeInto(form.getByLabel('CPUs'), '2');
    await typeInto(form.getByLabel('Memory'), '4gb');
    await typeInto(form.getByLabel('Allowed domains'), 'registry.npmjs.org, *.example.com');
    await form.getByLabel('Agent', { exact: true }).selectOption('builtin');
    await typeInto(form.getByLabel('Model'), 'gpt-4o-mini');
    await form.getByLabel('Forge', { exact: true }).selectOption('github');
    await typeInto(form.getByLabel('Token secret'), 'GIT_TOKEN');
    await form.getByRole('button', { name: 'Create project' }).click();
    await page.getByRole('rowheader', { name: 'polished' }).waitFor();
    const created = (await t.api('GET', '/api/orgs/default/projects/polished')).body;
    assert.equal(created.repoUrl, 'https://github.com/acme/polished.git');
    assert.equal(created.defaultBranch, 'trunk');
    assert.deepEqual(created.secrets, ['GIT_TOKEN']);
    assert.deepEqual(created.work, { image: 'debian:bookworm', setup: ['npm ci'], check: 'npm test', limits: { cpus: 2, memory: '4gb' }, allowDomains: ['registry.npmjs.org', '*.example.com'] });
    assert.deepEqual(created.agent, { kind: 'builtin', model: 'gpt-4o-mini' });
    assert.deepEqual(created.forge, { kind: 'github', tokenSecret: 'GIT_TOKEN' });

    // Edit: the form comes filled in; a changed field is saved, an emptied one goes back to the default.
    await page.getByRole('button', { name: 'Edit project polished' }).click();
    const edit = page.getByRole('form', { name: 'Edit project polished' });
    assert.equal(await edit.getByLabel('Check command').inputValue(), 'npm test');
    assert.equal(await edit.getByLabel('Memory').inputValue(), '4gb');
    await typeInto(edit.getByLabel('Check command'), 'npm run test:ci');
    await typeInto(edit.getByLabel('Memory'), '');
    await typeInto(edit.getByLabel('Model'), '');
    await typeInto(edit.getByLabel('Default branch'), 'main');
    await edit.getByRole('button', { name: 'Save project' }).click();
    await edit.waitFor({ state: 'detached' });
    const saved = (await t.api('GET', '/api/orgs/default/projects/polished')).body;
    assert.equal(saved.defaultBranch, 'main');
    assert.equal(saved.work.check, 'npm run test:ci');
    assert.deepEqual(saved.work.limits, { cpus: 2 });
    assert.deepEqual(saved.work.setup, ['npm ci']);
    assert.deepEqual(saved.agent, { kind: 'builtin' });
    assert.equal(saved.repoUrl, created.repoUrl);
    await page.getByRole('row', { name: /polished/ }).getByText('check: npm run test:ci', { exact: false }).waitFor();

    // A refused change says why and changes nothing.
    await page.getByRole('button', { name: 'Edit project polished' }).click();
    await typeInto(page.getByRole('form', { name: 'Edit project polished' }).getByLabel('Memory'), '8gb');
    await typeInto(page.getByRole('form', { name: 'Edit project polished' }).getByLabel('Secrets (names)'), 'bad-name');
    await page.getByRole('form', { name: 'Edit project polished' }).getByRole('button', { name: 'Save project' }).click();
    await page.getByRole('form', { name: 'Edit project polished' }).getByRole('alert').waitFor();
    const after = (await t.api('GET', '/api/orgs/default/projects/polished')).body;
    assert.deepEqual([after.work.limits, after.secrets], [{ cpus: 2 }, ['GIT_TOKEN']]);
    await context.close();
  });

  test('a change that is not green merges only after the person confirms it, and that is on record', async () => {
    assert.ok(taskId, 'the task test ran first');
    // As if its checks had failed: the change stays a candidate, but not a green one.
    await t.berth.database.db.updateTable('tasks').set({ checks_passed: false }).where('id', '=', taskId).execute();
    const { context, page } = await b.context({ token: t.client.token });
    await page.goto(`${t.client.url}/tasks/${taskId}`);
    const merge = page.getByRole('button', { name: 'Merge anyway…' });
    await merge.waitFor();
    assert.equal(await page.getByRole('button', { name: 'Approve and merge' }).count(), 0, 'no plain approve for a red change');
    // Dismissed: nothing is sent (confirm() returns before any request would start), nothing merged.
    const approvals: string[] = [];
    page.on('request', (r) => void (r.url().endsWith('/approve') && approvals.push(r.postData() ?? '')));
    page.once('dialog', (d) => void d.dismiss());
    await merge.click();
    await page.evaluate(() => new Promise((r) => setTimeout(r, 0)));
    assert.deepEqual(approvals, []);
    assert.ok(!(await t.api('GET', `/api/orgs/default/tasks/${taskId}`)).body.changeRequest.mergedSha);
    // Confirmed: merged with force, and the audit log says it was forced.
    page.once('dialog', (d) => void d.accept());
    await merge.click();
    await merge.waitFor({ state: 'detached' });
    // One request (its body is not readable over Firefox's BiDi; the audit entry below says it was forced).
    assert.equal(approvals.length, 1);
    assert.match((await t.api('GET', `/api/orgs/default/tasks/${taskId}`)).body.changeRequest.mergedSha, /^[0-9a-f]{40}$/);
    const forced = (await t.api('GET', '/api/orgs/default/audit?action=task.approve_forced')).body.items as { target: string }[];
    assert.ok(forced.some((e) => e.target === taskId), JSON.stringify(forced));
    await context.close();
  });
});
