// Package caches: where each kind is mounted and what its tools are told (pure), and in real
// environments: an npm install in a project's task fills the project's npm cache, a second
// environment of that project installs from it offline, another project's environment sees
// an empty one, and removing the project removes its caches without following a symlink the
// environment left in one.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { cacheEnvFor, cacheLayout } from '../src/runner/caches.ts';
import type { Resolver } from '../src/runner/network/index.ts';
import type { Task } from '../src/shared/api-tasks.ts';
import { createBareRepo } from './fakes/git-server.ts';
import { startModelServer, type ModelServer } from './fakes/model-server.ts';
import { npmTarball, startPackageMirror, type PackageMirror } from './fakes/package-mirror.ts';
import { startTestBerth, type TestBerth } from './helpers.ts';

describe('package cache layout (pure)', () => {
  test('each kind: a directory of its own at its tools\' place, with the variables they read', () => {
    const all = cacheLayout(['npm', 'pip', 'cargo', 'go', 'apt', 'npm'], { imageEnv: ['PATH=/usr/bin'], dockerClean: false });
    assert.deepEqual(all.volumes, [
      { dir: '.cache-npm', target: '/var/cache/berth/npm' },
      { dir: '.cache-pip', target: '/var/cache/berth/pip' },
      { dir: '.cache-cargo', target: '/var/cache/berth/cargo' },
      { dir: '.cache-go', target: '/var/cache/berth/go' },
      { dir: '.cache-apt', target: '/var/cache/apt/archives' },
    ]);
    assert.deepEqual(all.env, [
      'npm_config_cache=/var/cache/berth/npm',
      'YARN_CACHE_FOLDER=/var/cache/berth/npm/yarn',
      'PIP_CACHE_DIR=/var/cache/berth/pip',
      'UV_CACHE_DIR=/var/cache/berth/pip/uv',
      'CARGO_HOME=/var/cache/berth/cargo',
      'GOMODCACHE=/var/cache/berth/go/mod',
      'GOCACHE=/var/cache/berth/go/build',
    ]);
    assert.deepEqual(all.files.map((f) => f.destination), ['/etc/apt/apt.conf.d/99berth-cache']);
    assert.match(all.files[0]!.content, /^Binary::apt::APT::Keep-Downloaded-Packages "true";$/m);
  });

  test("an image's own CARGO_HOME is kept (its bin/ is cargo itself), the cache over its registry; docker-clean is neutralised", () => {
    const rust = cacheLayout(['cargo', 'apt'], { imageEnv: ['CARGO_HOME=/usr/local/cargo/'], dockerClean: true });
    assert.deepEqual(rust.volumes[0], { dir: '.cache-cargo', target: '/usr/local/cargo/registry' });
    assert.ok(!rust.env.some((e) => e.startsWith('CARGO_HOME=')));
    assert.deepEqual(rust.files.map((f) => f.destination), ['/etc/apt/apt.conf.d/99berth-cache', '/etc/apt/apt.conf.d/docker-clean']);
    assert.doesNotMatch(rust.files[1]!.content, /Post-Invoke/);
    // A CARGO_HOME no volume may cover: the cache gets one of its own instead.
    assert.deepEqual(cacheLayout(['cargo'], { imageEnv: ['CARGO_HOME=/proc/x'], dockerClean: false }).volumes[0], { dir: '.cache-cargo', target: '/var/cache/berth/cargo' });
    assert.deepEqual(cacheLayout([], { imageEnv: [], dockerClean: true }), { volumes: [], env: [], files: [] });
  });

  test('a user other than root gets a folder of its own in each cache', () => {
    const env = cacheLayout(['npm', 'go', 'cargo'], { imageEnv: [], dockerClean: false }).env;
    assert.deepEqual(cacheEnvFor(env, 0), env);
    assert.deepEqual(cacheEnvFor(env, 1000), [
      'npm_config_cache=/var/cache/berth/npm/uid-1000',
      'YARN_CACHE_FOLDER=/var/cache/berth/npm/uid-1000/yarn',
      'GOMODCACHE=/var/cache/berth/go/uid-1000/mod',
      'GOCACHE=/var/cache/berth/go/uid-1000/build',
      'CARGO_HOME=/var/cache/berth/cargo/uid-1000',
    ]);
  });
});

const HOST = 'mirror.test';
const TOKEN = `cache-mirror-${Math.random().toString(36).slice(2)}`;
const MODEL_KEY = 'sk-cache-model-key';
const PROBE = { name: 'berth-cache-probe', version: '1.0.0', tarball: npmTarball({ 'package.json': JSON.stringify({ name: 'berth-cache-probe', version: '1.0.0', main: 'index.js' }), 'index.js': 'module.exports = 42;\n' }) };
const TARBALL = '/npm/berth-cache-probe/-/berth-cache-probe-1.0.0.tgz';

describe('package caches in real environments', () => {
  let t: TestBerth;
  let mirror: PackageMirror;
  let model: ModelServer;
  let root: string;
  const ok = async (env: string, script: string) => {
    const r = await exec(env, script);
    assert.equal(r.exitCode, 0, `${script}\n${r.stdout}\n${r.stderr}`);
    return r.stdout;
  };
  const exec = async (env: string, script: string) => {
    const r = await t.api('POST', `/api/orgs/default/environments/${env}/exec`, { cmd: ['sh', '-c', script], timeout: '5m' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body as { exitCode: number; stdout: string; stderr: string };
  };
  const cli = async (args: string[], input?: string) => {
    const r = await t.cli(args, { input });
    assert.equal(r.code, 0, `berth ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const tarballFetches = () => mirror.seen.filter((s) => s.path === TARBALL && s.authorized).length;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'berth-caches-'));
    mirror = await startPackageMirror({ host: HOST, token: TOKEN, npm: [PROBE] });
    model = await startModelServer([{ toolCalls: [{ name: 'finish', args: { summary: 'Installed; nothing to change.' } }] }], { apiKey: MODEL_KEY });
    const resolver: Resolver = async (host) => {
      if (host === HOST) return ['127.0.0.1'];
      throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    };
    t = await startTestBerth({
      modelEnv: { OPENAI_BASE_URL: model.url, OPENAI_API_KEY: MODEL_KEY, BERTH_MODEL: 'gpt-4o-mini' },
      network: { resolver, allowPrivateAddresses: ['127.0.0.1/32'], upstreamCa: mirror.caPem },
    });
    await cli(['secret', 'set', 'MIRROR_TOKEN', '--egress-only', '--host', HOST], TOKEN);
    await cli(['policy', 'set', '--mirror', `npm=${mirror.url}/npm/`, '--mirror-secret', 'npm=MIRROR_TOKEN']);
    const repo = await createBareRepo({ root, name: 'acme/app.git', files: { 'package.json': JSON.stringify({ name: 'app', version: '0.0.0', private: true, dependencies: { 'berth-cache-probe': '1.0.0' } }) } });
    for (const name of ['app', 'other']) {
      const r = await t.api('POST', '/api/orgs/default/projects', { name, repoUrl: repo.path, work: { setup: ['npm install --no-audit --no-fund'], check: 'test "$(node -p "require(\'berth-cache-probe\')")" = 42' } });
      assert.equal(r.status, 201, JSON.stringify(r.body));
    }
  });

  after(async () => {
    await t?.close();
    await mirror?.close();
    await model?.close();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  test('a task fills its project\'s npm cache; a second environment installs offline from it; another project sees an empty cache', async () => {
    await cli(['project', 'update', 'app', '--cache', 'npm,apt']);
    await cli(['project', 'update', 'other', '--cache', 'npm']);
    assert.match(await cli(['project', 'show', 'app']), /^caches +npm, apt$/m);
    const bad = await t.cli(['project', 'update', 'app', '--cache', 'npm,maven']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /caches are a comma-separated list of npm, pip, cargo, go, apt, not 'maven'/);

    const created = await t.api('POST', '/api/orgs/default/tasks', { project: 'app', goal: 'Install and check' });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const task = await ended((created.body as Task).id);
    assert.equal(task.state, 'succeeded', `${task.stateReason}`);
    assert.equal(tarballFetches(), 1, 'the task downloaded the tarball once');
    // Their sizes, as the runner's du counts them: npm's holds at least the tarball now.
    assert.match(await cli(['project', 'show', 'app']), /^caches +npm \(\d+(\.\d)?[KM]\), apt \(\d+(\.\d)?[KB]\)$/m);
    const shown = (await t.api('GET', '/api/orgs/default/projects/app?usage=1')).body as { cacheBytes: Record<string, number> };
    assert.ok(shown.cacheBytes.npm! >= PROBE.tarball.length, JSON.stringify(shown.cacheBytes));
    assert.equal(shown.cacheBytes.pip, undefined, 'no cache it does not keep');

    const second = await t.api('POST', '/api/orgs/default/environments', { name: 'app-second', project: 'app' });
    assert.equal(second.status, 201, JSON.stringify(second.body));
    const env = await ok('app-second', 'env');
    assert.match(env, /^npm_config_cache=\/var\/cache\/berth\/npm$/m);
    // The tarball is in the cache the task filled: found in its index, and installed with no network at all.
    assert.match(await ok('app-second', 'grep -rl berth-cache-probe-1.0.0.tgz /var/cache/berth/npm/_cacache/index-v5'), /index-v5/);
    await ok('app-second', 'mkdir -p /tmp/w && cd /tmp/w && npm install --offline --no-audit --no-fund berth-cache-probe@1.0.0 && test -f node_modules/berth-cache-probe/index.js');
    assert.equal(tarballFetches(), 1, 'the second environment did not download it again');
    // apt keeps what it downloads, into the project's cache.
    assert.match(await ok('app-second', 'apt-config dump Binary::apt::APT::Keep-Downloaded-Packages'), /"true"/);
    assert.match(await ok('app-second', 'stat -c %a /var/cache/apt/archives'), /^1777$/m);

    // Another user of the same project (a devcontainer's remoteUser) installs into a folder of its own, beside root's files it could not change.
    const asUser = await t.api('POST', '/api/orgs/default/environments', { name: 'app-user', project: 'app', user: 'nobody' });
    assert.equal(asUser.status, 201, JSON.stringify(asUser.body));
    assert.match(await ok('app-user', 'env'), /^npm_config_cache=\/var\/cache\/berth\/npm\/uid-65534$/m);
    await ok('app-user', 'mkdir -p /tmp/u && cd /tmp/u && npm install --no-audit --no-fund berth-cache-probe@1.0.0 && test -f node_modules/berth-cache-probe/index.js');
    assert.match(await ok('app-second', 'stat -c %u /var/cache/berth/npm/uid-65534/_cacache'), /^65534$/m);

    const other = await t.api('POST', '/api/orgs/default/environments', { name: 'other-env', project: 'other' });
    assert.equal(other.status, 201, JSON.stringify(other.body));
    assert.equal((await ok('other-env', 'ls -A /var/cache/berth/npm')).trim(), '', "another project's cache is its own, empty");
    const offline = await exec('other-env', 'mkdir -p /tmp/w && cd /tmp/w && npm install --offline --no-audit --no-fund berth-cache-probe@1.0.0');
    assert.notEqual(offline.exitCode, 0, 'nothing of the first project reaches it');
    assert.equal((await ok('other-env', 'ls /var/cache/apt/archives 2>&1 || true')).includes('.deb'), false);
    // An environment of no project gets no caches.
    const loose = await t.api('POST', '/api/orgs/default/environments', { name: 'loose' });
    assert.equal(loose.status, 201, JSON.stringify(loose.body));
    assert.doesNotMatch(await ok('loose', 'env; ls /var/cache/berth 2>&1 || true'), /npm_config_cache|^npm$/m);
    for (const name of ['other-env', 'loose']) assert.equal((await t.api('DELETE', `/api/orgs/default/environments/${name}`)).status, 200);
  });

  test("removing the project removes its caches, and a symlink left in one is not followed", async () => {
    const project = (await t.api('GET', '/api/orgs/default/projects/app')).body as { id: string };
    const volumes = join(t.dataDir, 'volumes', project.id);
    assert.ok(existsSync(join(volumes, '.cache-npm')), 'the cache lives beside the project\'s volumes');
    // Something of the host's the environment points at from inside its cache.
    const victim = join(root, 'victim');
    mkdirSync(victim);
    writeFileSync(join(victim, 'keep'), 'host file\n');
    await ok('app-second', `ln -s ${victim} /var/cache/berth/npm/escape && ln -s ${victim}/keep /var/cache/berth/npm/escape-file`);
    // Its environments go first (a project with environments is not removed), then the project.
    const envs = (await t.api('GET', '/api/orgs/default/environments')).body as { items: { id: string }[] };
    for (const e of envs.items) assert.equal((await t.api('DELETE', `/api/orgs/default/environments/${e.id}`)).status, 200);
    const removed = await t.api('DELETE', '/api/orgs/default/projects/app');
    assert.equal(removed.status, 200, JSON.stringify(removed.body));
    assert.ok(!existsSync(volumes), 'its caches are gone');
    assert.deepEqual(readdirSync(victim), ['keep'], 'the host file the symlink named is untouched');
  });

  async function ended(id: string): Promise<Task> {
    const deadline = Date.now() + 5 * 60_000;
    for (;;) {
      const task = (await t.api('GET', `/api/orgs/default/tasks/${id}`)).body as Task;
      if (['succeeded', 'failed', 'cancelled', 'timed_out'].includes(task.state)) return task;
      if (Date.now() > deadline) throw new Error(`task ${id} still ${task.state} after 5 minutes`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
});
