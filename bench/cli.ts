// CLI start-up: wall time of `berth --version` and `berth env list` (against a control plane
// started here), next to bare `node -e 0` in the same run, so a slow machine shows as a slow
// baseline rather than a slow CLI. Issue #12 asks for ≤ 80 ms where bare node takes ~20 ms.
// Each call is spawned and awaited in turn (asynchronously: the control plane runs in this process).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { startBerth } from '../src/server/index.ts';
import { summary } from './stats.ts';

const RUNS = Number(process.env.BENCH_RUNS ?? 30);
const REPO = new URL('..', import.meta.url).pathname;
const BERTH = join(REPO, 'bin', 'berth');

function once(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('close', (code) => (code === 0 ? resolve(performance.now() - started) : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${stderr}`))));
  });
}

async function measure(label: string, cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  // The first calls fill the compile cache (bin/berth keeps it per user); they are not counted.
  for (let i = 0; i < 3; i++) await once(cmd, args, env);
  const samples: number[] = [];
  for (let i = 0; i < RUNS; i++) samples.push(await once(cmd, args, env));
  return summary(label, samples).p50;
}

const dataDir = mkdtempSync(join(tmpdir(), 'berth-bench-cli-'));
const berth = await startBerth({
  dataDir,
  port: 0,
  imageDir: process.env.BERTH_IMAGE_DIR ?? join(REPO, '.cache', 'images'),
  logger: pino({ level: 'silent' }),
  tokenRateLimit: 100_000_000,
  modelEnv: {},
});
try {
  const env = { ...process.env, BERTH_NODE: process.execPath, BERTH_DATA_DIR: dataDir, FORCE_COLOR: undefined };
  console.log(`CLI start-up, ${RUNS} runs each (wall time, spawn to exit)`);
  const bare = await measure('node -e 0 (baseline)', process.execPath, ['-e', '0'], env);
  const version = await measure('berth --version', BERTH, ['--version'], env);
  const list = await measure('berth env list (one API call)', BERTH, ['env', 'list'], env);
  await measure('berth --version, compile cache off', BERTH, ['--version'], { ...env, NODE_DISABLE_COMPILE_CACHE: '1' });
  console.log(`over bare node at p50: --version +${(version - bare).toFixed(1)} ms, env list +${(list - bare).toFixed(1)} ms (target: ≤ 80 ms in all, bare node ~20 ms on an idle machine)`);
} finally {
  await berth.close();
  rmSync(dataDir, { recursive: true, force: true });
}
