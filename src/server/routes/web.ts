import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { extname, join, normalize, sep } from 'node:path';
import { gzipSync } from 'node:zlib';
import { notFound } from '../../shared/errors.ts';
import { isWebPage } from '../../shared/web-routes.ts';
import type { App } from '../app.ts';

const DEFAULT_DIR = new URL('../../../web/dist', import.meta.url).pathname;

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
};
const COMPRESSIBLE = new Set(['.html', '.js', '.css', '.json', '.svg', '.txt']);

// The UI reads the token from browser storage and sends it itself: the page may not be
// framed (clickjacking), and scripts come only from this origin. xterm.js and React write
// inline styles, hence 'unsafe-inline' for styles alone.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const NOT_BUILT = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Berth: web UI not built</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#1b1f24}code{background:#eef1f4;padding:.1rem .3rem;border-radius:3px}</style></head>
<body><main><h1>The web UI has not been built</h1>
<p>This control plane is running and its API works (see <a href="/openapi.json">/openapi.json</a> and <a href="/health">/health</a>),
but the browser interface was never built on this machine.</p>
<p>Build it with <code>npm run build:web</code> in the Berth checkout (or run <code>scripts/setup.sh</code>), then reload this page.</p>
</main></body></html>`;

interface Cached {
  body: Buffer;
  gzip: Buffer | undefined;
  type: string;
  mtimeMs: number;
}

/**
 * The web UI: the files `vite build` wrote to web/dist. Hashed assets are cached for a
 * year; the UI's own pages (src/shared/web-routes.ts) get index.html, so the browser's
 * router resolves deep links (/tasks/task_…); every other path is a JSON 404, never the
 * UI's HTML. The UI itself is public; its API calls carry the token.
 */
export function webRoutes(app: App, opts: { dir?: string } = {}): void {
  const dir = normalize(opts.dir ?? process.env.BERTH_WEB_DIR ?? DEFAULT_DIR);
  const cache = new Map<string, Cached>();

  const load = async (file: string): Promise<Cached | undefined> => {
    let info;
    try {
      info = await stat(file);
    } catch {
      return undefined;
    }
    if (!info.isFile()) return undefined;
    const hit = cache.get(file);
    if (hit && hit.mtimeMs === info.mtimeMs) return hit;
    const body = await readFile(file);
    const ext = extname(file);
    const entry: Cached = {
      body,
      gzip: COMPRESSIBLE.has(ext) && body.length > 1024 ? gzipSync(body, { level: 9 }) : undefined,
      type: TYPES[ext] ?? 'application/octet-stream',
      mtimeMs: info.mtimeMs,
    };
    cache.set(file, entry);
    return entry;
  };

  app.get('/*', { schema: { hide: true }, config: { rateLimit: false } }, async (req, reply) => {
    let path: string;
    try {
      path = decodeURIComponent(req.url.split('?')[0]!);
    } catch {
      throw notFound(`no page ${req.url.split('?')[0]}`);
    }
    // An unknown API path is an API error, not the UI.
    if (path === '/api' || path.startsWith('/api/')) throw notFound(`no route ${req.method} ${path}: see /openapi.json`);
    void reply.header('x-content-type-options', 'nosniff').header('referrer-policy', 'no-referrer');
    if (!existsSync(join(dir, 'index.html'))) {
      if (!isWebPage(path)) throw notFound(`no page or route ${path}: the API is under /api/ (see /openapi.json), the health check is /health`);
      return reply.code(503).type('text/html; charset=utf-8').header('cache-control', 'no-store').send(NOT_BUILT);
    }

    const file = normalize(join(dir, path));
    const inside = file.startsWith(dir + sep) && !path.includes('\0');
    let entry = inside ? await load(file) : undefined;
    let immutable = false;
    if (entry) {
      immutable = path.startsWith('/assets/');
    } else if (path.startsWith('/assets/') || (extname(path) && extname(path) !== '.html')) {
      // A missing asset is a 404, not the app: a stale page asking for an old bundle should fail loudly.
      throw notFound(`no file ${path}`);
    } else if (!isWebPage(path)) {
      // Not a page of the UI (`/metrics`, `/healthz`, a mistyped path): a monitor or a script
      // must not read the UI's 200 as an answer.
      throw notFound(`no page or route ${path}: the API is under /api/ (see /openapi.json), the health check is /health`);
    } else {
      entry = (await load(join(dir, 'index.html')))!;
    }
    void reply.type(entry.type).header('cache-control', immutable ? 'public, max-age=31536000, immutable' : 'no-cache').header('vary', 'accept-encoding');
    if (entry.type.startsWith('text/html')) void reply.header('content-security-policy', CSP).header('x-frame-options', 'DENY');
    if (entry.gzip && /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''))) {
      return reply.header('content-encoding', 'gzip').send(entry.gzip);
    }
    return reply.send(entry.body);
  });
}
