// The bundled CLI (scripts/build-cli.ts → dist/cli): built for real, run through bin/berth
// against a real control plane, and set aside for the sources when they are newer.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { bundleIsFresh } from '../src/cli/bundle-fresh.ts';
import { seedEmbeddedDatabase, startTestBerth, waitFor, type TestBerth } from './helpers.ts';

const REPO = new URL('..', import.meta.url).pathname;
const BUNDLE = join(REPO, 'dist', 'cli');

// Lists every file node loads (require and import alike) when the process ends.
const LIST_LOADED = `--import=data:text/javascript,${encodeURIComponent(`
  import { registerHooks } from 'node:module';
  const seen = [];
  registerHooks({ load(url, ctx, next) { seen.push(url); return next(url, ctx); } });
  process.on('exit', () => process.stderr.write('LOADED ' + JSON.stringify([...seen, ...process.moduleLoadList.map((m) => 'builtin:' + m)]) + '\\n'));
`)}`;

describe('bundleIsFresh', () => {
  test('fresh while every input is as old as the bundle; stale when one is newer, gone, or the list is', () => {
    const root = mkdtempSync(join(tmpdir(), 'berth-bundle-'));
    try {
      const dir = join(root, 'dist', 'cli');
      mkdirSync(dir, { recursive: true });
      mkdirSync(join(root, 'src'));
      writeFileSync(join(root, 'src', 'a.ts'), '');
      writeFileSync(join(dir, 'inputs.json'), JSON.stringify(['src/a.ts']));
      writeFileSync(join(dir, 'berth.cjs'), '');
      const t = new Date('2026-01-01T00:00:00Z');
      utimesSync(join(root, 'src', 'a.ts'), t, t);
      utimesSync(join(dir, 'berth.cjs'), t, t);
      assert.equal(bundleIsFresh(dir), true);
      const later = new Date('2026-01-01T00:00:01Z');
      utimesSync(join(root, 'src', 'a.ts'), later, later);
      assert.equal(bundleIsFresh(dir), false, 'a source edited after the build');
      utimesSync(join(root, 'src', 'a.ts'), t, t);
      writeFileSync(join(dir, 'inputs.json'), JSON.stringify(['src/a.ts', 'src/gone.ts']));
      assert.equal(bundleIsFresh(dir), false, 'an input removed');
      writeFileSync(join(dir, 'inputs.json'), 'not json');
      assert.equal(bundleIsFresh(dir), false, 'a broken list');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('the bundled CLI', () => {
  let t: TestBerth;
  before(async () => {
    t = await startTestBerth();
  });
  after(async () => {
    await t.destroy();
  });

  const loadedBy = (stderr: string) => JSON.parse(/^LOADED (.*)$/m.exec(stderr)![1]!) as string[];

  test('bin/berth runs the bundle, the same commands, and the sources once they are newer', { timeout: 300_000 }, async () => {
    execFileSync(process.execPath, [join(REPO, 'scripts', 'build-cli.ts')], { stdio: 'pipe' });
    const built = statSync(join(BUNDLE, 'berth.cjs')).mtime;
    try {
      const env = { NODE_OPTIONS: LIST_LOADED };
      const version = await t.cli(['--version'], { env });
      assert.equal(version.code, 0, version.stderr);
      assert.match(version.stdout, /^\d+\.\d+\.\d+\n$/);
      const loaded = loadedBy(version.stderr);
      assert.ok(loaded.some((u) => u.endsWith('/dist/cli/berth.cjs')), `the bundle ran: ${loaded.join(' ')}`);
      assert.deepEqual(loaded.filter((u) => u.endsWith('.ts')), [], 'no source file loaded');
      assert.deepEqual(loaded.filter((u) => u.includes('/node_modules/')), [], 'no package loaded outside the bundle');
      assert.ok(loaded.includes('builtin:NativeModule fs'), 'builtins are listed');
      assert.ok(!loaded.includes('builtin:NativeModule child_process'), 'commander’s child_process is loaded only when used');

      const list = await t.cli(['env', 'list', '--json'], { env });
      assert.equal(list.code, 0, list.stderr);
      assert.deepEqual(JSON.parse(list.stdout), []);
      assert.deepEqual(loadedBy(list.stderr).filter((u) => u.endsWith('.ts')), []);
      const missing = await t.cli(['env', 'show', 'no-such-env']);
      assert.equal(missing.code, 3, 'exit statuses are the same');

      // `runner join` runs a whole runner from the sources beside the bundle (a bundled copy once
      // failed on a package's runtime require): it starts and says why it cannot connect.
      const work = mkdtempSync(join(tmpdir(), 'berth-bundle-join-'));
      try {
        const child = spawn(join(REPO, 'bin', 'berth'), ['runner', 'join', 'http://127.0.0.1:9', '--insecure', '--data-dir', work, '--image-dir', join(REPO, '.cache', 'images')], {
          env: { ...process.env, ...env, FORCE_COLOR: undefined, BERTH_NODE: process.execPath, BERTH_RUNNER_TOKEN: 'berth_runner_x' },
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        let stderr = '';
        child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
        const closed = new Promise((r) => child.on('close', r));
        await waitFor('the runner to try to connect', async () => /not connected to http:\/\/127\.0\.0\.1:9/.test(stderr) || /Cannot find module/.test(stderr), 60_000).catch(() => {});
        child.kill('SIGTERM');
        await closed;
        const join_ = { stderr };
        assert.match(join_.stderr, /not connected to http:\/\/127\.0\.0\.1:9/, join_.stderr.slice(0, 2000));
        assert.doesNotMatch(join_.stderr, /Cannot find module/);
        assert.ok(loadedBy(join_.stderr).some((u) => u.endsWith('/dist/cli/berth.cjs')), 'the bundle ran');
      } finally {
        rmSync(work, { recursive: true, force: true });
      }

      // `backup` opens the embedded database (PGlite's wasm and data files) from the sources beside
      // the bundle too (a bundled copy looked for pglite.data in dist/cli/).
      const data = mkdtempSync(join(tmpdir(), 'berth-bundle-backup-'));
      try {
        await seedEmbeddedDatabase(join(data, 'berth'));
        const backup = await t.cli(['backup', join(data, 'backup'), '--data-dir', join(data, 'berth'), '--json'], { env });
        assert.equal(backup.code, 0, backup.stderr);
        assert.equal(JSON.parse(backup.stdout).database.kind, 'pglite');
        assert.ok(loadedBy(backup.stderr).some((u) => u.endsWith('/dist/cli/berth.cjs')), 'the bundle ran');
      } finally {
        rmSync(data, { recursive: true, force: true });
      }

      // A source newer than the bundle (an edit in a checkout): the sources run.
      const old = new Date(built.getTime() - 3_600_000);
      utimesSync(join(BUNDLE, 'berth.cjs'), old, old);
      const stale = await t.cli(['--version'], { env });
      assert.equal(stale.code, 0, stale.stderr);
      assert.equal(stale.stdout, version.stdout);
      assert.ok(loadedBy(stale.stderr).some((u) => u.endsWith('/src/cli/main.ts')), 'the sources ran');
    } finally {
      utimesSync(join(BUNDLE, 'berth.cjs'), built, built);
    }
  });
});
