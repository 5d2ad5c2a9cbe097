// Settings › Models in a real Chromium and a real Firefox: an admin sets the org's model and a
// project's, and sees each in its row (a project without its own shows the org's); a bad key
// secret is refused with the server's message; a viewer sees the settings but no form.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startTestBerth, type TestBerth } from '../helpers.ts';
import { BROWSERS, ensureWebBuilt, launchBrowser, testBrowsers, typeInto, type TestBrowser } from './browser.ts';

const ORG_KEY = 'sk-web-org-key-0123456789abcdef';

for (const { name: browserName, skip } of testBrowsers()) describe(`Settings › Models in ${BROWSERS[browserName].label}`, { skip }, () => {
  let t: TestBerth;
  let b: TestBrowser;

  before(async () => {
    ensureWebBuilt();
    t = await startTestBerth({ modelEnv: { BERTH_MODEL: 'gpt-4o-mini', OPENAI_BASE_URL: 'http://127.0.0.1:9/v1' } });
    assert.equal((await t.api('PUT', '/api/orgs/default/secrets/ORG_MODEL_KEY', { value: ORG_KEY })).status, 200);
    for (const name of ['web-a', 'web-b']) {
      const p = await t.api('POST', '/api/orgs/default/projects', { name, repoUrl: mkdtempSync(join(tmpdir(), 'berth-web-model-')) });
      assert.equal(p.status, 201, JSON.stringify(p.body));
    }
    b = await launchBrowser(t.client.url, browserName);
  });
  after(async () => {
    await b?.close();
    await t?.destroy();
  });

  test("an admin sets the org's model and a project's, and sees each in its row", async () => {
    const { context, page } = await b.context({ token: t.client.token });
    await page.goto('/settings#models');
    const section = page.getByRole('region', { name: 'Models' });
    const orgRow = section.getByRole('row', { name: /^Org/ });
    const rowA = section.getByRole('row', { name: /^Project web-a/ });
    const rowB = section.getByRole('row', { name: /^Project web-b/ });
    await orgRow.getByText('instance default: gpt-4o-mini (openai)').waitFor();
    await rowA.getByText('instance default: gpt-4o-mini').waitFor();

    const form = section.getByRole('form', { name: 'Set a model' });
    const fill = async (o: { scope: string; provider: string; baseUrl: string; keySecret: string; model: string }) => {
      await form.getByLabel('For').selectOption(o.scope);
      await form.getByLabel('Provider').selectOption(o.provider);
      await typeInto(form.getByLabel('Base URL'), o.baseUrl);
      await typeInto(form.getByLabel('Key secret'), o.keySecret);
      await typeInto(form.getByLabel('Model'), o.model);
      await form.getByRole('button', { name: 'Save model' }).click();
    };

    // A key secret that does not exist: the server's message, and nothing set.
    await fill({ scope: ':org', provider: 'anthropic', baseUrl: 'http://127.0.0.1:9', keySecret: 'NO_SUCH_KEY', model: 'claude-web-model' });
    await section.getByRole('alert').filter({ hasText: "no secret 'NO_SUCH_KEY' in the org" }).waitFor();
    assert.deepEqual((await t.api('GET', '/api/orgs/default/models')).body.items, []);

    await fill({ scope: ':org', provider: 'anthropic', baseUrl: 'http://127.0.0.1:9', keySecret: 'ORG_MODEL_KEY', model: 'claude-web-model' });
    await orgRow.getByRole('cell', { name: 'claude-web-model', exact: true }).waitFor();
    await orgRow.getByRole('cell', { name: 'anthropic', exact: true }).waitFor();
    await orgRow.getByRole('cell', { name: 'ORG_MODEL_KEY', exact: true }).waitFor();
    await rowA.getByText("the org's: claude-web-model").waitFor();
    assert.equal(await section.getByRole('alert').count(), 0);

    await fill({ scope: 'web-b', provider: 'openai', baseUrl: 'http://127.0.0.1:9/v1', keySecret: 'ORG_MODEL_KEY', model: 'gpt-web-b' });
    await rowB.getByRole('cell', { name: 'gpt-web-b', exact: true }).waitFor();
    await rowB.getByRole('cell', { name: 'openai', exact: true }).waitFor();
    await rowA.getByText("the org's: claude-web-model").waitFor();

    const { items } = (await t.api('GET', '/api/orgs/default/models')).body as { items: { project: string | null; provider: string; model: string; keySecret: string }[] };
    assert.deepEqual(items.map((m) => [m.project, m.provider, m.model, m.keySecret]), [[null, 'anthropic', 'claude-web-model', 'ORG_MODEL_KEY'], ['web-b', 'openai', 'gpt-web-b', 'ORG_MODEL_KEY']]);
    assert.ok(!(await page.content()).includes(ORG_KEY), 'the key itself is never on the page');

    // Removing the project's falls back to the org's.
    page.once('dialog', (d) => void d.accept());
    await rowB.getByRole('button', { name: 'Remove the model of Project web-b' }).click();
    await rowB.getByText("the org's: claude-web-model").waitFor();
    await context.close();
  });

  test('a viewer sees the settings but cannot change them', async () => {
    const viewer = (await t.api('POST', '/api/orgs/default/tokens', { role: 'viewer', name: `viewer-${browserName}` })).body.token as string;
    const { context, page } = await b.context({ token: viewer });
    await page.goto('/settings#models');
    const section = page.getByRole('region', { name: 'Models' });
    await section.getByRole('row', { name: /^Org/ }).getByRole('cell', { name: 'claude-web-model', exact: true }).waitFor();
    assert.equal(await section.getByRole('form', { name: 'Set a model' }).count(), 0);
    assert.equal(await section.getByRole('button', { name: /^Remove/ }).count(), 0);
    await context.close();
  });
});
