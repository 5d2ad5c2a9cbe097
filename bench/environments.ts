// Environment benchmarks on this host, with the default image already cached:
// create-to-first-command, exec round trip, idle density and memory, stop/start with a
// 1 GB workspace, and bare `crun run` of the same image measured in the same run.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { ociConfig } from '../src/runner/bundle.ts';
import { ID_BASE } from '../src/runner/idmap.ts';
import { Spawner } from '../src/runner/spawner/index.ts';
import { cgroupLayout, HYBRID_UNIFIED_MOUNT } from '../src/runner/cgroups.ts';
import { DEFAULT_LIMITS } from '../src/shared/environment.ts';
import { startBerth } from '../src/server/index.ts';
import { summary, time } from './stats.ts';

const REPO = new URL('..', import.meta.url).pathname;
const RUNS = Number(process.env.BENCH_RUNS ?? 50);
const IDLE = Number(process.env.BENCH_IDLE ?? 200);

const dataDir = mkdtempSync(join(tmpdir(), 'berth-bench-'));
const berth = await startBerth({
  dataDir,
  port: 0,
  imageDir: process.env.BERTH_IMAGE_DIR ?? join(REPO, '.cache', 'images'),
  logger: pino({ level: 'silent' }),
  onImageProgress: ({ message }) => console.error(`building default image: ${message}`),
});
const { token } = JSON.parse(readFileSync(berth.clientConfigPath, 'utf8'));
const api = async (method: string, path: string, body?: unknown) => {
  const res = await fetch(`${berth.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${JSON.stringify(json)}`);
  return json;
};
const exec = (id: string, cmd: string[]) => api('POST', `/api/orgs/default/environments/${id}/exec`, { cmd });
const created: string[] = [];
// Baselines start their commands the way the runner does, from a small process, so the
// comparison is of the work and not of fork() from a large heap.
const spawner = new Spawner(cgroupLayout() === 'hybrid' ? { privateMounts: { unmount: [HYBRID_UNIFIED_MOUNT] } } : {});

console.log(`Berth environment benchmarks — ${berth.runner.backend.name}, cgroups ${cgroupLayout()}, ${RUNS} runs, ${availableParallelism()} cores\n`);

try {
  // Warm up the runtime and the page cache.
  for (let i = 0; i < 3; i++) {
    const env = await api('POST', '/api/orgs/default/environments', {});
    await exec(env.id, ['true']);
    await api('DELETE', `/api/orgs/default/environments/${env.id}`);
  }

  const createToFirst: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    let id = '';
    createToFirst.push(
      await time(async () => {
        id = (await api('POST', '/api/orgs/default/environments', {})).id;
        await exec(id, ['true']);
      }),
    );
    await api('DELETE', `/api/orgs/default/environments/${id}`);
  }
  const berthCreate = summary('create → first command (berth API)', createToFirst);

  const baseline = await bareCrun(RUNS);
  const bare = summary('bare `crun run true`, same image, userns', baseline);
  console.log(`${''.padEnd(52)} ratio berth/bare at p50: ${(berthCreate.p50 / bare.p50).toFixed(2)}x\n`);

  const env = await api('POST', '/api/orgs/default/environments', { name: 'bench-exec' });
  created.push(env.id);
  for (let i = 0; i < 10; i++) await exec(env.id, ['true']);
  const rt: number[] = [];
  for (let i = 0; i < Math.max(RUNS * 4, 200); i++) rt.push(await time(() => exec(env.id, ['true'])));
  const via = existsSync(berth.runner.agentSocket(env.id)) ? 'agent' : `${berth.runner.backend.name} exec`;
  summary(`exec round trip \`true\` (berth API, via ${via})`, rt);
  const directExec: number[] = [];
  const cid = berth.runner.containerId(env.id);
  const stateDir = join(dataDir, 'runtime', 'state');
  for (let i = 0; i < 100; i++) directExec.push(await time(() => spawner.check('crun', ['--root', stateDir, 'exec', cid, 'true'])));
  summary('bare `crun exec true` (baseline)', directExec);
  console.log();

  // Stop → start of an environment whose workspace holds 1 GB.
  await exec(env.id, ['sh', '-c', 'head -c 1073741824 /dev/zero > /workspace/big && sync']);
  const cycle: number[] = [];
  for (let i = 0; i < 10; i++) {
    await api('POST', `/api/orgs/default/environments/${env.id}/stop`);
    cycle.push(await time(() => api('POST', `/api/orgs/default/environments/${env.id}/start`)));
  }
  summary('start after stop, 1 GB workspace', cycle);
  const stopStart: number[] = [];
  for (let i = 0; i < 10; i++) {
    stopStart.push(
      await time(async () => {
        await api('POST', `/api/orgs/default/environments/${env.id}/stop`);
        await api('POST', `/api/orgs/default/environments/${env.id}/start`);
      }),
    );
  }
  summary('stop → start, 1 GB workspace', stopStart);
  const size = (await exec(env.id, ['stat', '-c', '%s', '/workspace/big'])).stdout.trim();
  console.log(`${''.padEnd(52)} workspace file still ${size} bytes\n`);

  // Density: how many idle environments this host holds, and what each costs.
  const availableBefore = memAvailable();
  const idleStart = performance.now();
  for (let i = 0; i < IDLE; i++) {
    const e = await api('POST', '/api/orgs/default/environments', { memory: '256m', idleTimeout: 'off' });
    created.push(e.id);
  }
  const idleSeconds = (performance.now() - idleStart) / 1000;
  await new Promise((r) => setTimeout(r, 2000));
  const cgroupBytes = created.map((id) => berth.runner.cgroupUsage(id).memoryBytes ?? 0).reduce((a, b) => a + b, 0);
  const hostBytes = availableBefore - memAvailable();
  const running = (await api('GET', '/api/orgs/default/environments?state=running&limit=500')).items.length;
  console.log(`idle environments running at once                    ${running} (created ${IDLE} in ${idleSeconds.toFixed(1)} s)`);
  console.log(`memory per idle environment (cgroup, incl. page cache) ${(cgroupBytes / created.length / 1024).toFixed(0)} KiB`);
  console.log(`memory per idle environment (host MemAvailable drop)   ${(hostBytes / IDLE / 1024).toFixed(0)} KiB`);
  const allAnswer = await Promise.all(created.slice(0, 20).map((id) => exec(id, ['true'])));
  console.log(`a sample of 20 idle environments answers exec:         ${allAnswer.every((r) => r.exitCode === 0) ? 'yes' : 'NO'}`);
} finally {
  for (const id of created) await api('DELETE', `/api/orgs/default/environments/${id}`).catch(() => {});
  await berth.close();
  spawner.close();
  rmSync(dataDir, { recursive: true, force: true });
}

function memAvailable(): number {
  const line = readFileSync('/proc/meminfo', 'utf8').split('\n').find((l) => l.startsWith('MemAvailable:'))!;
  return Number(line.split(/\s+/)[1]) * 1024;
}

/** The baseline: crun running `true` in a bundle over the same image, with the same namespaces and limits. */
async function bareCrun(runs: number): Promise<number[]> {
  const image = await berth.runner.images.get('default');
  if (!image) throw new Error('the default image is missing');
  const dir = mkdtempSync(join(tmpdir(), 'berth-bare-'));
  chmodSync(dir, 0o711); // the environment's root must reach its mount point
  const state = join(dir, 'state');
  const upper = join(dir, 'upper');
  const work = join(dir, 'work');
  const merged = join(dir, 'merged');
  for (const d of [state, upper, work, merged]) mkdirSync(d);
  execFileSync('chown', [`${ID_BASE}:${ID_BASE}`, upper]);
  await spawner.check('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${image.rootfs},upperdir=${upper},workdir=${work}`, merged]);
  const config = ociConfig({
    hostname: 'bare',
    rootfs: merged,
    initBinary: '/usr/bin/catatonit',
    env: ['PATH=/usr/bin:/bin'],
    limits: DEFAULT_LIMITS,
    cgroupsPath: '/berth/bench-bare',
  });
  config.process.args = ['/bin/true'];
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  const samples: number[] = [];
  try {
    for (let i = 0; i < runs + 3; i++) {
      const args = ['--root', state, 'run', '--bundle', dir, `bare-${i}`];
      const took = await time(() => spawner.check('crun', args));
      if (i >= 3) samples.push(took);
    }
  } finally {
    await spawner.check('umount', [merged]);
    rmSync(dir, { recursive: true, force: true });
  }
  return samples;
}
