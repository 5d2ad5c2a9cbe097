// Snapshots and forks in the web UI, in real browsers (Chromium and Firefox): an environment's
// page takes a snapshot and forks (a count), environments made from one say so, and the
// Snapshots page lists them (from, size, kind, environments made), makes an environment from
// one, and removes one (refused, with the reason, while a project's prebuild uses it). Who
// may act sees the buttons; another member does not. Settings shows each project's
// current prebuild and whether each runner keeps snapshots.
// sandbox: none (test/fakes/fake-runner.ts; scripts/test.ts runs these more at once)
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { AxeResults } from 'axe-core';
import type { Page } from 'playwright-core';
import { TokenService } from '../../src/server/auth.ts';
import { newId } from '../../src/shared/ids.ts';
import { apiAs, REPO, startTestBerth, type TestBerth } from '../helpers.ts';
import { BROWSERS, ensureWebBuilt, launchBrowser, testBrowsers, typeInto, type TestBrowser } from './browser.ts';

let t: TestBerth;
let b: TestBrowser;
const tokens: Record<string, string> = {};
let orgId: string;
let projectId: string;

const AXE = readFileSync(join(REPO, 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');

/** Serious and critical WCAG 2.1 A/AA violations on the page as it is (as test/web/a11y.test.ts counts them). */
async function violations(page: Page): Promise<string[]> {
  if (!(await page.evaluate(() => 'axe' in window))) await page.evaluate(AXE);
  const options = { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] }, resultTypes: ['violations'] };
  const results = await page.evaluate((o) => (window as unknown as { axe: { run(ctx: Document, o: unknown): Promise<AxeResults> } }).axe.run(document, o), options);
  return results.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`);
}

const read = (envId: string, path: string) => readFileSync(t.fake!.hostPath(envId, path), 'utf8');

async function aliceEnv(name: string) {
  const made = await apiAs(t, tokens.alice!)('POST', '/api/orgs/default/environments', { name });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  const file = t.fake!.hostPath(made.body.id, '/workspace/app/README');
  mkdirSync(join(file, '..'), { recursive: true });
  writeFileSync(file, `made in ${name}\n`);
  return made.body as { id: string; name: string };
}

before(async () => {
  ensureWebBuilt();
  t = await startTestBerth({ fake: true, taskConcurrency: 0 });
  const made = new TokenService(t.berth.database.db);
  for (const name of ['alice', 'bob']) {
    const m = await t.api('PUT', `/api/orgs/default/members/${name}%40example.com`, { role: 'member' });
    assert.equal(m.status, 200, JSON.stringify(m.body));
    tokens[name] = (await made.create({ kind: 'user', userId: m.body.userId, name: `${name}'s sign-in` })).token;
  }
  orgId = (await t.api('GET', '/api/orgs')).body.items.find((o: { name: string }) => o.name === 'default').id;
  const p = await t.api('POST', '/api/orgs/default/projects', { name: 'shop', repoUrl: 'https://github.com/acme/shop.git' });
  assert.equal(p.status, 201, JSON.stringify(p.body));
  projectId = p.body.id;
});
after(async () => {
  await t?.destroy();
});

for (const { name: browser, skip } of testBrowsers()) describe(`snapshots in ${BROWSERS[browser].label}`, { skip }, () => {
  before(async () => {
    b = await launchBrowser(t.client.url, browser);
  });
  after(() => b?.close());

  test("an environment's page takes a snapshot and forks it three times; a fork says where it came from", async () => {
    const env = await aliceEnv(`page-${browser}`);
    const { context, page } = await b.context({ token: tokens.alice });
    await page.goto(`/environments/${env.id}`);
    await page.getByRole('heading', { name: env.name, level: 1 }).waitFor();

    await page.getByRole('button', { name: 'Snapshot', exact: true }).click();
    const snapForm = page.getByRole('form', { name: `Snapshot ${env.name}` });
    await typeInto(snapForm.getByLabel('Name'), `snap-${browser}`);
    assert.deepEqual(await violations(page), []);
    await snapForm.getByRole('button', { name: 'Take snapshot' }).click();
    await snapForm.getByRole('status').filter({ hasText: `Snapshot snap-${browser} made` }).waitFor();
    const snap = (await t.api('GET', `/api/orgs/default/snapshots/snap-${browser}`)).body;
    assert.equal(snap.state, 'ready');
    assert.equal(snap.environmentId, env.id);
    assert.equal(await snapForm.getByRole('link', { name: `snap-${browser}` }).getAttribute('href'), `/snapshots#snapshot-${snap.id}`);

    await page.getByRole('button', { name: 'Fork', exact: true }).click();
    const forkForm = page.getByRole('form', { name: `Fork ${env.name}` });
    await typeInto(forkForm.getByLabel('How many'), '3');
    await typeInto(forkForm.getByLabel('Their name'), `fk-${browser}`);
    await forkForm.getByRole('button', { name: 'Fork', exact: true }).click();
    const links = forkForm.getByRole('status').getByRole('listitem');
    await links.nth(2).waitFor();
    assert.deepEqual(await links.allInnerTexts(), [1, 2, 3].map((i) => `fk-${browser}-${i}`));
    const forks = (await t.api('GET', '/api/orgs/default/environments?limit=200')).body.items.filter((e: any) => e.name.startsWith(`fk-${browser}-`));
    assert.equal(forks.length, 3);
    for (const f of forks) assert.equal(read(f.id, '/workspace/app/README'), `made in ${env.name}\n`);

    // A fork's page names its snapshot, linked.
    await forkForm.getByRole('link', { name: `fk-${browser}-2` }).click();
    await page.getByRole('heading', { name: `fk-${browser}-2`, level: 1 }).waitFor();
    const details = page.getByRole('region', { name: 'Details' });
    const from = details.getByRole('link', { name: /^(snap|page)-/ });
    await from.waitFor();
    const fork = forks.find((f: any) => f.name === `fk-${browser}-2`);
    assert.equal(await from.getAttribute('href'), `/snapshots#snapshot-${fork.snapshotId}`);
    assert.match(await details.innerText(), /Made from\s+snapshot page-/);
    // …and so does the environments list.
    await page.goto('/environments');
    const row = page.getByRole('row', { name: new RegExp(`^fk-${browser}-1`) });
    await row.getByText('from snapshot').waitFor();
    await row.getByRole('link', { name: /^page-/ }).waitFor();
    await context.close();
  });

  test('the Snapshots page lists them, makes an environment from one, and removes one (refused while a prebuild uses it)', async () => {
    const env = await aliceEnv(`list-${browser}`);
    const snap = (await apiAs(t, tokens.alice!)('POST', `/api/orgs/default/environments/${env.id}/snapshot`, { name: `listed-${browser}` })).body;
    const { context, page } = await b.context({ token: tokens.alice });
    page.on('dialog', (d) => void d.accept());
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Snapshots' }).click();
    await page.getByRole('heading', { name: 'Snapshots', level: 1 }).waitFor();
    const row = page.locator(`tr#snapshot-${snap.id}`);
    await row.waitFor();
    const cells = await row.locator('td').allInnerTexts();
    assert.equal(cells[0], 'snapshot');
    assert.match(cells[1]!, /ready/);
    assert.equal(cells[2], env.name);
    assert.match(cells[3]!, /\d+(\.\d+)? ?[KMG]?i?B|\d+ B/);
    assert.equal(cells[4], '0');
    assert.equal(await row.getByRole('link', { name: env.name }).getAttribute('href'), `/environments/${env.id}`);
    assert.deepEqual(await violations(page), []);

    // An environment from it: its files, its own name and memory.
    await row.getByRole('button', { name: `Create environment from listed-${browser}` }).click();
    const form = page.getByRole('form', { name: `New environment from listed-${browser}` });
    await typeInto(form.getByLabel('Name'), `from-${browser}`);
    await typeInto(form.getByLabel('Memory'), '512m');
    await form.getByRole('button', { name: 'Create environment' }).click();
    await page.waitForURL(/\/environments\/env_[0-9a-z]+$/);
    const id = /env_[0-9a-z]+$/.exec(page.url())![0];
    await page.getByRole('heading', { name: `from-${browser}`, level: 1 }).waitFor();
    await page.getByRole('region', { name: 'Details' }).getByRole('link', { name: `listed-${browser}` }).waitFor();
    const made = (await t.api('GET', `/api/orgs/default/environments/${id}`)).body;
    assert.equal(made.snapshotId, snap.id);
    assert.equal(made.limits.memoryBytes, 512 * 1024 ** 2);
    assert.equal(read(id, '/workspace/app/README'), `made in ${env.name}\n`);

    // Another member sees it, without the buttons (the API refuses them too: test/snapshots.test.ts).
    const other = await b.context({ token: tokens.bob });
    await other.page.goto('/snapshots');
    const theirs = other.page.locator(`tr#snapshot-${snap.id}`);
    await theirs.waitFor();
    assert.equal(await theirs.getByRole('button').count(), 0);
    await other.context.close();

    // In use as the project's current prebuild: refused, saying so; the row stays.
    await t.berth.database.db.insertInto('prebuilds').values({ id: newId('pb'), org_id: orgId, project_id: projectId, state: 'ready', trigger: 'manual', snapshot_id: snap.id, runner_id: snap.runnerId, created_by: 'system' } as never).execute();
    const shown = (await t.api('GET', `/api/orgs/default/snapshots/${snap.id}`)).body;
    assert.deepEqual(shown.inUseBy, ["project shop's current prebuild"], JSON.stringify({ shown, prebuilds: await t.berth.database.db.selectFrom('prebuilds').selectAll().execute() }));
    await page.goto('/snapshots');
    await row.getByText("in use: project shop's current prebuild").waitFor();
    await row.getByRole('button', { name: `Remove snapshot listed-${browser}` }).click();
    await page.getByRole('alert').filter({ hasText: "project shop's current prebuild" }).waitFor();
    assert.equal((await t.api('GET', `/api/orgs/default/snapshots/${snap.id}`)).status, 200);
    await t.berth.database.db.deleteFrom('prebuilds').where('snapshot_id', '=', snap.id).execute();

    // Free again: removed; the environment made from it keeps its files.
    await page.goto('/snapshots');
    await row.waitFor();
    assert.equal(await row.getByText('in use').count(), 0);
    await row.getByRole('button', { name: `Remove snapshot listed-${browser}` }).click();
    await row.waitFor({ state: 'detached' });
    assert.equal((await t.api('GET', `/api/orgs/default/snapshots/${snap.id}`)).status, 404);
    assert.equal(read(id, '/workspace/app/README'), `made in ${env.name}\n`);
    // Its environment now names it by id, removed.
    await page.goto(`/environments/${id}`);
    await page.getByRole('region', { name: 'Details' }).getByText('(removed)').waitFor();
    await context.close();
  });

  test("Settings shows each project's current prebuild (its commit, its snapshot) and whether each runner keeps snapshots", async () => {
    const env = await aliceEnv(`pre-${browser}`);
    const snap = (await t.api('POST', `/api/orgs/default/environments/${env.id}/snapshot`, { name: `pre-${browser}` })).body;
    const commit = browser === 'chromium' ? 'c0ffee1234567890c0ffee1234567890c0ffee12' : 'f1ef0c1234567890f1ef0c1234567890f1ef0c12';
    await t.berth.database.db.updateTable('snapshots').set({ kind: 'prebuild', project_id: projectId }).where('id', '=', snap.id).execute();
    await t.berth.database.db.insertInto('prebuilds').values({ id: newId('pb'), org_id: orgId, project_id: projectId, state: 'ready', trigger: 'manual', commit_sha: commit, snapshot_id: snap.id, runner_id: snap.runnerId, created_by: 'system', finished_at: new Date() } as never).execute();
    const { context, page } = await b.context({ token: t.client.token });
    await page.goto('/settings');
    const row = page.getByRole('row', { name: /^shop / });
    await row.getByText(commit.slice(0, 7)).waitFor();
    await row.locator('.prebuild .badge', { hasText: 'ready' }).waitFor();
    assert.equal(await row.getByRole('link', { name: snap.id }).getAttribute('href'), `/snapshots#snapshot-${snap.id}`);
    await row.getByRole('button', { name: 'Prebuild project shop' }).waitFor();
    await page.getByText('snapshots yes').first().waitFor();
    assert.deepEqual(await violations(page), []);
    await context.close();
  });
});
