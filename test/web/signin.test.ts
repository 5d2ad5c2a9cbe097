// Signing in to the web UI through a real OpenID provider in real browsers (Chromium and
// Firefox): the button, the provider's login and consent pages, and back to Berth with the
// provider's groups as org roles; the org switcher offers exactly those orgs.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CLIENT_SECRET, freePort, startProvider, type TestProvider } from '../oidc-provider.ts';
import { startTestBerth, type TestBerth } from '../helpers.ts';
import { BROWSERS, ensureWebBuilt, launchBrowser, testBrowsers, type TestBrowser } from './browser.ts';

for (const { name: browserName, skip } of testBrowsers()) describe(`OIDC sign-in in ${BROWSERS[browserName].label}`, { skip }, () => {
  let t: TestBerth;
  let provider: TestProvider;
  let b: TestBrowser;
  before(async () => {
    ensureWebBuilt();
    const port = await freePort();
    // The provider sends the browser to the UI's page, which finishes the sign-in through the API.
    const redirectUri = `http://127.0.0.1:${port}/auth/oidc/callback`;
    provider = await startProvider({ redirectUri });
    t = await startTestBerth({
      port,
      oidc: {
        issuer: provider.issuer,
        clientId: 'berth',
        clientSecret: CLIENT_SECRET,
        redirectUri,
        allowHttp: true,
        name: 'Test IdP',
        groupRules: [
          { group: 'berth-admins', org: 'platform', role: 'admin' },
          { group: 'everyone', org: 'default', role: 'viewer' },
        ],
      },
    });
    b = await launchBrowser(t.client.url, browserName);
  });
  after(async () => {
    await b?.close();
    await t?.destroy();
    await provider?.close();
  });

  test('sign in with the identity provider; the org switcher shows only the caller\'s orgs and roles', async () => {
    const { context, page } = await b.context();
    // The page learns that a provider is configured from /api/auth/methods: nothing starts a sign-in until the button is pressed.
    const starts: string[] = [];
    page.on('request', (r) => void (new URL(r.url()).pathname === '/api/auth/oidc/start' && starts.push(r.url())));
    // What the page saw, for the failure message: the methods answers and the console.
    const seen: string[] = [];
    page.on('response', (r) => void (new URL(r.url()).pathname === '/api/auth/methods' && seen.push(`methods ${r.status()}`)));
    page.on('requestfailed', (r) => seen.push(`failed ${new URL(r.url()).pathname}: ${r.failure()?.errorText}`));
    page.on('console', (m) => void (m.type() === 'error' && seen.push(`console: ${m.text()}`)));
    await page.goto('/');
    const button = page.getByRole('link', { name: 'Sign in with Test IdP' });
    await button.waitFor().catch((err: Error) => assert.fail(`${err.message}\nthe page saw: ${seen.join('; ') || 'no answer from /api/auth/methods'}`));
    await page.getByRole('heading', { name: 'Or use an API token' }).waitFor();
    assert.deepEqual(starts, []);
    await button.click();
    // The provider's own pages (oidc-provider's development login and consent forms).
    await page.locator('input[name="login"]').fill('alice');
    await page.locator('input[name="password"]').fill('anything works in devInteractions');
    await page.locator('form button[type="submit"], form [type="submit"]').first().click();
    await page.locator('form [type="submit"]').first().click();
    await page.getByRole('heading', { name: 'Tasks', level: 1 }).waitFor();
    assert.match(page.url(), /\/tasks$/);
    const orgs = (await page.getByLabel('Org').locator('option').allTextContents()).sort();
    assert.deepEqual(orgs, ['default (viewer)', 'platform (admin)']);
    await page.getByText('alice@example.com').waitFor();
    // As a viewer of default: no new task. As an admin of platform: new task and the audit log.
    const current = await page.getByLabel('Org').inputValue();
    if (current !== 'default') await page.getByLabel('Org').selectOption('default');
    await page.getByRole('heading', { name: 'Tasks', level: 1 }).waitFor();
    assert.equal(await page.getByRole('link', { name: 'New task' }).count(), 0);
    await page.getByLabel('Org').selectOption('platform');
    await page.getByRole('link', { name: 'New task' }).waitFor();
    await page.getByRole('link', { name: 'Audit log' }).waitFor();
    await context.close();
  });

  test('a sign-in page reached without starting one says so and offers to start again', async () => {
    const { context, page } = await b.context();
    await page.goto('/auth/oidc/callback?state=forged&code=nothing');
    await page.getByRole('alert').filter({ hasText: /not started by this browser|start again/ }).waitFor();
    await page.getByRole('link', { name: 'Start again' }).waitFor();
    await context.close();
  });
});
