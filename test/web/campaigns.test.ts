// Campaigns in the web UI (issue #17), in real browsers (Chromium and Firefox): a campaign
// over local bare repositories with a command agent, one of which fails its check. The list
// shows it with its progress; its page shows the counts, the branches it pushed (each linked
// to its task), the failure grouped by reason, every repository a page at a time by state,
// and the export as CSV and JSON. Pause then resume changes the state shown; cancel asks
// first; a viewer sees the buttons disabled, another member the API's refusal; a task it started links back to it.
// The New campaign form: a list none of whose lines can be used is refused with its line named
// and nothing made; a list with a bad line runs over the rest and its page lists the line left
// out; a change's diff opens in the page; approving the green changes merges them and says so.
// A viewer sees no New campaign button, and only an admin the Approve form.
// sandbox: none (test/fakes/fake-runner.ts; scripts/test.ts runs these more at once)
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { AxeResults } from 'axe-core';
import type { Page } from 'playwright-core';
import { TokenService } from '../../src/server/auth.ts';
import { createBareRepo, runGit } from '../fakes/git-server.ts';
import { apiAs, REPO, startTestBerth, waitFor, type TestBerth } from '../helpers.ts';
import { BROWSERS, ensureWebBuilt, launchBrowser, testBrowsers, typeInto, type TestBrowser } from './browser.ts';

let t: TestBerth;
let root: string;
let viewer: string;
let member: string;
/** The repositories: three whose check passes, one (`broken`) whose check fails. */
const repos: string[] = [];
const CHECK = 'test ! -e broken';

const AXE = readFileSync(join(REPO, 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');

/** Serious and critical WCAG 2.1 A/AA violations on the page as it is (as test/web/a11y.test.ts counts them). */
async function violations(page: Page): Promise<string[]> {
  if (!(await page.evaluate(() => 'axe' in window))) await page.evaluate(AXE);
  const options = { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] }, resultTypes: ['violations'] };
  const results = await page.evaluate((o) => (window as unknown as { axe: { run(ctx: Document, o: unknown): Promise<AxeResults> } }).axe.run(document, o), options);
  return results.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`);
}

/** What the page handed the browser to save, read where it is made (a blob), in either browser. */
async function captureDownloads(page: Page): Promise<() => Promise<string[]>> {
  await page.evaluate(() => {
    const w = window as unknown as { __saved: Promise<string>[] };
    w.__saved = [];
    const make = URL.createObjectURL.bind(URL);
    URL.createObjectURL = (blob: Blob | MediaSource) => {
      if (blob instanceof Blob) w.__saved.push(blob.text());
      return make(blob);
    };
  });
  return () => page.evaluate(() => Promise.all((window as unknown as { __saved: Promise<string>[] }).__saved));
}

async function createCampaign(body: Record<string, unknown>) {
  const made = await t.api('POST', '/api/orgs/default/campaigns', { goal: 'Add a line to a.txt', agent: 'command', command: 'echo x >> a.txt', ...body });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  return made.body.campaign as { id: string; name: string };
}

const show = async (id: string) => (await t.api('GET', `/api/orgs/default/campaigns/${id}`)).body;

before(async () => {
  ensureWebBuilt();
  t = await startTestBerth({ fake: true });
  root = await mkdtemp(join(tmpdir(), 'berth-web-campaigns-'));
  for (const name of ['alpha', 'bravo', 'charlie', 'broken']) {
    const files: Record<string, string> = { 'a.txt': `${name}\n` };
    if (name === 'broken') files.broken = 'the check fails here\n';
    repos.push((await createBareRepo({ root, name: `${name}.git`, files })).path);
  }
  const v = await t.api('POST', '/api/orgs/default/tokens', { role: 'viewer', name: 'campaign viewer' });
  assert.equal(v.status, 201, JSON.stringify(v.body));
  viewer = v.body.token;
  // Another person, a member: not the campaign's maker.
  const m = await t.api('PUT', '/api/orgs/default/members/bob%40example.com', { role: 'member' });
  assert.equal(m.status, 200, JSON.stringify(m.body));
  member = (await new TokenService(t.berth.database.db).create({ kind: 'user', userId: m.body.userId, name: "bob's sign-in" })).token;
});
after(async () => {
  await t?.destroy();
  if (root) await rm(root, { recursive: true, force: true });
});

for (const { name: browser, skip } of testBrowsers()) describe(`campaigns in ${BROWSERS[browser].label}`, { skip }, () => {
  let b: TestBrowser;
  before(async () => {
    b = await launchBrowser(t.client.url, browser);
  });
  after(() => b?.close());

  test('the list shows a finished campaign with its progress; its page shows counts, branches, the failure group, every repository and the export', async () => {
    const c = await createCampaign({ name: `logging-${browser}`, repos, check: CHECK, concurrency: 2, forgeRate: '100/s' });
    const done = await waitFor(`campaign ${c.name} done`, async () => {
      const s = await show(c.id);
      return s.state === 'done' ? s : null;
    }, 120_000);
    assert.deepEqual([done.counts.succeeded, done.counts.failed], [3, 1], JSON.stringify(done));

    const { context, page } = await b.context({ token: t.client.token });
    await page.goto('/tasks');
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Campaigns' }).click();
    await page.getByRole('heading', { name: 'Campaigns', level: 1 }).waitFor();
    const row = page.getByRole('row', { name: new RegExp(`^${c.name}`) });
    await row.waitFor();
    const cells = await row.locator('td').allInnerTexts();
    assert.match(cells[0]!, /done/);
    assert.match(cells[1]!, /4\/4/);
    assert.equal(cells[2], '1');
    assert.equal(cells[3], '0');
    assert.equal(await row.getByRole('progressbar', { name: `${c.name}: 4 of 4 repositories done` }).getAttribute('aria-valuenow'), '4');
    assert.deepEqual(await violations(page), []);

    assert.equal(await row.getByRole('link', { name: c.name }).getAttribute('href'), `/campaigns/${c.id}`);
    // Loaded afresh, not by its link: Firefox over BiDi (playwright-core 1.65) may drop the
    // page's script context after a pushState (as test/web/a11y.test.ts says).
    await page.goto(`/campaigns/${c.id}`);
    await page.getByRole('heading', { name: c.name, level: 1 }).waitFor();
    const settings = page.getByRole('region', { name: 'Settings' });
    await settings.getByText('echo x >> a.txt').waitFor();
    await settings.getByText(CHECK).waitFor();
    await settings.getByText(`berth/campaign/${c.name}`).waitFor();
    const progress = page.getByRole('region', { name: 'Progress' });
    const counts = (await progress.getByRole('list', { name: 'Repositories by state' }).innerText()).split('\n').filter(Boolean);
    assert.deepEqual(counts, ['0 pending', '0 starting', '0 running', '3 succeeded', '1 failed', '0 cancelled']);
    assert.match(await progress.innerText(), /Peak running\s+[12] of 2/);
    // Done: Run again and Retry failed, no Pause or Cancel.
    const head = page.locator('.page-head');
    assert.deepEqual(await head.getByRole('button').allInnerTexts(), ['Retry failed', 'Run again']);

    // The branches: the three that passed and the one whose check failed pushed theirs, each with its task.
    const changes = page.getByRole('region', { name: 'Pull requests and branches' });
    const tasks = (await t.api('GET', `/api/orgs/default/campaigns/${c.id}/targets`)).body.items as { repo: string; taskId: string; state: string }[];
    for (const target of tasks.filter((x) => x.state === 'succeeded')) {
      const r = changes.getByRole('row').filter({ hasText: target.repo.replace(/\.git$/, '') });
      await r.getByText('succeeded').waitFor();
      assert.equal(await r.getByRole('link', { name: target.taskId }).getAttribute('href'), `/tasks/${target.taskId}`);
    }
    // The failure, grouped by its reason, names the repository and links its task.
    const failures = page.getByRole('region', { name: 'Failures' });
    const broken = tasks.find((x) => x.repo.endsWith('broken.git'))!;
    const group = failures.getByRole('row').nth(1);
    assert.match(await group.innerText(), /check/);
    await group.getByText(/broken/).first().waitFor();
    assert.equal(await group.getByRole('link', { name: broken.taskId }).getAttribute('href'), `/tasks/${broken.taskId}`);

    // Every repository, by state.
    const listed = page.getByRole('region', { name: 'Repositories' });
    await listed.getByRole('row').nth(4).waitFor();
    assert.equal(await listed.getByRole('row').count(), 5);
    await listed.getByLabel('State').selectOption('failed');
    await listed.getByText('Repositories 1–1 that are failed.').waitFor();
    assert.equal(await listed.getByRole('row').count(), 2);
    // Firefox ESR 153's content process dies while axe-core walks a details list (as on the
    // environment page, test/web/a11y.test.ts); Chromium checks it.
    if (browser === 'chromium') assert.deepEqual(await violations(page), []);

    // The export, as CSV and as JSON.
    const saved = await captureDownloads(page);
    await progress.getByRole('link', { name: /^CSV/ }).click();
    await waitFor('the CSV saved', async () => (await saved()).length === 1, 10_000);
    await progress.getByRole('link', { name: /^JSON/ }).click();
    await waitFor('the JSON saved', async () => (await saved()).length === 2, 10_000);
    const [csv, json] = await saved();
    const lines = csv!.trim().split('\n');
    assert.match(lines[0]!, /^repo,project,state,/);
    assert.equal(lines.length, 5);
    assert.equal(lines.filter((l) => l.includes(',failed,')).length, 1);
    const parsed = JSON.parse(json!);
    assert.equal(parsed.campaign.id, c.id);
    assert.equal(parsed.targets.length, 4);
    assert.equal(await progress.getByRole('link', { name: /^CSV/ }).getAttribute('href'), `/api/orgs/default/campaigns/${c.id}/export?format=csv`);

    // A task it started says so, linked to the campaign.
    await page.goto(`/tasks/${broken.taskId}`);
    const origin = page.locator('.trigger-origin').getByRole('link', { name: `Campaign ${c.id}` });
    await origin.waitFor();
    assert.equal(await origin.getAttribute('href'), `/campaigns/${c.id}`);
    await context.close();
  });

  test("pause then resume changes the state shown, live; cancel asks first; a viewer sees the buttons disabled, another member the API's refusal", async () => {
    // One at a time, and the first waits for a file that never comes: the campaign stays at work.
    const gate = join(root, `never-${browser}`);
    const c = await createCampaign({ name: `slow-${browser}`, repos: repos.slice(0, 2), concurrency: 1, command: `while [ ! -e ${gate} ]; do sleep 0.2; done` });
    await waitFor(`a task of ${c.name} running`, async () => (await show(c.id)).counts.running === 1);
    const { context, page } = await b.context({ token: t.client.token });
    let asked = 0;
    page.on('dialog', (d) => {
      asked++;
      void d.accept();
    });
    await page.goto(`/campaigns/${c.id}`);
    await page.getByRole('heading', { name: c.name, level: 1 }).waitFor();
    const head = page.locator('.page-head');
    await head.locator('.badge', { hasText: 'running' }).waitFor();
    assert.deepEqual(await head.getByRole('button').allInnerTexts(), ['Pause', 'Cancel']);

    await head.getByRole('button', { name: 'Pause' }).click();
    await head.locator('.badge', { hasText: 'paused' }).waitFor();
    await head.getByRole('button', { name: 'Resume' }).waitFor();
    assert.equal((await show(c.id)).state, 'paused');
    await head.getByRole('button', { name: 'Resume' }).click();
    await head.locator('.badge', { hasText: 'running' }).waitFor();
    assert.equal((await show(c.id)).state, 'running');

    // A change made elsewhere shows without a reload (the page polls while at work).
    assert.equal((await t.api('POST', `/api/orgs/default/campaigns/${c.id}/pause`)).status, 200);
    await head.locator('.badge', { hasText: 'paused' }).waitFor();

    // A viewer sees the page and the buttons, disabled, saying why.
    const other = await b.context({ token: viewer });
    await other.page.goto(`/campaigns/${c.id}`);
    const theirs = other.page.locator('.page-head');
    await theirs.getByRole('button', { name: 'Resume' }).waitFor();
    assert.equal(await theirs.getByRole('button', { name: 'Resume' }).isDisabled(), true);
    assert.equal(await theirs.getByRole('button', { name: 'Cancel' }).isDisabled(), true);
    await other.page.getByText('A viewer may watch a campaign').waitFor();
    assert.deepEqual(await violations(other.page), []);
    await other.context.close();

    // Another member may try, and is told the API's answer.
    const another = await b.context({ token: member });
    await another.page.goto(`/campaigns/${c.id}`);
    await another.page.locator('.page-head').getByRole('button', { name: 'Resume' }).click();
    const refused = await apiAs(t, member)('POST', `/api/orgs/default/campaigns/${c.id}/resume`);
    assert.equal(refused.status, 403, JSON.stringify(refused.body));
    await another.page.getByRole('alert').filter({ hasText: `Resume: ${refused.body.error.message}` }).waitFor();
    assert.equal((await show(c.id)).state, 'paused');
    await another.context.close();

    // Cancel, after the confirmation.
    await head.getByRole('button', { name: 'Cancel' }).click();
    await head.locator('.badge', { hasText: 'cancelled' }).waitFor();
    assert.equal(asked, 1);
    assert.equal((await show(c.id)).state, 'cancelled');
    assert.deepEqual(await head.getByRole('button').allInnerTexts(), ['Run again']);
    // The API's refusal is shown as it says it: a second cancel from elsewhere is refused.
    const again = await t.api('POST', `/api/orgs/default/campaigns/${c.id}/cancel`);
    assert.equal(again.status, 409);
    await context.close();
  });

  test('the New campaign form: a list with no usable line is refused, nothing made; a bad line among good ones is left out and shown; a diff opens in the page; approving the green ones merges them', async () => {
    const mine: string[] = [];
    for (const name of ['one', 'two', 'broken']) {
      const files: Record<string, string> = { 'a.txt': `${name}\n` };
      if (name === 'broken') files.broken = 'the check fails here\n';
      mine.push((await createBareRepo({ root, name: `form-${browser}-${name}.git`, files })).path);
    }
    const name = `form-${browser}`;
    const named = async () => ((await t.api('GET', '/api/orgs/default/campaigns')).body.items as { name: string }[]).filter((c) => c.name === name);
    const { context, page } = await b.context({ token: t.client.token });
    const asked: string[] = [];
    page.on('dialog', (d) => {
      asked.push(d.message());
      void d.accept();
    });
    await page.goto('/campaigns');
    await page.getByRole('button', { name: 'New campaign' }).click();
    const form = page.getByRole('form', { name: 'New campaign' });
    await typeInto(form.getByLabel('Name'), name);
    await typeInto(form.getByLabel('Goal'), 'Add a line to a.txt');
    await typeInto(form.getByLabel('Repository list'), '# the services\nnot a repository');
    await form.getByLabel('Agent').selectOption('command');
    await typeInto(form.getByLabel('Command'), 'echo x >> a.txt');
    await typeInto(form.getByLabel('Check', { exact: true }), CHECK);
    await typeInto(form.getByLabel('Concurrency'), '2');
    await typeInto(form.getByLabel('Forge rate'), '100/s');
    // An admin's: what these repositories without a project run with (their transient project).
    await typeInto(form.getByLabel('Image'), 'default');
    await typeInto(form.getByLabel('Also allowed domains'), 'registry.example.com, cdn.example.com');
    assert.deepEqual(await violations(page), []);

    // No line of the list can be used: refused, the line named, nothing made, the form as it was.
    await form.getByRole('button', { name: 'Start campaign' }).click();
    await form.getByRole('alert').filter({ hasText: /line 2: not a repository URL/ }).waitFor();
    assert.equal(await form.getByLabel('Repository list').getAttribute('aria-invalid'), 'true');
    assert.deepEqual(await named(), []);
    assert.equal(await form.getByLabel('Name').inputValue(), name);

    // Three repositories and a bad line: it runs over the three, and its page lists the line left out.
    await typeInto(form.getByLabel('Repository list'), `# the services\n${mine[0]}\nnot a repository\n\n${mine[1]}\n${mine[2]}\n`);
    await form.getByRole('button', { name: 'Start campaign' }).click();
    await page.getByRole('heading', { name, level: 1 }).waitFor();
    const [made] = await named();
    const c = (await show(name)) as { id: string; total: number };
    assert.ok(made);
    assert.equal(c.total, 3);
    assert.equal(new URL(page.url()).pathname, `/campaigns/${c.id}`);
    const settings = (await show(name)).settings as { image?: string; allowDomains?: string[] };
    assert.deepEqual([settings.image, settings.allowDomains], ['default', ['registry.example.com', 'cdn.example.com']]);
    await page.getByRole('region', { name: 'Settings' }).getByText('registry.example.com cdn.example.com').waitFor();
    const leftOut = page.getByRole('region', { name: 'Lines left out of the list' });
    await leftOut.getByText('1 line of the repository list named no repository').waitFor();
    assert.match(await leftOut.getByRole('row').nth(1).innerText(), /^3\s+not a repository\s+not a repository URL/);
    // Loaded afresh (Firefox over BiDi may drop the script context after the form's pushState, as
    // above): the lines left out are still listed in this tab.
    await page.goto(`/campaigns/${c.id}`);
    await leftOut.getByText('1 line of the repository list named no repository').waitFor();

    // It runs to the end, live: two succeed, the broken one fails its check.
    const head = page.locator('.page-head').first();
    await head.locator('.badge', { hasText: 'done' }).waitFor({ timeout: 120_000 });
    const done = await show(c.id);
    assert.deepEqual([done.counts.succeeded, done.counts.failed], [2, 1], JSON.stringify(done));
    // Chromium only: Firefox's content process dies under axe-core on this page (as above).
    if (browser === 'chromium') assert.deepEqual(await violations(page), []);

    // A repository's diff, in the page, with the task page's diff view.
    const changes = page.getByRole('region', { name: 'Pull requests and branches' });
    const short = mine[0]!.replace(/\.git$/, '');
    await changes.getByRole('button', { name: `Diff of ${short}` }).click();
    const diff = page.getByRole('region', { name: `Diff of ${short}` });
    await diff.getByText('1 file changed').waitFor();
    await diff.getByRole('navigation', { name: 'Changed files' }).getByText('a.txt').waitFor();
    assert.match(await diff.innerText(), /\bx\b/);
    await diff.getByRole('button', { name: 'Close' }).click();
    await diff.waitFor({ state: 'detached' });

    // Approve the green ones: the confirmation says how many, the result says what became of each.
    const approve = changes.getByRole('form', { name: 'Approve changes' });
    assert.equal(await approve.getByLabel('Green changes only').isChecked(), true);
    await approve.getByText('Up to 2 branches to merge, 0 drafts to mark ready.').waitFor();
    await approve.getByRole('button', { name: 'Approve' }).click();
    const result = changes.getByRole('region', { name: 'Last approval' });
    await result.getByText('2 approved, 0 skipped.').waitFor();
    assert.equal(asked.length, 1);
    assert.match(asked[0]!, new RegExp(`^Approve the green changes of ${name}\\? This merges 2 branches into their base branch \\(plain git\\)`));
    for (const repo of mine.slice(0, 2)) {
      assert.match(await result.getByRole('row').filter({ hasText: repo.replace(/\.git$/, '') }).innerText(), /merged/);
      assert.equal(await runGit(['--git-dir', repo, 'show', 'main:a.txt'], { cwd: root }), `${repo.endsWith('one.git') ? 'one' : 'two'}\nx\n`);
    }
    assert.equal(await runGit(['--git-dir', mine[2]!, 'show', 'main:a.txt'], { cwd: root }), 'broken\n');
    // Merged, nothing is left to approve.
    await approve.getByText('Nothing waits for approval.').waitFor();
    assert.equal(await approve.getByRole('button', { name: 'Approve' }).isDisabled(), true);
    await context.close();

    // A viewer: no New campaign, no Approve (the diff is theirs to read).
    const watcher = await b.context({ token: viewer });
    await watcher.page.goto('/campaigns');
    await watcher.page.getByRole('row', { name: new RegExp(`^${name}`) }).waitFor();
    assert.equal(await watcher.page.getByRole('button', { name: 'New campaign' }).count(), 0);
    await watcher.page.goto(`/campaigns/${c.id}`);
    const theirs = watcher.page.getByRole('region', { name: 'Pull requests and branches' });
    await theirs.getByRole('button', { name: `Diff of ${short}` }).waitFor();
    assert.equal(await theirs.getByRole('form', { name: 'Approve changes' }).count(), 0);
    assert.equal(await watcher.page.getByRole('button', { name: 'Approve' }).count(), 0);
    await watcher.context.close();

    // A member may start a campaign (over projects' repositories) but not approve one: the API's approve is an admin's.
    const another = await b.context({ token: member });
    await another.page.goto('/campaigns');
    await another.page.getByRole('button', { name: 'New campaign' }).waitFor();
    await another.page.goto(`/campaigns/${c.id}`);
    await another.page.getByRole('region', { name: 'Pull requests and branches' }).getByRole('button', { name: `Diff of ${short}` }).waitFor();
    assert.equal(await another.page.getByRole('button', { name: 'Approve' }).count(), 0);
    assert.equal((await apiAs(t, member)('POST', `/api/orgs/default/campaigns/${c.id}/approve`, { onlyGreen: true })).status, 403);
    await another.context.close();

    // At 390 px: the form and the page with a diff open scroll only inside their tables and code, never sideways.
    const narrow = await b.context({ token: t.client.token, viewport: { width: 390, height: 844 } });
    const width = () => narrow.page.evaluate(() => document.documentElement.scrollWidth);
    // What sticks out, when something does.
    const wide = () => narrow.page.evaluate(() => [...document.querySelectorAll('main *')].filter((e) => (e.getBoundingClientRect().right > 390 && !e.parentElement?.closest('.scroll-x, .diff-scroll'))).slice(0, 8).map((e) => `${e.tagName.toLowerCase()}${e.id ? `#${e.id}` : ''}${e.className ? `.${String(e.className).split(' ').join('.')}` : ''}`).join(', '));
    await narrow.page.goto('/campaigns');
    await narrow.page.getByRole('button', { name: 'New campaign' }).click();
    await narrow.page.getByRole('form', { name: 'New campaign' }).getByLabel('Agent').selectOption('command');
    assert.ok((await width()) <= 390, `the form is ${await width()} px wide: ${await wide()}`);
    await narrow.page.goto(`/campaigns/${c.id}`);
    await narrow.page.getByRole('button', { name: `Diff of ${short}` }).click();
    await narrow.page.getByRole('region', { name: `Diff of ${short}` }).getByText('1 file changed').waitFor();
    assert.ok((await width()) <= 390, `the page is ${await width()} px wide: ${await wide()}`);
    await narrow.context.close();
  });
});
