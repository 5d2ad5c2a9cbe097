// Triggers in the web UI, in real browsers (Chromium and Firefox): a task a trigger started says on its page who
// started it (and links the task it continues), the tasks list filters by trigger and marks
// such tasks with a badge, and Settings lists the instance's integrations (to instance
// administrators only, secrets never shown), the org's schedules and its generic webhooks.
// sandbox: none (test/fakes/fake-runner.ts; scripts/test.ts runs these more at once)
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { AxeResults } from 'axe-core';
import type { Page } from 'playwright-core';
import { TASK_TRIGGERS } from '../../src/shared/api-tasks.ts';
import { TokenService } from '../../src/server/auth.ts';
import { apiAs, REPO, startTestBerth, type TestBerth } from '../helpers.ts';
import { BROWSERS, ensureWebBuilt, launchBrowser, testBrowsers, type TestBrowser } from './browser.ts';

const GITHUB_SECRET = 'whsec-never-on-screen-0123456789';
/** A GitHub App as an instance administrator sets it up (src/server/triggers/github/settings.ts). */
const GITHUB_SETUP = {
  settings: { appId: '12345', label: 'berth-fix' },
  secrets: { privateKey: '-----BEGIN RSA PRIVATE KEY-----\nnot-a-real-key\n-----END RSA PRIVATE KEY-----\n', webhookSecret: GITHUB_SECRET },
};

let t: TestBerth;
let b: TestBrowser;
let issueTask = '';
let reviewTask = '';
let cliTask = '';

async function project() {
  return t.berth.database.db.selectFrom('projects').selectAll().where('name', '=', 'widgets').executeTakeFirstOrThrow();
}

before(async () => {
  ensureWebBuilt();
  // No worker takes tasks: they stay queued as they were made, whatever the page shows.
  t = await startTestBerth({ fake: true, taskConcurrency: 0 });
  const p = await t.api('POST', '/api/orgs/default/projects', { name: 'widgets', repoUrl: 'https://github.com/acme/widgets.git' });
  assert.equal(p.status, 201, JSON.stringify(p.body));
  const cli = await t.api('POST', '/api/orgs/default/tasks', { project: 'widgets', goal: 'Tidy the changelog by hand', trigger: 'cli', agent: 'command', command: 'true' });
  assert.equal(cli.status, 201, JSON.stringify(cli.body));
  cliTask = cli.body.id;
  const { triggered } = t.berth.triggers.deps;
  const issue = await triggered.start({
    project: await project(),
    goal: 'Fix the flaky login test (issue #7)',
    trigger: 'github',
    triggeredBy: 'github:octocat',
    key: 'github:delivery-web-1',
    actor: 'github:octocat',
    task: { agent: 'command', command: 'true' },
    source: { delivery: 'delivery-web-1', issue: 7 },
  });
  issueTask = issue.id;
  const review = await triggered.start({
    project: await project(),
    goal: 'Address the review on the login fix',
    trigger: 'github',
    triggeredBy: 'github:hubot',
    key: 'github:delivery-web-2',
    actor: 'github:hubot',
    continuesTaskId: issueTask,
    task: { agent: 'command', command: 'true' },
    source: { delivery: 'delivery-web-2', pull: 8 },
  });
  reviewTask = review.id;
});
after(async () => {
  await t?.destroy();
});

const AXE = readFileSync(join(REPO, 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');

/** Serious and critical WCAG 2.1 A/AA violations on the page as it is (as test/web/a11y.test.ts counts them). */
async function violations(page: Page): Promise<string[]> {
  if (!(await page.evaluate(() => 'axe' in window))) await page.evaluate(AXE);
  const options = { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] }, resultTypes: ['violations'] };
  const results = await page.evaluate((o) => (window as unknown as { axe: { run(ctx: Document, o: unknown): Promise<AxeResults> } }).axe.run(document, o), options);
  return results.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`);
}

for (const { name: browser, skip } of testBrowsers()) describe(`triggers in ${BROWSERS[browser].label}`, { skip }, () => {
  before(async () => {
    b = await launchBrowser(t.client.url, browser);
  });
  after(() => b?.close());

  test("a triggered task's page says who started it and links the task it continues", async () => {
    const { context, page } = await b.context({ token: t.client.token });
    await page.goto(`/tasks/${reviewTask}`);
    await page.getByRole('heading', { name: 'Address the review on the login fix', level: 1 }).waitFor();
    const origin = page.locator('dd.trigger-origin');
    assert.equal((await origin.textContent())?.trim(), 'Started by GitHub: hubot');
    const continues = page.getByRole('link', { name: issueTask });
    assert.equal(await continues.getAttribute('href'), `/tasks/${issueTask}`);
    assert.deepEqual(await violations(page), []);
    await continues.click();
    await page.getByRole('heading', { name: 'Fix the flaky login test (issue #7)', level: 1 }).waitFor();
    assert.equal((await page.locator('dd.trigger-origin').textContent())?.trim(), 'Started by GitHub: octocat');
    assert.equal(await page.getByText('Continues', { exact: true }).count(), 0, 'the first task continues nothing');

    // A task someone started from the CLI names the person and the tool, and no outside origin.
    await page.goto(`/tasks/${cliTask}`);
    await page.getByRole('heading', { name: 'Tidy the changelog by hand', level: 1 }).waitFor();
    await page.getByText('via cli').waitFor();
    assert.equal(await page.locator('dd.trigger-origin').count(), 0);
    await context.close();
  });

  test('the tasks list offers every trigger, filters by GitHub and marks triggered tasks with a badge', async () => {
    const { context, page } = await b.context({ token: t.client.token });
    await page.goto('/tasks');
    const trigger = page.getByLabel('Trigger');
    await page.getByRole('link', { name: 'Tidy the changelog by hand' }).waitFor();
    const offered = await trigger.locator('option').evaluateAll((os) => os.map((o) => (o as HTMLOptionElement).value));
    assert.deepEqual(offered, ['', ...TASK_TRIGGERS]);
    // Unfiltered: the CLI task reads "cli" plainly, the GitHub ones carry a badge saying who.
    const row = (goal: string) => page.locator('tbody tr', { has: page.getByRole('link', { name: goal }) });
    assert.equal(await row('Tidy the changelog by hand').locator('.badge.trigger').count(), 0);
    const badge = row('Fix the flaky login test (issue #7)').locator('.badge.trigger');
    assert.equal(await badge.textContent(), 'GitHub');
    assert.equal(await badge.getAttribute('title'), 'Started by GitHub: octocat');
    assert.equal(await row('Fix the flaky login test (issue #7)').locator('td').nth(4).textContent(), 'GitHub: octocat');

    await trigger.selectOption('github');
    await page.waitForURL(/\/tasks\?trigger=github$/);
    await page.waitForFunction(() => !document.body.innerText.includes('Tidy the changelog by hand'));
    const goals = await page.locator('tbody td.goal').allTextContents();
    assert.deepEqual(goals.sort(), ['Address the review on the login fix', 'Fix the flaky login test (issue #7)']);
    assert.deepEqual(await violations(page), []);
    await context.close();
  });

  test('Settings lists the integrations to an instance administrator, never a secret, and only a note to others', async () => {
    const kinds = (await t.api('GET', '/api/integrations')).body.items.map((i: { kind: string }) => i.kind) as string[];
    assert.ok(kinds.includes('github'), `the GitHub App is an integration: ${kinds.join(', ')}`);
    const set = await t.api('PUT', '/api/integrations/github', GITHUB_SETUP);
    assert.equal(set.status, 200, JSON.stringify(set.body));

    const { context, page } = await b.context({ token: t.client.token });
    await b.allowClipboard(context);
    await page.goto('/settings');
    const part = page.locator('#integrations');
    const row = part.locator('tr#integration-github');
    await row.waitFor();
    assert.equal(await row.getByRole('rowheader').innerText(), 'GitHub App');
    const cells = await row.locator('td').allTextContents();
    assert.equal(cells[0], 'yes');
    assert.match(cells[3]!, /appId 12345 · label berth-fix/);
    assert.match(cells[1]!, new RegExp(`^${t.client.url.replace(/[.]/g, '\\.')}/api/webhooks/github`));
    for (const name of Object.keys(GITHUB_SETUP.secrets)) assert.ok(cells[2]!.includes(name), `${name} is named as set: ${cells[2]}`);
    assert.ok(!(await page.content()).includes(GITHUB_SECRET), 'no secret value on the page');
    // Copy puts the webhook URL on the clipboard, and says so.
    await row.getByRole('button', { name: 'Copy the GitHub App webhook URL' }).click();
    await row.getByText('Copied').waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), `${t.client.url}/api/webhooks/github`);
    // The other kinds are listed as not set up; Slack is given two request URLs, each to copy.
    for (const kind of kinds.filter((k) => k !== 'github')) {
      assert.equal(await part.locator(`tr#integration-${kind} td`).first().textContent(), 'no');
    }
    const slack = part.locator('tr#integration-slack');
    for (const what of ['commands', 'events']) {
      assert.ok((await slack.innerText()).includes(`${t.client.url}/api/webhooks/slack/${what}`), `Slack's ${what} URL`);
      await slack.getByRole('button', { name: `Copy the Slack app ${what} URL` }).waitFor();
    }
    assert.deepEqual(await violations(page), []);
    await context.close();

    // An org admin's token is no instance administrator: a note, no table, no error.
    const token = await t.api('POST', '/api/orgs/default/tokens', { role: 'admin', name: 'org-admin' });
    assert.equal(token.status, 201, JSON.stringify(token.body));
    const other = await b.context({ token: token.body.token });
    await other.page.goto('/settings');
    const note = other.page.locator('#integrations');
    await note.getByText('only an instance administrator sees and sets them up').waitFor();
    assert.equal(await note.locator('table').count(), 0);
    assert.equal(await note.getByRole('alert').count(), 0);
    await other.context.close();
  });

  test('Settings lists the schedules: what each does and when it fires next; its creator pauses, resumes and removes it; a task links to its schedule', async () => {
    const made = await t.api('POST', '/api/orgs/default/schedules', { kind: 'task', name: `nightly-${browser}`, cron: '0 3 * * 1-5', timezone: 'Europe/Berlin', project: 'widgets', goal: 'Bump the dependencies\nand run the tests', agent: 'command', command: 'true' });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const id = made.body.id as string;
    const fired = await t.berth.triggers.deps.triggered.start({
      project: await project(),
      goal: 'Bump the dependencies',
      trigger: 'schedule',
      triggeredBy: `schedule:${id}`,
      key: `schedule:${id}@2026-12-07T02:00:00Z`,
      actor: `schedule:${id}`,
      task: { agent: 'command', command: 'true' },
      source: { schedule: id },
    });

    const { context, page } = await b.context({ token: t.client.token });
    page.on('dialog', (d) => void d.accept());
    // From the task the schedule started, to its row in Settings.
    await page.goto(`/tasks/${fired.id}`);
    const link = page.getByRole('link', { name: `Schedule ${id}` });
    await link.click();
    await page.waitForURL(new RegExp(`/settings#schedule-${id}$`));
    const part = page.locator('#schedules');
    const row = part.locator(`tr#schedule-${id}`);
    await row.waitFor();
    assert.match((await row.getAttribute('class')) ?? '', /\bfocus\b/, 'the linked row is marked');
    assert.match(await row.getByRole('rowheader').innerText(), new RegExp(`^nightly-${browser}`));
    const cells = () => row.locator('td').allInnerTexts();
    const [when, does, next, state] = await cells();
    assert.match(when!, /0 3 \* \* 1-5\s+Europe\/Berlin/);
    assert.match(does!, /^A task on widgets\s+Bump the dependencies$/);
    assert.equal(await row.locator('td time').getAttribute('dateTime'), made.body.nextAt);
    assert.ok(next, 'a next firing');
    assert.equal(state, 'active');
    assert.deepEqual(await violations(page), []);

    await row.getByRole('button', { name: `Pause schedule nightly-${browser}` }).click();
    await row.getByText('paused').waitFor();
    assert.equal((await t.api('GET', `/api/orgs/default/schedules/${id}`)).body.paused, true);
    assert.equal((await cells())[2], '—', 'a paused schedule fires next never');
    await row.getByRole('button', { name: `Resume schedule nightly-${browser}` }).click();
    await row.getByText('active').waitFor();
    assert.equal((await t.api('GET', `/api/orgs/default/schedules/${id}`)).body.paused, false);

    // Another member sees it, with nothing to press: only its creator or an admin changes it (the API agrees).
    const bob = await t.api('PUT', '/api/orgs/default/members/bob%40example.com', { role: 'member' });
    assert.equal(bob.status, 200, JSON.stringify(bob.body));
    const bobToken = (await new TokenService(t.berth.database.db).create({ kind: 'user', userId: bob.body.userId, name: "bob's sign-in" })).token;
    assert.equal((await apiAs(t, bobToken)('POST', `/api/orgs/default/schedules/${id}/pause`)).status, 403);
    const other = await b.context({ token: bobToken });
    await other.page.goto('/settings');
    const theirs = other.page.locator(`tr#schedule-${id}`);
    await theirs.waitFor();
    assert.equal(await theirs.getByRole('button').count(), 0);
    await other.context.close();

    await row.getByRole('button', { name: `Remove schedule nightly-${browser}` }).click();
    await row.waitFor({ state: 'detached' });
    assert.equal((await t.api('GET', `/api/orgs/default/schedules/${id}`)).status, 404);
    await part.getByText('No schedules.').waitFor();
    await context.close();
  });

  test('Settings lists the generic webhooks with their URLs, never their secrets, and removes one', async () => {
    const made = await t.api('POST', '/api/orgs/default/triggers', { name: `ci-failures-${browser}`, project: 'widgets', goalTemplate: 'Fix the CI job {{body.job}}', auth: 'hmac' });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const { id, url, secret } = made.body as { id: string; url: string; secret: string };
    assert.ok(secret.length >= 16);

    const { context, page } = await b.context({ token: t.client.token });
    await b.allowClipboard(context);
    page.on('dialog', (d) => void d.accept());
    await page.goto('/settings');
    const part = page.locator('#webhooks');
    const row = part.locator(`tr#webhook-${id}`);
    await row.waitFor();
    assert.match(await row.getByRole('rowheader').innerText(), new RegExp(`^ci-failures-${browser}`));
    const [proj, where, goal] = await row.locator('td').allInnerTexts();
    assert.equal(proj, 'widgets');
    assert.ok(where!.includes(url), `${where} shows ${url}`);
    assert.match(url, /\/api\/webhooks\/triggers\/whk_/);
    assert.equal(goal, 'Fix the CI job {{body.job}}');
    assert.ok(!(await page.content()).includes(secret), 'the secret is never on the page');
    await row.getByRole('button', { name: `Copy the URL of webhook ci-failures-${browser}` }).click();
    await row.getByText('Copied').waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), url);
    assert.deepEqual(await violations(page), []);

    await row.getByRole('button', { name: `Remove webhook ci-failures-${browser}` }).click();
    await row.waitFor({ state: 'detached' });
    assert.equal((await t.api('GET', `/api/orgs/default/triggers/${id}`)).status, 404);
    await context.close();
  });
});
