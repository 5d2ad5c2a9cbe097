// Bundles the `berth` CLI into dist/cli/ (`npm run build:cli`; setup.sh runs it after npm ci):
// plain JavaScript that Node loads without stripping types from forty source files, which is
// most of what a call costs over bare node. bin/berth runs the bundle unless it is older than
// any file it was built from (a dev checkout with edits), then the sources (src/cli/main.ts).
import { mkdirSync, renameSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { build } from 'rolldown';

const REPO = new URL('..', import.meta.url).pathname;
const OUT = join(REPO, 'dist', 'cli');
// Written beside it and swapped in, so a `berth` starting meanwhile finds the old bundle or the new.
const NEXT = `${OUT}.next-${process.pid}`;
// `berth up` runs the server from its sources (its dependencies include wasm and native parts),
// so the bundle imports it from src/ rather than holding it.
const SERVER_SIDE = join(REPO, 'src', 'cli', 'commands', 'up.ts');
// `berth runner join` runs a whole runner (images, network, the protocol): from its sources too.
const RUNNER_SIDE = join(REPO, 'src', 'runner', 'remote', 'host.ts');
// `berth backup` and `berth restore` open the database (PGlite's wasm and data files): from the sources too.
const BACKUP_SIDE = join(REPO, 'src', 'server', 'backup', 'index.ts');
const LAZY_CHILD_PROCESS = '\0lazy-child-process';

// The bundle's time is when the build began: a source edited while it ran is newer, so it counts.
const started = new Date();
mkdirSync(NEXT, { recursive: true });
const inputs = new Set<string>();
await build({
  input: { berth: join(REPO, 'src', 'cli', 'bundle.ts') },
  platform: 'node',
  // ws loads these native speed-ups if they are installed, and does without them.
  // pino: only `runner join` loads it, beside the runner it runs from the sources.
  external: ['bufferutil', 'utf-8-validate', 'pino'],
  logLevel: 'warn',
  // main.ts runs itself only when node runs it directly; here bundle.ts calls its run().
  transform: { define: { 'import.meta.main': 'false' } },
  plugins: [
    {
      name: 'berth-inputs',
      resolveId(source, importer) {
        // From dist/cli/ the sources are two levels up.
        if (importer && source === './commands/up.ts') return { id: `./${relative(OUT, SERVER_SIDE)}`, external: true };
        if (importer?.endsWith('/commands/runner.ts') && source === '../../runner/remote/host.ts') return { id: `./${relative(OUT, RUNNER_SIDE)}`, external: true };
        if (importer?.endsWith('/commands/backup.ts') && source === '../../server/backup/index.ts') return { id: `./${relative(OUT, BACKUP_SIDE)}`, external: true };
        // commander loads child_process for executable subcommands, which berth has none of:
        // loaded when touched instead (it and what it pulls in were ~10 ms of every call here).
        if (importer?.includes('/node_modules/commander/') && (source === 'node:child_process' || source === 'child_process')) return LAZY_CHILD_PROCESS;
        return null;
      },
      load(id) {
        if (id === LAZY_CHILD_PROCESS) return "module.exports = new Proxy({}, { get: (_, key) => require('node:child_process')[key] });";
        return null;
      },
      moduleParsed(info) {
        // Packages are covered by npm's record below: a stat costs ~0.1 ms at start-up here.
        if (!info.id.startsWith('\0') && !info.id.includes('/node_modules/')) inputs.add(info.id);
      },
    },
  ],
  output: {
    dir: NEXT,
    format: 'cjs',
    entryFileNames: '[name].cjs',
    chunkFileNames: '[name]-[hash].cjs',
    comments: { legal: false, annotation: false, jsdoc: false },
  },
});
// What the bundle's freshness check (src/cli/bundle-fresh.ts) compares with its own time: every source
// file in it, and npm's record of node_modules (npm ci keeps the packages' own old file times).
inputs.add(join(REPO, 'node_modules', '.package-lock.json'));
inputs.add(join(REPO, 'package.json'));
writeFileSync(join(NEXT, 'inputs.json'), `${JSON.stringify([...inputs].map((f) => relative(REPO, f)).sort(), null, 1)}\n`);
utimesSync(join(NEXT, 'berth.cjs'), started, started);
rmSync(`${OUT}.old`, { recursive: true, force: true });
try {
  renameSync(OUT, `${OUT}.old`);
} catch {
  // the first build
}
renameSync(NEXT, OUT);
rmSync(`${OUT}.old`, { recursive: true, force: true });
console.log(`built ${relative(REPO, join(OUT, 'berth.cjs'))} from ${inputs.size} files`);
