// `npm test`: build the web UI, type-check, then every test file under test/ with node's test runner, once
// on the embedded database and once on PostgreSQL (BERTH_TEST_POSTGRES, by default the
// server on 127.0.0.1:5432). Files run two at a time: each starts real environments,
// and this machine has 2 cores. Files that start no sandbox (a `// sandbox: none` line: every
// Berth in them runs on test/fakes/fake-runner.ts) run as a group of their own, more at once
// (BERTH_TEST_LIGHT_CONCURRENCY, default LIGHT_CONCURRENCY).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { slowestFiles } from './test-durations.ts';
import { POSTGRES_SERVER, postgresReachable } from '../test/postgres.ts';

const root = new URL('..', import.meta.url).pathname;
const only = process.argv.slice(2);

// The web UI's tests drive the built UI the control plane serves (a couple of seconds).
const web = spawnSync(process.execPath, [join(root, 'node_modules', 'vite', 'bin', 'vite.js'), 'build', '--config', join(root, 'web', 'vite.config.ts'), '--logLevel', 'warn'], { stdio: 'inherit', cwd: root });
if (web.status !== 0) process.exit(web.status ?? 1);

for (const project of [root, join(root, 'web')]) {
  const tsc = spawnSync(join(root, 'node_modules', '.bin', 'tsc'), ['--noEmit', '-p', project], { stdio: 'inherit' });
  if (tsc.status !== 0) process.exit(tsc.status ?? 1);
}

const LIGHT_CONCURRENCY = 4;
// Node's usual output, then which files took longest.
const REPORTERS = ['--test-reporter=spec', '--test-reporter-destination=stdout', `--test-reporter=${join(root, 'scripts', 'test-durations.ts')}`, '--test-reporter-destination=stdout'];
const durationsDir = mkdtempSync(join(tmpdir(), 'berth-test-durations-'));
const durationsFile = join(durationsDir, 'durations.ndjson');
process.on('exit', () => rmSync(durationsDir, { recursive: true, force: true }));
const files = (only.length ? only : walk(join(root, 'test')).filter((f) => f.endsWith('.test.ts'))).sort();
const NO_SANDBOX = /^\/\/ sandbox: none\b/m;
const light = files.filter((f) => NO_SANDBOX.test(readFileSync(f, 'utf8')));
const groups = [
  { name: 'with sandboxes', files: files.filter((f) => !light.includes(f)), concurrency: 2 },
  { name: 'without a sandbox', files: light, concurrency: Number(process.env.BERTH_TEST_LIGHT_CONCURRENCY) || LIGHT_CONCURRENCY },
].filter((g) => g.files.length);
const run = (database: 'embedded' | 'postgres') => {
  let status: number | null = 0;
  for (const group of groups) {
    console.log(`\n# tests on the ${database} database, ${group.name}: ${group.files.length} files, ${group.concurrency} at a time\n`);
    // Every file makes its own data dir and listens on port 0: nothing is shared between them.
    // --test-force-exit: a file whose tests all ended is done, even if something in it left a timer
    // behind (one did once, under load, and held the whole run until CI's limit).
    const { status: groupStatus } = spawnSync(process.execPath, ['--test', '--test-force-exit', `--test-concurrency=${group.concurrency}`, '--test-timeout=600000', '--disable-warning=ExperimentalWarning', ...REPORTERS, ...group.files], {
      stdio: 'inherit',
      cwd: root,
      env: { ...process.env, BERTH_TEST_DATABASE: database, BERTH_TEST_DURATIONS: durationsFile },
    });
    status ||= groupStatus;
    console.log(slowestFiles(durationsFile, root));
    rmSync(durationsFile, { force: true });
  }
  return status;
};

let status = run('embedded');
if (process.env.BERTH_TEST_SKIP_POSTGRES === '1') {
  console.log('\n# BERTH_TEST_SKIP_POSTGRES=1: not running the suite on PostgreSQL');
} else if (await postgresReachable()) {
  status ||= run('postgres');
} else {
  console.error(`\nno PostgreSQL at ${POSTGRES_SERVER}: set BERTH_TEST_POSTGRES to a server (or BERTH_TEST_SKIP_POSTGRES=1)`);
  status ||= 1;
}
process.exit(status ?? 1);

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));
}
