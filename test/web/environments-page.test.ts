// An environment's own page in real browsers against a real berth (a real sandbox): made
// with the New environment button, it shows its details and use, its files (a folder at a
// time, each file downloadable, a file holding a secret refused), its network log with the
// refusals, a terminal, and stop, start and delete.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Page } from 'playwright-core';
import { startTestBerth, type TestBerth } from '../helpers.ts';
import { BROWSERS, ensureWebBuilt, launchBrowser, testBrowsers, typeInto, type TestBrowser } from './browser.ts';

const SECRET = 'page-secret-value-0123456789';

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

for (const { name: browserName, skip } of testBrowsers()) describe(`an environment's page in ${BROWSERS[browserName].label}`, { skip }, () => {
  let t: TestBerth;
  let b: TestBrowser;

  before(async () => {
    ensureWebBuilt();
    t = await startTestBerth();
    assert.equal((await t.api('POST', '/api/orgs/default/projects', { name: 'envproj', repoUrl: 'https://github.com/acme/envproj.git' })).status, 201);
    assert.equal((await t.api('PUT', '/api/orgs/default/secrets/PAGE_SECRET', { value: SECRET, project: 'envproj' })).status, 200);
    b = await launchBrowser(t.client.url, browserName);
  });
  after(async () => {
    await b?.close();
    await t?.destroy();
  });

  test('New environment makes one and opens its page: details, use, files with download, network refusals, terminal, stop, start, delete', async () => {
    const { context, page } = await b.context({ token: t.client.token });
    await page.getByRole('link', { name: 'Environments' }).click();
    await page.getByRole('button', { name: 'New environment' }).click();
    const form = page.getByRole('form', { name: 'New environment' });
    await typeInto(form.getByLabel('Name'), 'page-env');
    await form.getByLabel('Project').selectOption('envproj');
    await typeInto(form.getByLabel('Memory'), '512m');
    await form.getByRole('button', { name: 'Create environment' }).click();
    await page.waitForURL(/\/environments\/env_[0-9a-z]+$/, { timeout: 120_000 });
    const id = /env_[0-9a-z]+$/.exec(page.url())![0];
    await page.getByRole('heading', { name: 'page-env', level: 1 }).waitFor();
    await page.locator('.page-head .badge', { hasText: 'running' }).waitFor({ timeout: 60_000 });
    const env = (await t.api('GET', `/api/orgs/default/environments/${id}`)).body;
    assert.equal(env.limits.memoryBytes, 512 * 1024 * 1024);

    // Details and use.
    const details = page.getByRole('region', { name: 'Details' });
    await details.getByText(id, { exact: true }).waitFor();
    await details.getByText(env.image).first().waitFor();
    const usage = page.getByRole('region', { name: 'Usage' });
    await usage.getByText('of 512 MiB').waitFor();

    // Files: made inside, listed a folder at a time, downloaded as themselves.
    const made = await t.api('POST', `/api/orgs/default/environments/${id}/exec`, { cmd: ['sh', '-c', 'mkdir -p /workspace/sub && echo hello-file > /workspace/sub/hello.txt && printf %s "$PAGE_SECRET" > /workspace/leak.txt'] });
    assert.equal(made.body.exitCode, 0, JSON.stringify(made.body));
    const files = page.getByRole('region', { name: 'Files' });
    await files.getByRole('button', { name: 'Open' }).click();
    await files.getByRole('button', { name: 'Open folder sub' }).click();
    await files.getByRole('rowheader', { name: 'hello.txt' }).waitFor();
    assert.equal(await files.getByRole('textbox', { name: 'Folder' }).inputValue(), '/workspace/sub');
    const saved = await captureDownloads(page);
    await files.getByRole('button', { name: 'Download hello.txt' }).click();
    for (let i = 0; (await saved()).length === 0; i++) {
      if (i > 100) assert.fail('nothing was downloaded');
      await page.waitForTimeout(100);
    }
    assert.deepEqual(await saved(), ['hello-file\n']);
    // A file holding one of the environment's secrets does not leave it.
    await files.getByRole('button', { name: 'Up one folder' }).click();
    await files.getByRole('button', { name: 'Download leak.txt' }).click();
    await files.getByRole('alert').filter({ hasText: 'PAGE_SECRET' }).waitFor();
    assert.ok(!(await page.content()).includes(SECRET));
    assert.equal((await saved()).length, 1);
    // The listing and the refusal are on record.
    const audit = (await t.api('GET', `/api/orgs/default/audit?environment=${id}&limit=200`)).body.items as { action: string; details: Record<string, unknown> }[];
    assert.ok(audit.some((e) => e.action === 'folder.listed' && e.details.path === '/workspace/sub'), audit.map((e) => e.action).join(' '));
    assert.ok(audit.some((e) => e.action === 'file.copy_refused' && e.details.path === '/workspace/leak.txt'));

    // A request the egress policy refuses shows in the network log, marked.
    const curl = await t.api('POST', `/api/orgs/default/environments/${id}/exec`, { cmd: ['sh', '-c', 'curl -sS -m 10 https://example.com/ || true'] });
    assert.equal(curl.status, 200);
    const network = page.getByRole('region', { name: 'Network' });
    await network.getByLabel('Only refused requests').check();
    const refused = network.getByRole('row', { name: /example\.com:443/ }).first();
    await refused.waitFor({ timeout: 30_000 });
    await refused.getByText('refused').waitFor();

    // A terminal on the page.
    await page.getByRole('button', { name: 'Open terminal' }).click();
    await page.getByRole('status').filter({ hasText: 'connected' }).waitFor();
    await page.getByTestId('terminal').click();
    await page.keyboard.type('echo page-$((6*7))\n');
    await page.getByTestId('terminal').locator('.xterm-rows', { hasText: 'page-42' }).waitFor();
    await page.getByRole('button', { name: 'Close terminal' }).first().click();

    // Stop, start, delete.
    await page.getByRole('button', { name: 'Stop', exact: true }).click();
    await page.locator('.page-head .badge', { hasText: 'stopped' }).waitFor({ timeout: 60_000 });
    assert.equal(await files.count(), 0, 'no file browser while it is stopped');
    await page.getByRole('button', { name: 'Start', exact: true }).click();
    await page.locator('.page-head .badge', { hasText: 'running' }).waitFor({ timeout: 60_000 });
    page.once('dialog', (d) => void d.accept());
    await page.getByRole('button', { name: 'Delete', exact: true }).click();
    await page.waitForURL(/\/environments$/);
    assert.equal((await t.api('GET', `/api/orgs/default/environments/${id}`)).body.state, 'deleted');
    await context.close();
  });

  test('the list links each environment to its page; an unknown one says so', async () => {
    const made = await t.api('POST', '/api/orgs/default/environments', { name: 'linked-env' });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const { context, page } = await b.context({ token: t.client.token });
    await page.goto('/environments');
    await page.getByRole('link', { name: 'linked-env' }).click();
    await page.waitForURL(new RegExp(`/environments/${made.body.id}$`));
    await page.getByRole('heading', { name: 'linked-env', level: 1 }).waitFor();
    await page.goto('/environments/env_000000000000');
    await page.getByRole('heading', { name: 'No such environment' }).waitFor();
    await context.close();
    await t.api('DELETE', `/api/orgs/default/environments/${made.body.id}`);
  });
});
