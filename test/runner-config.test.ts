import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { runnerConfigFrom } from '../src/runner/config.ts';

test('a runner reads its settings once: defaults, variables, and flags that win over them', () => {
  const d = runnerConfigFrom({});
  assert.deepEqual(
    { agent: d.agent, diskQuota: d.diskQuota, compiler: d.compiler, runtime: d.runtime, registries: d.allowedRegistries, cas: d.extraCaFiles, minFree: d.minFreeDiskBytes, conc: d.taskConcurrency },
    { agent: true, diskQuota: true, compiler: 'cc', runtime: undefined, registries: [], cas: [], minFree: 2 * 1024 ** 3, conc: undefined },
  );
  const c = runnerConfigFrom(
    { BERTH_AGENT: 'off', BERTH_DISK_QUOTA: 'OFF', CC: 'gcc', BERTH_RUNTIME: 'runc', BERTH_ALLOWED_REGISTRIES: ' a:5000, ,b ', BERTH_MAX_IMAGE_SIZE: '2g', BERTH_MIN_FREE_DISK: '500m', BERTH_TASK_CONCURRENCY: '3', BERTH_REGISTRY_MIRRORS: 'docker.io=https://mirror.corp' },
    { allowedRegistries: ['c'], taskConcurrency: 7 },
  );
  assert.equal(c.agent, false);
  assert.equal(c.diskQuota, false);
  assert.equal(c.compiler, 'gcc');
  assert.equal(c.runtime, 'runc');
  assert.deepEqual(c.allowedRegistries, ['c'], 'the flag replaces the variable');
  assert.equal(c.maxImageBytes, 2 * 1024 ** 3);
  assert.equal(c.minFreeDiskBytes, 500 * 1024 ** 2);
  assert.equal(c.taskConcurrency, 7);
  assert.equal(c.registryMirrors.get('docker.io'), 'mirror.corp');
});

test('every wrong setting is named in one error, before anything is made', () => {
  assert.throws(
    () => runnerConfigFrom({ BERTH_RUNTIME: 'docker', BERTH_MAX_IMAGE_SIZE: 'huge', BERTH_TASK_CONCURRENCY: '0', BERTH_MIN_FREE_DISK: '-1' }),
    (err: Error) => {
      for (const name of ['BERTH_RUNTIME', 'BERTH_MAX_IMAGE_SIZE', 'BERTH_TASK_CONCURRENCY', 'BERTH_MIN_FREE_DISK']) assert.match(err.message, new RegExp(name));
      return true;
    },
  );
  assert.throws(() => runnerConfigFrom({ BERTH_MAX_IMAGE_SIZE: '0' }), /BERTH_MAX_IMAGE_SIZE must be a size/);
  assert.throws(() => runnerConfigFrom({ BERTH_REGISTRY_MIRRORS: 'docker.io=http://plain' }), /BERTH_REGISTRY_MIRRORS/);
});

test('the runner itself reads no BERTH_ setting from process.env: config.ts is the one place', () => {
  const root = join(import.meta.dirname, '..', 'src', 'runner');
  const offenders: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, e.name);
      if (e.isDirectory()) walk(path);
      else if (e.name.endsWith('.ts') && path !== join(root, 'config.ts')) {
        for (const line of readFileSync(path, 'utf8').split('\n')) if (/process\.env\.(BERTH_|CC\b)/.test(line)) offenders.push(`${path}: ${line.trim()}`);
      }
    }
  };
  walk(root);
  assert.deepEqual(offenders, []);
});
