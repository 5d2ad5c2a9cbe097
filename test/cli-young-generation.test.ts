// bin/berth caps V8's young generation (16 MB semi-spaces), which V8 otherwise sizes from the
// host's memory (64 MB on a 24 GB host): `berth up`'s RSS under a campaign was mostly new
// space it grew into. A size the operator names in NODE_OPTIONS wins.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { test } from 'node:test';

const REPO = new URL('..', import.meta.url).pathname;
const execFileAsync = promisify(execFile);

// Before the CLI runs: allocates short-lived objects with some survivors (as a server's
// requests do) and prints the most new space V8 committed meanwhile.
const CHURN = `--import=data:text/javascript,${encodeURIComponent(`
  import { getHeapSpaceStatistics } from 'node:v8';
  let keep = [], most = 0;
  for (let i = 0; i < 3e6; i++) {
    keep.push({ a: 'x' + i, b: [i, i + 1] });
    if (keep.length > 20000) keep = [];
    if (i % 10000 === 0) most = Math.max(most, getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size);
  }
  process.stderr.write('NEW_SPACE_MB ' + most / 2 ** 20 + '\\n');
`)}`;

async function mostNewSpace(nodeOptions: string): Promise<number> {
  const { stdout, stderr } = await execFileAsync(join(REPO, 'bin', 'berth'), ['--version'], { env: { ...process.env, BERTH_NODE: process.execPath, NODE_OPTIONS: nodeOptions } });
  assert.match(stdout, /^\d+\.\d+\.\d+\n$/);
  return Number(/^NEW_SPACE_MB (\S+)$/m.exec(stderr)?.[1]);
}

test('bin/berth keeps new space to two 16 MB semi-spaces under churn; a size in NODE_OPTIONS wins', { timeout: 120_000 }, async () => {
  const capped = await mostNewSpace(CHURN);
  assert.ok(capped > 0 && capped <= 32, `new space grew to ${capped} MB`);
  const named = await mostNewSpace(`${CHURN} --max-semi-space-size=64`);
  assert.ok(named > 32, `with --max-semi-space-size=64 in NODE_OPTIONS new space grew only to ${named} MB`);
});
