// Package caches: the same `npm install` (264 packages from a local HTTPS repository manager,
// test/fakes/package-mirror.ts, as the org's npm mirror) in three fresh environments: one of a
// project with no caches, the first of a project with an npm cache (cold: fills it), and a
// second of that project (warm: its tarballs come from the cache; npm still revalidates each
// package document unless told --prefer-offline). Prints the times and what each install
// fetched from the mirror.
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Resolver } from '../src/runner/network/index.ts';
import { createBareRepo } from '../test/fakes/git-server.ts';
import { startPackageMirror, type PackageMirror } from '../test/fakes/package-mirror.ts';
import { startTestBerth, type TestBerth } from '../test/helpers.ts';
import { ON_POSTGRES } from '../test/postgres.ts';
import { nodeLibrary } from './real-repos/repos.ts';

const HOST = 'mirror.test';
const TOKEN = `bench-mirror-${Math.random().toString(36).slice(2)}`;
const root = mkdtempSync(join(tmpdir(), 'berth-bench-caches-'));
let mirror: PackageMirror | undefined;
let t: TestBerth | undefined;
try {
  const node = nodeLibrary();
  mirror = await startPackageMirror({ host: HOST, token: TOKEN, npm: node.packages });
  const resolver: Resolver = async (host) => {
    if (host === HOST) return ['127.0.0.1'];
    throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
  };
  t = await startTestBerth({ network: { resolver, allowPrivateAddresses: ['127.0.0.1/32'], upstreamCa: mirror.caPem } });
  const berth = t;
  const cli = async (args: string[], input?: string) => {
    const r = await berth.cli(args, { input });
    if (r.code !== 0) throw new Error(`berth ${args.join(' ')}: ${r.stderr.trim()}`);
  };
  await cli(['secret', 'set', 'MIRROR_TOKEN', '--egress-only', '--host', HOST], TOKEN);
  await cli(['policy', 'set', '--mirror', `npm=${mirror.url}/npm/`, '--mirror-secret', 'npm=MIRROR_TOKEN']);
  const repo = await createBareRepo({ root, name: 'acme/widgets.git', files: { 'package.json': node.files['package.json']! } });
  await cli(['project', 'create', 'plain', '--repo', repo.path]);
  await cli(['project', 'create', 'cached', '--repo', repo.path, '--cache', 'npm']);

  const m = mirror;
  const install = async (env: string, project: string, flags: string) => {
    const made = await berth.api('POST', '/api/orgs/default/environments', { name: env, project });
    if (made.status !== 201) throw new Error(`environment ${env}: ${made.status} ${JSON.stringify(made.body)}`);
    const pkg = Buffer.from(node.files['package.json']!).toString('base64');
    const fetched = () => ({ tarballs: m.seen.filter((s) => s.path.endsWith('.tgz')).length, documents: m.seen.filter((s) => !s.path.endsWith('.tgz')).length });
    const before = fetched();
    const started = performance.now();
    const r = await berth.api('POST', `/api/orgs/default/environments/${env}/exec`, { cmd: ['sh', '-c', `mkdir -p /w && cd /w && echo ${pkg} | base64 -d > package.json && npm install --no-audit --no-fund ${flags}`], timeout: '10m' });
    const ms = performance.now() - started;
    if (r.status !== 200 || r.body.exitCode !== 0) throw new Error(`npm install in ${env}: ${JSON.stringify(r.body).slice(0, 2000)}`);
    const after = fetched();
    return { ms, tarballs: after.tarballs - before.tarballs, documents: after.documents - before.documents };
  };

  console.log(`Berth package-caches benchmark — ${berth.berth.runner.backend.name}, ${ON_POSTGRES ? 'PostgreSQL' : 'embedded PGlite'}, ${availableParallelism()} cores, load ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  console.log(`npm install of ${node.packages.length} packages from the local mirror, each in a fresh environment:`);
  const runs = [
    ['plain-1', 'plain', '', 'project without caches'],
    ['cached-1', 'cached', '', 'npm cache, first (cold)'],
    ['cached-2', 'cached', '', 'npm cache, second (warm)'],
    ['cached-3', 'cached', '--prefer-offline', 'warm, --prefer-offline'],
  ] as const;
  for (const [env, project, flags, what] of runs) {
    const r = await install(env, project, flags);
    console.log(`  ${what.padEnd(28)} ${(r.ms / 1000).toFixed(2).padStart(6)} s   from the mirror: ${String(r.tarballs).padStart(4)} tarballs, ${String(r.documents).padStart(4)} package documents`);
  }
} finally {
  await t?.close();
  await mirror?.close();
  rmSync(root, { recursive: true, force: true });
}
