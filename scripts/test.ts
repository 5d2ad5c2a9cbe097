// `npm test`: type-check, then every test file under test/ with node's test runner.
// Files run two at a time: each starts real environments, and this machine has 2 cores.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const only = process.argv.slice(2);

const tsc = spawnSync(join(root, 'node_modules', '.bin', 'tsc'), ['--noEmit', '-p', root], { stdio: 'inherit' });
if (tsc.status !== 0) process.exit(tsc.status ?? 1);

const files = (only.length ? only : walk(join(root, 'test')).filter((f) => f.endsWith('.test.ts'))).sort();
const run = spawnSync(process.execPath, ['--test', '--test-concurrency=2', '--test-timeout=600000', '--disable-warning=ExperimentalWarning', ...files], {
  stdio: 'inherit',
  cwd: root,
});
process.exit(run.status ?? 1);

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));
}
