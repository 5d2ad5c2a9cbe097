// A joined runner against berth up's own, in one control plane and one run: create → first
// command and the exec round trip, each through the API. The joined runner is `berth runner
// join` in a network namespace of its own (its own veth address and data dir), as on another
// host; the local runner is the control plane's in-process one.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { ImageStore, LocalRunner } from '../src/runner/index.ts';
import { netnsPrefix } from '../src/runner/network/netns.ts';
import { startBerth } from '../src/server/index.ts';
import { summary, time } from './stats.ts';

const REPO = new URL('..', import.meta.url).pathname.replace(/\/$/, '');
const IMAGE_DIR = process.env.BERTH_IMAGE_DIR ?? join(REPO, '.cache', 'images');
const RUNS = Number(process.env.BENCH_RUNS ?? 30);
const tag = `bc${process.pid % 10_000}`;
const NETNS = `brt-${tag}`;
const HOST_IF = `brt${tag}h`;
const octet = (process.pid % 200) + 20;
const HOST_ADDR = `10.232.${octet}.1`;

const ip = (...args: string[]) => {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
};

const work = mkdtempSync(join(tmpdir(), 'berth-bench-cluster-'));
const runnerDir = join(work, 'runner');
mkdirSync(join(work, 'cp'));
spawnSync('ip', ['netns', 'del', NETNS]);
ip('netns', 'add', NETNS);
ip('link', 'add', HOST_IF, 'type', 'veth', 'peer', 'name', `brt${tag}r`);
ip('link', 'set', `brt${tag}r`, 'netns', NETNS);
ip('addr', 'add', `${HOST_ADDR}/30`, 'dev', HOST_IF);
ip('link', 'set', HOST_IF, 'up');
ip('-n', NETNS, 'addr', 'add', `10.232.${octet}.2/30`, 'dev', `brt${tag}r`);
ip('-n', NETNS, 'link', 'set', `brt${tag}r`, 'up');
ip('-n', NETNS, 'link', 'set', 'lo', 'up');

const berth = await startBerth({ dataDir: join(work, 'cp'), port: 0, host: HOST_ADDR, imageDir: IMAGE_DIR, logger: pino({ level: 'silent' }), modelEnv: {}, tokenRateLimit: 1_000_000 });
const { token } = JSON.parse(readFileSync(berth.clientConfigPath, 'utf8')) as { token: string };
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

// Placement by label: the local runner gets one, the joined runner its own.
await berth.database.db.updateTable('runners').set({ labels: JSON.stringify({ where: 'local' }) }).where('id', '=', berth.runner.id).execute();
const joinToken = (await api('POST', '/api/runners/tokens', { labels: { where: 'remote' }, name: 'bench' })).token as string;
const child = spawn('nsenter', [`--net=/run/netns/${NETNS}`, join(REPO, 'bin', 'berth'), 'runner', 'join', berth.url, '--insecure', '--data-dir', runnerDir, '--name', 'bench-remote', '--image-dir', IMAGE_DIR], {
  env: { ...process.env, BERTH_RUNNER_TOKEN: joinToken, BERTH_NODE: process.execPath, BERTH_LOG_LEVEL: 'warn' },
  stdio: ['ignore', 'ignore', 'inherit'],
});
const exited = new Promise((r) => child.on('exit', r));

try {
  const deadline = Date.now() + 120_000;
  while (!berth.runners.all().some((r) => r.name === 'bench-remote')) {
    if (Date.now() > deadline) throw new Error('the joined runner did not connect');
    await new Promise((r) => setTimeout(r, 100));
  }
  console.log(`Berth cluster benchmark — a runner joined over a veth pair (its own namespace) against berth up's own; ${RUNS} runs, ${availableParallelism()} cores\n`);

  // Local and remote alternate sample by sample, so a busy moment on this host falls on both.
  const wheres = ['local', 'remote'] as const;
  for (const where of wheres) {
    // Warm up: the runtime, the page cache, the connection.
    for (let i = 0; i < 3; i++) {
      const env = await api('POST', '/api/orgs/default/environments', { runnerLabels: { where } });
      await exec(env.id, ['true']);
      await api('DELETE', `/api/orgs/default/environments/${env.id}`);
    }
  }
  const samples = { local: { create: [] as number[], exec: [] as number[], port: [] as number[] }, remote: { create: [] as number[], exec: [] as number[], port: [] as number[] } };
  for (let i = 0; i < RUNS; i++) {
    for (const where of wheres) {
      let id = '';
      samples[where].create.push(
        await time(async () => {
          id = (await api('POST', '/api/orgs/default/environments', { runnerLabels: { where } })).id;
          await exec(id, ['true']);
        }),
      );
      await api('DELETE', `/api/orgs/default/environments/${id}`);
    }
  }
  const envs = { local: await api('POST', '/api/orgs/default/environments', { runnerLabels: { where: 'local' } }), remote: await api('POST', '/api/orgs/default/environments', { runnerLabels: { where: 'remote' } }) };
  // The same command through the runner port alone (no HTTP, audit or database): what the connection itself adds.
  const direct = async (where: 'local' | 'remote') => {
    const row = await berth.database.db.selectFrom('environments').selectAll().where('id', '=', envs[where].id).executeTakeFirstOrThrow();
    const runner = berth.runners.get(row.runner_id);
    const image = (await runner.images.get(row.image))!;
    const spec = { id: row.id, hostname: row.name, image, limits: { cpus: row.cpus, memoryBytes: Number(row.memory_bytes), diskBytes: Number(row.disk_bytes), pidsLimit: row.pids_limit, idleTimeoutMs: null, maxLifetimeMs: null } };
    return async () => {
      const cmd = runner.exec(spec, { cmd: ['true'] });
      cmd.stdin.end();
      cmd.stdout.resume();
      cmd.stderr.resume();
      await cmd.exited;
    };
  };
  const ports = { local: await direct('local'), remote: await direct('remote') };
  for (let i = 0; i < 10; i++) for (const where of wheres) await exec(envs[where].id, ['true']);
  for (let i = 0; i < Math.max(RUNS * 4, 200); i++) {
    for (const where of wheres) {
      samples[where].exec.push(await time(() => exec(envs[where].id, ['true'])));
      samples[where].port.push(await time(ports[where]));
    }
  }
  for (const where of wheres) await api('DELETE', `/api/orgs/default/environments/${envs[where].id}`);
  const results = {} as Record<'local' | 'remote', { create: { p50: number; p99: number }; exec: { p50: number; p99: number }; port: { p50: number; p99: number } }>;
  for (const where of wheres) {
    results[where] = {
      create: summary(`create → first command (${where} runner)`, samples[where].create),
      exec: summary(`exec round trip \`true\` (${where} runner)`, samples[where].exec),
      port: summary(`runner port exec \`true\` (${where}, no API)`, samples[where].port),
    };
    console.log();
  }
  const { local, remote } = results;
  console.log(`remote/local create → first command: p50 ${(remote.create.p50 / local.create.p50).toFixed(2)}x, p99 ${(remote.create.p99 / local.create.p99).toFixed(2)}x (goal ≤ 1.3x)`);
  console.log(`exec round trip added by the remote runner: p50 ${(remote.exec.p50 - local.exec.p50).toFixed(2)} ms, p99 ${(remote.exec.p99 - local.exec.p99).toFixed(2)} ms (goal ≤ 2 ms)`);
  console.log(`runner port alone, added by the connection: p50 ${(remote.port.p50 - local.port.p50).toFixed(2)} ms, p99 ${(remote.port.p99 - local.port.p99).toFixed(2)} ms`);
} finally {
  child.kill('SIGTERM');
  await exited;
  const rows = await berth.database.db.selectFrom('environments').select('id').where('state', '<>', 'deleted').execute();
  for (const { id } of rows) await berth.runner.remove(id).catch(() => {});
  await berth.close();
  const envDir = join(runnerDir, 'environments');
  if (existsSync(envDir) && readdirSync(envDir).length) {
    const local = new LocalRunner({ dataDir: runnerDir, images: new ImageStore({ dir: IMAGE_DIR }), logger: pino({ level: 'silent' }), agent: false, diskQuota: false });
    for (const id of readdirSync(envDir)) await local.remove(id).catch(() => {});
    local.close();
  }
  for (const dir of [runnerDir, join(work, 'cp')]) {
    const prefix = netnsPrefix(dir);
    for (const name of spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').map((l) => l.split(' ')[0]!)) {
      if (name.startsWith(prefix)) spawnSync('ip', ['netns', 'del', name]);
    }
  }
  spawnSync('ip', ['link', 'del', HOST_IF]);
  spawnSync('ip', ['netns', 'del', NETNS]);
  await new Promise((r) => setTimeout(r, 1000));
  rmSync(work, { recursive: true, force: true });
}
