// Real browsers for the web UI's tests and its benchmark: Debian's Chromium (over CDP) and
// Debian's Firefox ESR (over WebDriver BiDi), both driven by playwright-core, and the UI
// built once if web/dist is missing.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import playwright, { chromium, firefox, type Browser, type BrowserContext, type Locator, type Page } from 'playwright-core';
import { REPO } from '../helpers.ts';
import { ON_POSTGRES } from '../postgres.ts';

export const SCREENSHOTS = join(REPO, 'docs', 'screenshots');

export type BrowserName = 'chromium' | 'firefox';

/** Where each browser is (Debian's packages; scripts/setup.sh --test installs both). */
export const BROWSERS: Record<BrowserName, { label: string; executable: string; package: string }> = {
  chromium: { label: 'Chromium', executable: process.env.BERTH_CHROMIUM ?? '/usr/bin/chromium', package: 'chromium' },
  firefox: { label: 'Firefox', executable: process.env.BERTH_FIREFOX ?? '/usr/bin/firefox-esr', package: 'firefox-esr' },
};

/**
 * The browsers a web test runs in, each with a reason to skip it when it is not installed.
 * In CI (CI set) nothing is skipped: a missing browser fails its tests instead.
 * On the PostgreSQL pass only Chromium: what differs between browsers does not depend on the
 * database, and the embedded pass runs both (BERTH_TEST_ALL_BROWSERS=1 runs both there too).
 */
export function testBrowsers(): { name: BrowserName; skip: string | false }[] {
  const chromiumOnly = ON_POSTGRES && process.env.BERTH_TEST_ALL_BROWSERS !== '1';
  return (Object.keys(BROWSERS) as BrowserName[]).map((name) => {
    const { executable, package: pkg } = BROWSERS[name];
    if (chromiumOnly && name !== 'chromium') return { name, skip: `${BROWSERS[name].label} runs on the embedded pass only (BERTH_TEST_ALL_BROWSERS=1 runs it on PostgreSQL too)` };
    const missing = !process.env.CI && !existsSync(executable);
    return { name, skip: missing ? `no ${executable} (apt-get install -y ${pkg}; required in CI)` : false };
  });
}

/** `npm test` builds the UI first; a single test file run by hand builds it here if needed. */
export function ensureWebBuilt(): void {
  if (existsSync(join(REPO, 'web', 'dist', 'index.html'))) return;
  const r = spawnSync(process.execPath, [join(REPO, 'node_modules', 'vite', 'bin', 'vite.js'), 'build', '--config', join(REPO, 'web', 'vite.config.ts'), '--logLevel', 'warn'], { cwd: REPO, stdio: 'inherit' });
  if (r.status !== 0) throw new Error('building the web UI failed');
}

export interface TestBrowser {
  browser: Browser;
  /** A fresh context (its own storage), signed in with the token when one is given. */
  context(opts?: { token?: string; viewport?: { width: number; height: number }; colorScheme?: 'dark' }): Promise<{ context: BrowserContext; page: Page }>;
  /** Lets the page read and write the clipboard without asking (Firefox allows it by a preference set at launch). */
  allowClipboard(context: BrowserContext): Promise<void>;
  close(): Promise<void>;
}

/**
 * @param opts.colorScheme 'dark': the system prefers dark. Chromium takes it per context
 *   (`context({ colorScheme })`); Firefox only for the whole browser, from launch.
 */
export async function launchBrowser(baseUrl: string, name: BrowserName = 'chromium', opts: { colorScheme?: 'dark' } = {}): Promise<TestBrowser> {
  const { label, executable, package: pkg } = BROWSERS[name];
  if (!existsSync(executable)) throw new Error(`no ${label} at ${executable}: apt-get install -y ${pkg} (scripts/setup.sh --deps --test does)`);
  // launch() gives the browser a fresh temporary profile each time, and each test a fresh context.
  const browser = name === 'chromium' ? await launchChromium(executable) : await launchFirefox(executable, opts.colorScheme === 'dark');
  return {
    browser,
    async context(opts = {}) {
      const context = await browser.newContext({
        baseURL: baseUrl,
        viewport: opts.viewport ?? { width: 1360, height: 860 },
        // Firefox over BiDi cannot emulate it (see launchFirefox): there it comes from launch.
        ...(name === 'chromium' && opts.colorScheme && { colorScheme: opts.colorScheme }),
      });
      const page = await context.newPage();
      if (opts.token) await signIn(page, opts.token);
      return { context, page };
    },
    async allowClipboard(context) {
      if (name === 'chromium') await context.grantPermissions(['clipboard-read', 'clipboard-write']);
    },
    async close() {
      await browser.close();
    },
  };
}

function launchChromium(executablePath: string): Promise<Browser> {
  return chromium.launch({
    executablePath,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-quic', '--disable-sync'],
  });
}

/**
 * Firefox through playwright-core's WebDriver BiDi launcher (a `moz-*` channel picks it).
 * playwright-core 1.65 sets `prefers-color-scheme` on every new context with
 * `emulation.setMediaFeaturesOverride`, which Firefox 153 ESR does not implement ("unknown
 * command"), so no context could open. The tests never emulate a colour scheme: when that
 * command is refused while it asks for no override, it is taken as done.
 */
async function launchFirefox(executablePath: string, dark = false): Promise<Browser> {
  const browser = await firefox.launch({
    channel: 'moz-firefox',
    executablePath,
    headless: true,
    // Firefox's own switch for automation: the async clipboard API without its paste prompt.
    firefoxUserPrefs: {
      'dom.events.testing.asyncClipboard': true,
      // A dark system, for the dark-mode tests: pages see prefers-color-scheme: dark (0 is dark).
      ...(dark && { 'ui.systemUsesDarkTheme': 1, 'layout.css.prefers-color-scheme.content-override': 0 }),
    },
  });
  type Session = { send(method: string, params: unknown): Promise<unknown> };
  const connection = (playwright as unknown as { _connection?: { toImpl?: (o: unknown) => { _browserSession?: Session } | undefined } })._connection;
  const session = connection?.toImpl?.(browser)?._browserSession;
  if (!session) {
    await browser.close();
    throw new Error('playwright-core changed: its BiDi browser session is not where test/web/browser.ts looks for it');
  }
  const send = session.send.bind(session);
  session.send = async (method, params) => {
    try {
      return await send(method, params);
    } catch (err) {
      const features = (params as { features?: Record<string, unknown> }).features ?? {};
      const noOverride = Object.values(features).every((v) => v === null || v === undefined);
      if (method === 'emulation.setMediaFeaturesOverride' && noOverride && /unknown command/.test(String(err))) return {};
      throw err;
    }
  };
  return browser;
}

/**
 * Replaces a field's text by typing it, key by key. Not locator.fill(): over WebDriver BiDi,
 * playwright-core fills a field by setting its `value` from script and sending a synthetic
 * `input` event, which React takes for an echo of its own write and ignores (facebook/react
 * #10135), so a controlled field keeps its old state. Typing is what a person does anyway.
 */
export async function typeInto(field: Locator, text: string): Promise<void> {
  await field.selectText();
  if (text) await field.pressSequentially(text);
  else await field.press('Delete');
}

/** Signs in the way a person does: paste the token, press the button. */
export async function signIn(page: Page, token: string): Promise<void> {
  await page.goto('/');
  const field = page.getByLabel('API token');
  await field.waitFor().catch(async (err: Error) => {
    // Say what the browser shows instead.
    const shown = await page.evaluate(() => `${document.readyState}: ${document.body?.innerText.slice(0, 300)}`).catch((e: Error) => e.message);
    throw new Error(`no sign-in form at ${page.url()} (${shown}): ${err.message}`);
  });
  await typeInto(field, token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Tasks', level: 1 }).waitFor();
}
