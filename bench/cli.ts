// CLI start-up: wall time of `berth --version` and `berth env list` (against a control plane
// started here), next to bare `node -e 0` in the same run, so a slow machine shows as a slow
// baseline rather than a slow CLI. Issue #12 asks for ≤ 80 ms where bare node takes ~20 ms.
// The cases take turns (one call of each per round), so a burst of load elsewhere on the machine
// lands on all of them alike. Each call is spawned and awaited in turn (asynchronously: the
// control plane runs in this process).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { bundleIsFresh } from '../src/cli/bundle-fresh.ts';
import { startBerth } from '../src/server/index.ts';
import { percentile, summary } from './stats.ts';

const RUNS = Number(process.env.BENCH_RUNS ?? 30);
const REPO = new URL('..', import.meta.url).pathname;
const BERTH = join(REPO, 'bin', 'berth');
const BUNDLE = join(REPO, 'dist', 'cli');

function once(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('close', (code) => (code === 0 ? resolve(performance.now() - started) : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${stderr}`))));
  });
}

/**
 * CPU time per call (user + sys, all of node's threads), the mean of `runs` calls: what a busy
 * machine changes least. The shell's `times` reports its children's total.
 */
function cpuPerCall(c: Case, runs: number): Promise<number> {
  const loop = `i=0; while [ $i -lt ${runs} ]; do "$@" >/dev/null 2>&1 || exit 1; i=$((i+1)); done; times`;
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', loop, 'sh', c.cmd, ...c.args], { env: c.env, stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.on('close', (code) => {
      const children = out.trim().split('\n')[1] ?? '';
      const seconds = [...children.matchAll(/(\d+)m([\d.]+)s/g)].reduce((sum, m) => sum + Number(m[1]) * 60 + Number(m[2]), 0);
      if (code !== 0 || !children) reject(new Error(`${c.label}: the CPU loop failed (${code}): ${out}`));
      else resolve((seconds * 1000) / runs);
    });
  });
}

interface Case {
  label: string;
  cmd: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  samples: number[];
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
  const env: NodeJS.ProcessEnv = { ...process.env, BERTH_NODE: process.execPath, BERTH_DATA_DIR: dataDir, FORCE_COLOR: undefined };
  const cases: Case[] = [];
  const add = (label: string, cmd: string, args: string[], caseEnv = env) => cases.push({ label, cmd, args, env: caseEnv, samples: [] });
  add('node -e 0 (baseline)', process.execPath, ['-e', '0']);
  add('berth --version', BERTH, ['--version']);
  add('berth env list (one API call)', BERTH, ['env', 'list']);
  // NODE_EXTRA_CA_CERTS makes node read and parse the file the first time TLS loads.
  if (env.NODE_EXTRA_CA_CERTS) {
    const plain = { ...env, NODE_EXTRA_CA_CERTS: undefined };
    add('node -e 0, no NODE_EXTRA_CA_CERTS', process.execPath, ['-e', '0'], plain);
    add('berth env list, no NODE_EXTRA_CA_CERTS', BERTH, ['env', 'list'], plain);
  }
  add('berth --version, compile cache off', BERTH, ['--version'], { ...env, NODE_DISABLE_COMPILE_CACHE: '1' });

  const runs = existsSync(join(BUNDLE, 'berth.cjs'))
    ? bundleIsFresh(BUNDLE) ? 'the bundle (dist/cli)' : 'the sources: the bundle is older than they are (npm run build:cli)'
    : 'the sources: no bundle (npm run build:cli)';
  console.log(`CLI start-up, ${RUNS} rounds (wall time, spawn to exit); berth runs ${runs}`);
  // The first calls fill the compile cache (bin/berth keeps it per user); they are not counted.
  for (const c of cases) for (let i = 0; i < 3; i++) await once(c.cmd, c.args, c.env);
  for (let i = 0; i < RUNS; i++) for (const c of cases) c.samples.push(await once(c.cmd, c.args, c.env));

  const stats = new Map(cases.map((c) => [c.label, summary(c.label, c.samples)]));
  const bare = stats.get('node -e 0 (baseline)')!;
  const over = (label: string) => {
    const s = stats.get(label)!;
    return `+${(s.p50 - bare.p50).toFixed(1)} ms at p50, +${(s.p99 - bare.p99).toFixed(1)} ms at p99`;
  };
  console.log(`over bare node: --version ${over('berth --version')}; env list ${over('berth env list (one API call)')}`);
  console.log('CPU per call (user + sys, mean; what load elsewhere changes least):');
  const cpu = new Map<string, number>();
  for (const c of cases) {
    cpu.set(c.label, await cpuPerCall(c, RUNS));
    console.log(`  ${c.label.padEnd(50)} ${cpu.get(c.label)!.toFixed(1).padStart(7)} ms`);
  }
  const bareCpu = cpu.get('node -e 0 (baseline)')!;
  console.log(`  over bare node: --version +${(cpu.get('berth --version')! - bareCpu).toFixed(1)} ms, env list +${(cpu.get('berth env list (one API call)')! - bareCpu).toFixed(1)} ms`);
  // In a checkout being edited, a source can become newer than the bundle part-way through.
  if (runs.startsWith('the bundle') && !bundleIsFresh(BUNDLE)) console.log('note: a source changed during the run, so later calls ran the sources: build again (npm run build:cli) and rerun');
  const fastest = Math.min(...cases[0]!.samples);
  console.log(`target: ≤ 80 ms in all (bare node ~20 ms on an idle machine; here its fastest call took ${fastest.toFixed(1)} ms, p99 ${percentile(cases[0]!.samples, 99).toFixed(1)} ms)`);
} finally {
  await berth.close();
  rmSync(dataDir, { recursive: true, force: true });
}
