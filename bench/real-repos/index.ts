// Real-world-shaped repositories on this host: a Node library whose lockfile pulls 264
// packages, a Python package with twenty wheels in its requirements, and a devcontainer built
// from a Dockerfile. Packages come from a local HTTPS repository manager (test/fakes/
// package-mirror.ts) set as the org's npm and PyPI mirrors, its token added by the egress
// proxy. For each: the time from the POST `berth run` makes to the first test command
// starting (the check: the repository's berth.yaml installs, then `npm test` and the like),
// and to green (that command passing), next to the same by hand on the host in the same run
// (git clone, install from the same mirror, test). The first run of each is cold (the
// devcontainer image is built); the others are warm (the build is reused). Then each
// project's prebuild is made and the same tasks run again from it: the prebuild column (task →
// agent starts, → first test command, → green).
//
// Environments reach the mirror, on the host's loopback, through the test escape hatch: a
// resolver that says mirror.test is 127.0.0.1 and allowPrivateAddresses 127.0.0.1/32.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Task } from '../../src/shared/api-tasks.ts';
import type { TaskEvent } from '../../src/shared/tasks.ts';
import type { Resolver } from '../../src/runner/network/index.ts';
import { createBareRepo, isolatedGitEnv } from '../../test/fakes/git-server.ts';
import { startModelServer } from '../../test/fakes/model-server.ts';
import { startPackageMirror, type PackageMirror } from '../../test/fakes/package-mirror.ts';
import { startTestBerth, type TestBerth } from '../../test/helpers.ts';
import { ON_POSTGRES } from '../../test/postgres.ts';
import { percentile } from '../stats.ts';
import { DEVCONTAINER_STEPS, devcontainerRepo, nodeLibrary, pythonPackage } from './repos.ts';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const HOST = 'mirror.test';
const TOKEN = `bench-mirror-${Math.random().toString(36).slice(2)}`;
const MODEL_KEY = 'sk-bench-model-key';
const execFileAsync = promisify(execFile);
const load = () => loadavg().map((l) => l.toFixed(1)).join(' ');

type Kind = 'node' | 'python' | 'devcontainer';
interface Sample {
  /** ms from the start to the agent starting (Berth only), to the first test command starting, and to it passing. */
  agent?: number;
  test: number;
  green: number;
  /** Where the time went, for the table's last column. */
  parts: string;
}

const root = mkdtempSync(join(tmpdir(), 'berth-bench-real-'));
let mirror: PackageMirror | undefined;
let t: TestBerth | undefined;
// The agent has nothing to change: it finishes at once, and the check is the test.
const model = await startModelServer(Array.from({ length: 200 }, () => ({ toolCalls: [{ name: 'finish', args: { summary: 'The tests are what this run is about.' } }] })), { apiKey: MODEL_KEY });

try {
  let started = performance.now();
  const node = nodeLibrary();
  const python = pythonPackage();
  const devcontainer = devcontainerRepo();
  mirror = await startPackageMirror({ host: HOST, token: TOKEN, npm: node.packages, pypi: python.pypi });
  const bare = {
    node: (await createBareRepo({ root, name: 'acme/widgets-js.git', files: node.files })).path,
    python: (await createBareRepo({ root, name: 'acme/widgets-py.git', files: python.files })).path,
    devcontainer: (await createBareRepo({ root, name: 'acme/tools.git', files: devcontainer.files })).path,
  };
  const made = performance.now() - started;

  const resolver: Resolver = async (host) => {
    if (host === HOST) return ['127.0.0.1'];
    throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
  };
  t = await startTestBerth({
    modelEnv: { OPENAI_BASE_URL: model.url, OPENAI_API_KEY: MODEL_KEY, BERTH_MODEL: 'gpt-4o-mini' },
    network: { resolver, allowPrivateAddresses: ['127.0.0.1/32'], upstreamCa: mirror.caPem },
  });
  const berth = t;
  const cli = async (args: string[], input?: string) => {
    const r = await berth.cli(args, { input });
    if (r.code !== 0) throw new Error(`berth ${args.join(' ')}: ${r.stderr.trim()}`);
  };
  await cli(['secret', 'set', 'MIRROR_TOKEN', '--egress-only', '--host', HOST], TOKEN);
  await cli(['policy', 'set', '--mirror', `npm=${mirror.url}/npm/`, `pypi=${mirror.url}/pypi/simple/`, '--mirror-secret', 'npm=MIRROR_TOKEN', 'pypi=MIRROR_TOKEN']);
  for (const [name, repoUrl, work] of [['widgets-js', bare.node, {}], ['widgets-py', bare.python, {}], ['tools', bare.devcontainer, { check: devcontainer.check }]] as const) {
    const r = await berth.api('POST', '/api/orgs/default/projects', { name, repoUrl, defaultBranch: 'main', work });
    if (r.status !== 201) throw new Error(`project ${name}: ${r.status} ${JSON.stringify(r.body)}`);
  }

  console.log(
    `Berth real-repos benchmark — ${berth.berth.runner.backend.name}, ${ON_POSTGRES ? 'PostgreSQL' : 'embedded PGlite'}, ${availableParallelism()} cores, ${RUNS} run(s) each (the first cold); ` +
      `load average at start: ${load()}\n` +
      `repositories and mirror contents made in ${(made / 1000).toFixed(1)} s: ${node.packages.length} npm packages (all ${node.installed} installed by npm ci), ${python.pypi.length - 1} wheels (+ pip), a Dockerfile FROM the default image\n` +
      `mirror: ${mirror.url} (HTTPS, token added by the egress proxy; environments reach it through the test escape hatch allowPrivateAddresses 127.0.0.1/32)\n`,
  );

  const results: Record<Kind, { berth: Sample[]; hand: Sample[] }> = { node: { berth: [], hand: [] }, python: { berth: [], hand: [] }, devcontainer: { berth: [], hand: [] } };
  const hand = handBaseline(mirror, bare);
  for (let run = 0; run < RUNS; run++) {
    for (const kind of ['node', 'python', 'devcontainer'] as const) {
      const b = await viaBerth(berth, kind);
      const h = await hand[kind](run);
      results[kind].berth.push(b);
      results[kind].hand.push(h);
      console.log(`${kind.padEnd(13)} run ${run + 1}${run === 0 ? ' (cold)' : ' (warm)'}  berth: test starts ${sec(b.test)}, green ${sec(b.green)}   by hand: ${sec(h.test)}, ${sec(h.green)}   load ${load()}`);
      console.log(`${''.padEnd(22)}berth ${b.parts}\n${''.padEnd(22)}hand  ${h.parts}`);
    }
  }

  console.log(`\n${'seconds'.padEnd(26)}${'cold → test'.padStart(12)}${'cold → green'.padStart(13)}${'warm → test p50 / p99'.padStart(24)}${'warm → green p50 / p99'.padStart(25)}${'green ratio (p50)'.padStart(19)}`);
  for (const kind of ['node', 'python', 'devcontainer'] as const) {
    for (const who of ['berth', 'hand'] as const) {
      const s = results[kind][who];
      const w = warm(s);
      const p = (f: (x: Sample) => number, q: number) => percentile(w.map(f), q);
      const ratio = who === 'berth' ? `${(p((x) => x.green, 50) / percentile(warm(results[kind].hand).map((x) => x.green), 50)).toFixed(1)}x` : '';
      console.log(
        `${`${kind} ${who === 'berth' ? '(berth run)' : '(by hand)'}`.padEnd(26)}${sec(s[0]!.test).padStart(12)}${sec(s[0]!.green).padStart(13)}${`${sec(p((x) => x.test, 50))} / ${sec(p((x) => x.test, 99))}`.padStart(24)}${`${sec(p((x) => x.green, 50))} / ${sec(p((x) => x.green, 99))}`.padStart(25)}${ratio.padStart(19)}`,
      );
    }
  }
  // The prebuild column: each project's prebuild made (clone, install, snapshot), then the
  // same tasks again, each starting from it (an environment from its snapshot, no install).
  console.log();
  const prebuilt: Record<Kind, Sample[]> = { node: [], python: [], devcontainer: [] };
  for (const [kind, project] of [['node', 'widgets-js'], ['python', 'widgets-py'], ['devcontainer', 'tools']] as const) {
    const before = performance.now();
    const made = await berth.api('POST', `/api/orgs/default/projects/${project}/prebuilds`);
    if (made.status !== 202 && made.status !== 201) throw new Error(`prebuild ${project}: ${made.status} ${JSON.stringify(made.body)}`);
    const ready = await prebuildEnded(berth, (made.body as { id: string }).id);
    if (ready.state !== 'ready') throw new Error(`prebuild ${project} ${ready.state}: ${ready.stateReason}`);
    console.log(`${kind.padEnd(13)} prebuild ready in ${sec(performance.now() - before)}`);
    for (let run = 0; run < RUNS; run++) {
      const b = await viaBerth(berth, kind);
      prebuilt[kind].push(b);
      console.log(`${kind.padEnd(13)} from the prebuild, run ${run + 1}  agent starts ${sec(b.agent!)}, test starts ${sec(b.test)}, green ${sec(b.green)}   load ${load()}\n${''.padEnd(22)}berth ${b.parts}`);
    }
  }
  console.log(`\n${'seconds, p50 / p99'.padEnd(34)}${'→ agent starts'.padStart(18)}${'→ test starts'.padStart(18)}${'→ green'.padStart(18)}`);
  for (const kind of ['node', 'python', 'devcontainer'] as const) {
    const row = (label: string, s: Sample[]) => {
      const p = (f: (x: Sample) => number) => `${(percentile(s.map(f), 50) / 1000).toFixed(2)} / ${(percentile(s.map(f), 99) / 1000).toFixed(2)}`;
      console.log(`${label.padEnd(34)}${p((x) => x.agent ?? NaN).padStart(18)}${p((x) => x.test).padStart(18)}${p((x) => x.green).padStart(18)}`);
    };
    row(`${kind} (no prebuild, warm)`, warm(results[kind].berth));
    row(`${kind} (from a prebuild)`, prebuilt[kind]);
  }

  // The real CLI once per repository (warm): its start-up and following the task to its end included.
  console.log();
  for (const [kind, project] of [['node', 'widgets-js'], ['python', 'widgets-py'], ['devcontainer', 'tools']] as const) {
    const before = performance.now();
    const r = await berth.cli(['run', 'Run the tests', '--project', project]);
    const ms = performance.now() - before;
    console.log(`\`berth run --project ${project}\` (CLI${kind === 'devcontainer' ? ', image already built' : ''}) → exit ${r.code}`.padEnd(80) + `${sec(ms)}   (${kind}; by hand, warm p50 → green ${sec(percentile(warm(results[kind].hand).map((x) => x.green), 50))})`);
    if (r.code !== 0) console.log(r.stderr.trim().split('\n').slice(-5).join('\n'));
  }
  console.log(`\nload average at the end: ${load()}; mirror requests: ${mirror.seen.length}, without the token: ${mirror.seen.filter((s) => !s.authorized).length}`);
} finally {
  await t?.destroy();
  await model.close();
  await mirror?.close();
  rmSync(root, { recursive: true, force: true });
}

/** The warm runs: all but the first, or the one there is. */
function warm<T>(runs: T[]): T[] {
  return runs.length > 1 ? runs.slice(1) : runs;
}

function sec(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

/**
 * One run as a user makes it: `berth run` on the project (a POST). The devcontainer's task
 * builds its image first (the first run) or finds it built (the others).
 */
async function viaBerth(berth: TestBerth, kind: Kind): Promise<Sample> {
  const project = { node: 'widgets-js', python: 'widgets-py', devcontainer: 'tools' }[kind];
  const start = Date.now();
  const res = await berth.api('POST', '/api/orgs/default/tasks', { project, goal: 'Run the tests' });
  if (res.status !== 201) throw new Error(`POST /tasks: ${res.status} ${JSON.stringify(res.body)}`);
  const task = await ended(berth, (res.body as Task).id);
  const got = await berth.api('GET', `/api/orgs/default/tasks/${task.id}/events`);
  if (!Array.isArray(got.body?.items)) throw new Error(`events of ${task.id}: ${got.status} ${JSON.stringify(got.body)}`);
  const events = got.body.items as TaskEvent[];
  const at = (e: TaskEvent | undefined) => (e ? Date.parse(e.at) : NaN);
  const step = (name: string) => events.find((e) => e.data.type === 'step' && e.data.step === name);
  const check = events.find((e) => e.data.type === 'command' && e.data.phase === 'check');
  const setup = events.filter((e) => e.data.type === 'command' && e.data.phase === 'setup');
  if (!check || check.data.type !== 'command' || check.data.exitCode !== 0) {
    const said = events.filter((e) => e.data.type === 'command' || (e.data.type === 'log' && e.data.level !== 'info') || e.data.type === 'state').map((e) => JSON.stringify(e.data).slice(0, 1500));
    throw new Error(`${kind}: the task ${task.id} ${task.state} (${task.stateReason}) without a passing test:\n${said.join('\n')}`);
  }
  const built = events.find((e) => e.data.type === 'log' && /^image build\/\S+ (built|\(unchanged)/.test(e.data.message));
  const build = built && built.data.type === 'log' ? `image ${/unchanged/.test(built.data.message) ? 'reused' : 'built'} ${sec(at(built) - at(step('provisioning')))}, ` : '';
  const setupMs = setup.reduce((n, e) => n + (e.data.type === 'command' ? e.data.durationMs : 0), 0);
  const parts =
    `${build}clone ${sec(at(step('provisioning')) - at(step('cloning')))}, start env ${sec(at(step('setup') ?? step('agent')) - at(step('provisioning')))}, ` +
    `install ${sec(setupMs)}, agent ${sec(at(step('checks')) - at(step('agent')))}, test ${sec(check.data.durationMs)}; task ${task.state} ${sec(Date.parse(task.finishedAt!) - start)} after the start`;
  return { agent: at(step('agent')) - start, test: at(step('checks')) - start, green: at(check) - start, parts };
}

async function prebuildEnded(berth: TestBerth, id: string): Promise<{ state: string; stateReason: string | null }> {
  const deadline = Date.now() + 10 * 60_000;
  for (;;) {
    const p = (await berth.api('GET', `/api/orgs/default/prebuilds/${id}`)).body as { state: string; stateReason: string | null };
    if (p.state === 'ready' || p.state === 'failed') return p;
    if (Date.now() > deadline) throw new Error(`prebuild ${id} still ${p.state} after 10 minutes`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function ended(berth: TestBerth, id: string): Promise<Task> {
  const deadline = Date.now() + 10 * 60_000;
  for (;;) {
    const task = (await berth.api('GET', `/api/orgs/default/tasks/${id}`)).body as Task;
    if (['succeeded', 'failed', 'cancelled', 'timed_out'].includes(task.state)) return task;
    if (Date.now() > deadline) throw new Error(`task ${id} still ${task.state} after 10 minutes`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * The same by hand on the host, from the same bare repositories and the same mirror (at
 * 127.0.0.1, its CA trusted, the token in the tools' own settings): a fresh clone and a fresh
 * package cache each run, as a new machine or a new environment has. The devcontainer by hand
 * runs the Dockerfile's steps in a folder of the host instead of building an image.
 */
function handBaseline(mirror: PackageMirror, bare: Record<Kind, string>): Record<Kind, (run: number) => Promise<Sample>> {
  const home = join(root, 'hand');
  mkdirSync(home, { recursive: true });
  const ca = join(home, 'mirror-ca.pem');
  writeFileSync(ca, mirror.caPem);
  const port = new URL(mirror.hostUrl).port;
  const npmrc = join(home, 'npmrc');
  writeFileSync(npmrc, `registry=${mirror.hostUrl}/npm/\n//127.0.0.1:${port}/npm/:_authToken=${TOKEN}\ncafile=${ca}\naudit=false\nfund=false\n`);
  // Only what this bench sets: the host's own pip, npm and CA settings stay out of it.
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !/^(PIP_|npm_config_|NPM_CONFIG_)|^(REQUESTS_CA_BUNDLE|CURL_CA_BUNDLE)$/.test(k)) env[k] = v;
  Object.assign(env, isolatedGitEnv(home), { HOME: home, PIP_CONFIG_FILE: '/dev/null', PIP_DISABLE_PIP_VERSION_CHECK: '1', npm_config_userconfig: npmrc });
  const sh = (cmd: string, cwd: string) => execFileAsync('sh', ['-c', cmd], { cwd, env, maxBuffer: 64 * 1024 * 1024 });
  /** Clone, then each install step, then the test; `install` is [label, command] pairs. */
  const steps = async (dir: string, bareRepo: string, install: [string, string][], test: string): Promise<Sample> => {
    const start = performance.now();
    await sh(`git clone --quiet -- '${bareRepo}' '${dir}'`, home);
    const parts = [`clone ${sec(performance.now() - start)}`];
    for (const [label, cmd] of install) {
      const before = performance.now();
      await sh(cmd, dir);
      parts.push(`${label} ${sec(performance.now() - before)}`);
    }
    const installed = performance.now();
    await sh(test, dir);
    const green = performance.now();
    return { test: installed - start, green: green - start, parts: [...parts, `test ${sec(green - installed)}`].join(', ') };
  };
  return {
    node: (run) => steps(join(home, `js-${run}`), bare.node, [['install', `npm ci --cache '${join(home, `npm-cache-${run}`)}' >/dev/null`]], 'npm test >/dev/null'),
    python: (run) =>
      steps(
        join(home, `py-${run}`),
        bare.python,
        [
          ['venv', 'python3 -m venv .venv'],
          ['install', `.venv/bin/pip install --quiet --no-cache-dir --cert '${ca}' --index-url 'https://token:${TOKEN}@127.0.0.1:${port}/pypi/simple/' -r requirements.txt`],
        ],
        '.venv/bin/python -m unittest discover -s tests -t . 2>/dev/null',
      ),
    devcontainer: (run) => {
      const prefix = join(home, `tools-prefix-${run}`);
      return steps(join(home, `tools-${run}`), bare.devcontainer, [['Dockerfile steps', `export PREFIX='${prefix}'; ${DEVCONTAINER_STEPS.join(' && ')} && cp VERSION "$PREFIX/share/acme/VERSION"`]], `PREFIX='${prefix}' ${devcontainerRepo().check} >/dev/null`);
    },
  };
}
