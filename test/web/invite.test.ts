// The invite page in real browsers (Chromium and Firefox): a member added by email opens the
// one-time link, accepts it, sees their token once and lands in Berth signed in; the same link
// a second time, or one that expired, says so. The sign-in page says what really gives a token.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startTestBerth, type TestBerth } from '../helpers.ts';
import { BROWSERS, ensureWebBuilt, launchBrowser, testBrowsers, type TestBrowser } from './browser.ts';

for (const { name: browserName, skip } of testBrowsers()) describe(`invite links in ${BROWSERS[browserName].label}`, { skip }, () => {
  let t: TestBerth;
  let b: TestBrowser;
  before(async () => {
    ensureWebBuilt();
    t = await startTestBerth();
    b = await launchBrowser(t.client.url, browserName);
  });
  after(async () => {
    await b?.close();
    await t?.destroy();
  });

  const invite = async (email: string, role = 'member') => {
    await t.api('PUT', `/api/orgs/default/members/${email}`, { role });
    const res = await t.api('POST', `/api/orgs/default/members/${email}/invite`, {});
    assert.equal(res.status, 201, JSON.stringify(res.body));
    return new URL(res.body.url as string);
  };

  test('a member opens the link, accepts it, sees their token once and is signed in; the link then works no more', async () => {
    const link = await invite(`carol-${browserName}@example.com`);
    const { context, page } = await b.context();
    await page.goto(`${link.pathname}${link.hash}`);
    await page.getByRole('heading', { name: 'You are invited to Berth' }).waitFor();
    await page.getByRole('button', { name: 'Accept invite' }).click();
    await page.getByRole('status').filter({ hasText: `carol-${browserName}@example.com` }).waitFor();
    const token = await page.getByLabel('Your API token, shown only now').inputValue();
    assert.match(token, /^berth_/);
    // The spent code is gone from the address bar.
    assert.equal(new URL(page.url()).hash, '');
    await page.getByRole('button', { name: 'Continue to Berth' }).click();
    await page.getByRole('heading', { name: 'Tasks', level: 1 }).waitFor();
    assert.deepEqual(await page.getByLabel('Org').locator('option').allTextContents(), ['default (member)']);
    const me = await fetch(`${t.client.url}/api/me`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(((await me.json()) as { email: string }).email, `carol-${browserName}@example.com`);

    // The same link again, in another browser session.
    const second = await b.context();
    await second.page.goto(`${link.pathname}${link.hash}`);
    await second.page.getByRole('button', { name: 'Accept invite' }).click();
    await second.page.getByRole('alert').filter({ hasText: 'already used' }).waitFor();
    assert.equal(await second.page.getByLabel('Your API token, shown only now').count(), 0);
    await second.context.close();
    await context.close();
  });

  test('an expired link and a link without its code say what to do; the sign-in page names what gives a token', async () => {
    const link = await invite(`dave-${browserName}@example.com`);
    await t.berth.database.db.updateTable('invites').set({ expires_at: new Date(Date.now() - 1000) }).where('used_at', 'is', null).execute();
    const { context, page } = await b.context();
    await page.goto(`${link.pathname}${link.hash}`);
    await page.getByRole('button', { name: 'Accept invite' }).click();
    await page.getByRole('alert').filter({ hasText: /has expired.*ask an admin for a new one/ }).waitFor();
    await page.goto('/invite');
    await page.getByRole('alert').filter({ hasText: 'has no code' }).waitFor();

    await page.goto('/');
    const help = page.locator('#token-help');
    await help.waitFor();
    const text = await help.textContent();
    assert.match(text ?? '', /berth login --print-token/);
    assert.doesNotMatch(text ?? '', /berth up prints one/);
    await context.close();
  });
});
