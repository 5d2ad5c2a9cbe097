// A real Chromium for the web UI's tests and its benchmark (Debian's package, driven by
// playwright-core), and the UI built once if web/dist is missing.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { REPO } from '../helpers.ts';

export const CHROMIUM = process.env.BERTH_CHROMIUM ?? '/usr/bin/chromium';
export const SCREENSHOTS = join(REPO, 'docs', 'screenshots');

/** `npm test` builds the UI first; a single test file run by hand builds it here if needed. */
export function ensureWebBuilt(): void {
  if (existsSync(join(REPO, 'web', 'dist', 'index.html'))) return;
  const r = spawnSync(process.execPath, [join(REPO, 'node_modules', 'vite', 'bin', 'vite.js'), 'build', '--config', join(REPO, 'web', 'vite.config.ts'), '--logLevel', 'warn'], { cwd: REPO, stdio: 'inherit' });
  if (r.status !== 0) throw new Error('building the web UI failed');
}

export interface TestBrowser {
  browser: Browser;
  /** A fresh context (its own storage), signed in with the token when one is given. */
  context(opts?: { token?: string; viewport?: { width: number; height: number } }): Promise<{ context: BrowserContext; page: Page }>;
  close(): Promise<void>;
}

export async function launchBrowser(baseUrl: string): Promise<TestBrowser> {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (scripts/setup.sh --deps --test does)`);
  // launch() gives Chromium a fresh temporary profile each time, and each test a fresh context.
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-quic', '--disable-sync'],
  });
  return {
    browser,
    async context(opts = {}) {
      const context = await browser.newContext({ baseURL: baseUrl, viewport: opts.viewport ?? { width: 1360, height: 860 } });
      const page = await context.newPage();
      if (opts.token) await signIn(page, opts.token);
      return { context, page };
    },
    async close() {
      await browser.close();
    },
  };
}

/** Signs in the way a person does: paste the token, press the button. */
export async function signIn(page: Page, token: string): Promise<void> {
  await page.goto('/');
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Tasks', level: 1 }).waitFor();
}
