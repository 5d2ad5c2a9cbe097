// Accessibility of the web UI, in real browsers against a real berth: axe-core (the
// standard engine) finds no serious or critical WCAG 2.1 A/AA violation on any main page,
// and the main flow works from the keyboard alone, in a sensible order, with focus visible.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { AxeResults, RunOptions } from 'axe-core';
import type { Page } from 'playwright-core';
import { REPO, type TestBerth } from '../helpers.ts';
import { BROWSERS, testBrowsers, typeInto, type TestBrowser } from './browser.ts';
import { GOAL, startWebFixture, type WebFixture } from './fixture.ts';

const AXE = readFileSync(join(REPO, 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');
const AXE_OPTIONS: RunOptions = { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] }, resultTypes: ['violations'] };

/** The serious and critical violations axe finds on the page as it is now, one line each. */
async function violations(page: Page): Promise<string[]> {
  // Evaluated, not a <script>: the UI's Content-Security-Policy allows only its own scripts.
  if (!(await page.evaluate(() => 'axe' in window))) await page.evaluate(AXE);
  const results = await page.evaluate((options) => (window as unknown as { axe: { run(ctx: Document, o: unknown): Promise<AxeResults> } }).axe.run(document, options), AXE_OPTIONS);
  return results.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.help}\n${v.nodes.map((n) => `    ${n.target.join(' ')}: ${n.failureSummary?.replace(/\s+/g, ' ')}`).join('\n')}`);
}

/** What has the keyboard focus: how it reads, where it is, and whether a focus ring shows. */
interface Focus {
  name: string;
  top: number;
  left: number;
  ring: boolean;
}

async function focused(page: Page): Promise<Focus | null> {
  return page.evaluate(() => {
    const el = document.activeElement as HTMLElement | null;
    if (!el || el === document.body) return null;
    const label = el.getAttribute('aria-label') ?? (el.id ? document.querySelector(`label[for="${el.id}"]`)?.textContent : null) ?? el.closest('label')?.textContent ?? el.textContent ?? '';
    const r = el.getBoundingClientRect();
    const s = getComputedStyle(el);
    // A ring: an outline at least 2px wide in a colour that is not transparent, or a box shadow.
    const ring = (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2 && !/rgba\(.*, 0\)$/.test(s.outlineColor)) || s.boxShadow !== 'none';
    return { name: `${el.tagName.toLowerCase()} "${label.trim().replace(/\s+/g, ' ')}"`, top: Math.round(r.top + scrollY), left: Math.round(r.left + scrollX), ring };
  });
}

/**
 * Presses Tab (or Shift+Tab) until `want` has the focus, and returns every stop on the way;
 * each one must show a focus ring.
 */
async function tabTo(page: Page, want: RegExp, opts: { back?: boolean; max?: number } = {}): Promise<Focus[]> {
  const stops: Focus[] = [];
  for (let i = 0; i < (opts.max ?? 25); i++) {
    await page.keyboard.press(opts.back ? 'Shift+Tab' : 'Tab');
    const f = await focused(page);
    if (!f) continue;
    stops.push(f);
    assert.ok(f.ring, `no visible focus ring on ${f.name}`);
    if (want.test(f.name)) return stops;
  }
  assert.fail(`Tab never reached ${want}; the stops were: ${stops.map((s) => s.name).join(', ')}`);
}

/** Reading order: each stop is below the last, or on the same line further right. */
function assertReadingOrder(stops: Focus[]): void {
  for (let i = 1; i < stops.length; i++) {
    const [a, b] = [stops[i - 1]!, stops[i]!];
    const sameLine = Math.abs(a.top - b.top) < 16;
    assert.ok(sameLine ? b.left > a.left : b.top > a.top, `focus went from ${a.name} (${a.left},${a.top}) back to ${b.name} (${b.left},${b.top})`);
  }
}

for (const { name: browserName, skip } of testBrowsers()) describe(`accessibility in ${BROWSERS[browserName].label}`, { skip }, () => {
  let fixture: WebFixture;
  let t: TestBerth;
  let b: TestBrowser;
  let taskId = '';

  before(async () => {
    ({ t, b } = fixture = await startWebFixture(browserName));
  });
  after(() => fixture?.close());

  test('from the keyboard alone: sign in, start a task, reach its page, with focus always visible', async () => {
    const { context, page } = await b.context();
    await page.goto('/');
    await page.getByRole('heading', { name: 'Sign in to Berth' }).waitFor();
    // The token field comes first; Enter in it signs in.
    const signIn = await tabTo(page, /^input "API token"/, { max: 3 });
    assert.equal(signIn.length, 1, signIn.map((s) => s.name).join(', '));
    await page.keyboard.type(t.client.token);
    // The rest of the form in order, and back again.
    assertReadingOrder([...signIn, ...(await tabTo(page, /^button "Sign in"/, { max: 3 }))]);
    await tabTo(page, /^input "API token"/, { back: true, max: 3 });
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Tasks', level: 1 }).waitFor();

    // The page's content has the focus, so the next Tab is the first control in it.
    const toNew = await tabTo(page, /^a "New task"/, { max: 3 });
    assert.equal(toNew.length, 1, `from the page's start to New task: ${toNew.map((s) => s.name).join(', ')}`);
    // Going back walks the header in reverse reading order, to the skip link first on the page.
    const header = await tabTo(page, /^a "Skip to content"/, { back: true, max: 13 });
    assertReadingOrder(header.slice(0, -1).reverse());
    assert.deepEqual(header.filter((s) => s.name.startsWith('a ')).map((s) => s.name).slice(0, -1).reverse(), ['a "Berth"', 'a "Tasks"', 'a "Environments"', 'a "Snapshots"', 'a "Campaigns"', 'a "Audit log"', 'a "Settings"']);
    // The skip link jumps straight to the content: the next Tab is New task again.
    await page.keyboard.press('Enter');
    assert.equal((await tabTo(page, /^a "New task"/, { max: 3 })).length, 1);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'New task', level: 1 }).waitFor();
    // The project choice is offered once the projects are in (until then the repository radio is the checked one).
    await page.getByRole('radio', { name: 'A project', checked: true }).waitFor();

    // The form top to bottom: the repository (the project picked already), the goal, the budget, start.
    const form: Focus[] = [];
    form.push(...(await tabTo(page, /^textarea "Goal"/, { max: 5 })));
    await page.keyboard.type(GOAL);
    form.push(...(await tabTo(page, /^input "Max steps"/, { max: 5 })));
    await page.keyboard.type('20');
    form.push(...(await tabTo(page, /^button "Start task"/, { max: 5 })));
    assert.deepEqual(form.map((s) => s.name.split(' "')[1]!.replace(/"$/, '')), ['A project', 'Project', 'Goal', 'Agent', 'Model', 'Max steps', 'Max cost (USD)', 'Timeout', 'Start task']);
    // Each field's hint is read with it, as its description.
    const hint = await page.getByLabel('Max steps').evaluate((el) => document.getElementById(el.getAttribute('aria-describedby') ?? '')?.textContent);
    assert.equal(hint, 'Model round trips (default 50).');
    // Space presses a button, as Enter does.
    await page.keyboard.press('Space');
    await page.waitForURL(/\/tasks\/task_[0-9a-z]{12}$/);
    taskId = /task_[0-9a-z]{12}/.exec(page.url())![0];
    await page.getByRole('heading', { name: GOAL, level: 1 }).waitFor();
    // The task page's tabs: arrow keys move between them.
    await tabTo(page, /^button "Transcript/, { max: 12 });
    await page.keyboard.press('ArrowRight');
    assert.match((await focused(page))!.name, /^button "Diff"/);
    await page.getByRole('tabpanel', { name: 'Diff' }).waitFor();
    const task = (await t.api('GET', `/api/orgs/default/tasks/${taskId}`)).body;
    assert.equal(task.goal, GOAL);
    assert.equal(task.budget.maxSteps, 20);
    await context.close();
  });

  test('no serious or critical WCAG 2.1 A/AA violations on the main pages', async () => {
    assert.ok(taskId, 'the keyboard test made the task this one reads');
    // Every page is checked before any failure is reported, so one run shows them all.
    const found: string[] = [];
    // In both themes: the page as it is (light), then dark, the way the header's switch sets it.
    const assertAccessible = async (page: Page, what: string) => {
      for (const theme of ['light', 'dark']) {
        await page.evaluate((t) => (document.documentElement.dataset.theme = t), theme);
        found.push(...(await violations(page)).map((v) => `${what} (${theme}): ${v}`));
      }
      await page.evaluate(() => (document.documentElement.dataset.theme = 'light'));
    };
    // Signed out, and with the error a wrong token gets.
    const out = await b.context();
    await out.page.goto('/');
    await out.page.getByRole('heading', { name: 'Sign in to Berth' }).waitFor();
    await assertAccessible(out.page, 'sign-in');
    await typeInto(out.page.getByLabel('API token'), 'berth_wrong');
    await out.page.getByRole('button', { name: 'Sign in' }).click();
    await out.page.getByRole('alert').waitFor();
    await assertAccessible(out.page, 'sign-in with an error');
    await out.context.close();

    const { context, page } = await b.context({ token: t.client.token });
    await page.getByRole('link', { name: GOAL }).waitFor();
    await assertAccessible(page, 'tasks list');
    await page.getByRole('link', { name: 'New task' }).click();
    await page.getByLabel('Goal').waitFor();
    await assertAccessible(page, 'new task');

    // The task once it has run: transcript (one output open, the network denial on screen), then diff.
    await page.goto(`/tasks/${taskId}`);
    await page.locator('.facts .badge', { hasText: 'succeeded' }).waitFor({ timeout: 180_000 });
    const log = page.getByRole('log', { name: 'Transcript' });
    await log.getByRole('button', { name: /Show output/ }).last().click();
    await log.locator('.ev-detail').waitFor();
    await log.locator('.ev.tone-deny').first().scrollIntoViewIfNeeded().catch(() => undefined);
    await assertAccessible(page, 'task transcript');
    await page.getByRole('tab', { name: 'Diff' }).click();
    await page.locator('.diff td.src.add').first().waitFor();
    await assertAccessible(page, 'task diff');
    // A changed line says so in words (the +/- signs are hidden from screen readers).
    assert.match((await page.locator('.diff td.src.add').first().textContent()) ?? '', /^\+added: +return a \+ b;/);

    // An environment with its terminal open and a command's output in it.
    const env = await t.api('POST', '/api/orgs/default/environments', { name: 'a11y-term' });
    assert.equal(env.status, 201, JSON.stringify(env.body));
    await page.getByRole('link', { name: 'Environments' }).click();
    await page.getByRole('row', { name: /a11y-term/ }).getByText('running').waitFor({ timeout: 60_000 });
    await page.getByRole('button', { name: 'Open a terminal in a11y-term' }).click();
    await page.getByRole('status').filter({ hasText: 'connected' }).waitFor();
    await page.keyboard.type('echo hello-$((6*7))\n');
    await page.getByTestId('terminal').locator('.xterm-rows', { hasText: 'hello-42' }).waitFor();
    await assertAccessible(page, 'environments with a terminal');
    await page.getByRole('button', { name: 'Close terminal' }).click();

    // The environment's own page: details, use, files, network, with the form to make one on the list.
    // Loaded afresh, not by its link: Firefox over BiDi (playwright-core 1.65) may drop the
    // page's script context after a pushState, which axe's evaluate then runs into.
    await page.goto(`/environments/${env.body.id}`);
    await page.getByRole('heading', { name: 'a11y-term', level: 1 }).waitFor();
    await page.getByRole('region', { name: 'Files' }).getByRole('table').waitFor();
    await page.getByRole('region', { name: 'Network' }).getByText(/No network requests yet|most recent/).waitFor();
    // Firefox ESR 153's content process dies while axe-core walks this page's details list (the
    // tab closes: "Target page, context or browser has been closed"); Chromium checks it.
    if (browserName === 'chromium') await assertAccessible(page, 'environment page');
    await page.goto('/environments');
    await page.getByRole('button', { name: 'New environment' }).click();
    await page.getByRole('form', { name: 'New environment' }).waitFor();
    await assertAccessible(page, 'new environment form');

    await page.getByRole('link', { name: 'Snapshots' }).click();
    await page.getByRole('heading', { name: 'Snapshots', level: 1 }).waitFor();
    await assertAccessible(page, 'snapshots');

    await page.getByRole('link', { name: 'Campaigns' }).click();
    await page.getByRole('heading', { name: 'Campaigns', level: 1 }).waitFor();
    await page.getByText('No campaigns.').waitFor();
    await assertAccessible(page, 'campaigns');

    await page.getByRole('link', { name: 'Audit log' }).click();
    await page.getByText(/Chain verified/).waitFor();
    await page.getByRole('cell', { name: 'task.create' }).first().waitFor();
    await assertAccessible(page, 'audit log');

    await page.getByRole('link', { name: 'Settings' }).click();
    await page.getByRole('heading', { name: 'Network policies' }).waitFor();
    await page.getByText('healthy', { exact: true }).waitFor();
    await assertAccessible(page, 'settings');
    await context.close();
    await t.api('DELETE', `/api/orgs/default/environments/${env.body.id}`);
    assert.deepEqual(found, [], `${found.length} serious or critical accessibility violations:\n${found.join('\n')}`);
  });
});
