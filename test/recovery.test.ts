// kill -9 of `berth up`: after a restart every environment is running, stopped or failed,
// never lost or half-made.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { openDatabase } from '../src/server/db/index.ts';
import { IMAGE_DIR, REPO, runCli } from './helpers.ts';
import { freshDatabase, ON_POSTGRES } from './postgres.ts';

const dataDir = mkdtempSync(join(tmpdir(), 'berth-recovery-'));
const database = ON_POSTGRES ? await freshDatabase() : undefined;
const env: Record<string, string> = { BERTH_DATA_DIR: dataDir, BERTH_IMAGE_DIR: IMAGE_DIR, ...(database ? { DATABASE_URL: database.url } : {}) };
let up: ChildProcess | undefined;

async function startUp(): Promise<ChildProcess> {
  const before = existsSync(join(dataDir, 'client.json')) ? readFileSync(join(dataDir, 'client.json'), 'utf8') : '';
  const child = spawn(join(REPO, 'bin', 'berth'), ['up', '--port', '0'], {
    env: { ...process.env, ...env, BERTH_NODE: process.execPath, BERTH_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  for (let i = 0; i < 600; i++) {
    if (stderr.includes('Berth is up')) return child;
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`berth up did not start: ${stderr} (config before: ${before})`);
}

after(async () => {
  up?.kill('SIGKILL');
  // Clean up whatever environments are left, through a last clean start.
  up = await startUp();
  const list = JSON.parse((await runCli(['env', 'list', '--json'], env)).stdout) as { id: string }[];
  for (const e of list) await runCli(['env', 'rm', e.id], env);
  up.kill('SIGINT');
  await new Promise((r) => up!.on('close', r));
  await database?.drop();
  rmSync(dataDir, { recursive: true, force: true });
});

test('kill -9 of berth up, then a restart, finds every environment as it was', async () => {
  up = await startUp();
  const cli = async (...args: string[]) => {
    const r = await runCli(args, env);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
  };
  await cli('env', 'create', '--name', 'alive');
  await cli('env', 'exec', 'alive', '--', 'sh', '-c', 'echo kept > /workspace/proof');
  await cli('env', 'create', '--name', 'resting');
  await cli('env', 'stop', 'resting');
  const halfId = await cli('env', 'create', '--name', 'half-made');
  const stoppingId = await cli('env', 'create', '--name', 'half-stopped');

  up.kill('SIGKILL');
  await new Promise((r) => up!.on('close', r));

  // Make two environments look exactly as a crash mid-create and mid-stop leaves them:
  // the state written, the work not done.
  const handle = await openDatabase({ dataDir, databaseUrl: database?.url });
  await handle.db.updateTable('environments').set({ state: 'creating' }).where('id', '=', halfId).execute();
  await handle.db.updateTable('environments').set({ state: 'stopping' }).where('id', '=', stoppingId).execute();
  await handle.close();

  up = await startUp();
  const list = JSON.parse(await cli('env', 'list', '--json')) as { name: string; state: string; stateReason: string | null }[];
  const state = Object.fromEntries(list.map((e) => [e.name, e]));
  assert.equal(state.alive!.state, 'running');
  assert.equal(state.resting!.state, 'stopped');
  assert.equal(state['half-made']!.state, 'failed');
  assert.match(state['half-made']!.stateReason!, /interrupted while being created/);
  assert.equal(state['half-stopped']!.state, 'stopped');
  assert.equal(await cli('env', 'exec', 'alive', '--', 'cat', '/workspace/proof'), 'kept');
  assert.ok(!existsSync(join(dataDir, 'environments', halfId)), 'the half-made environment left nothing behind');

  await cli('env', 'start', 'resting');
  await cli('env', 'start', 'half-stopped');

  // Ctrl-C shuts down cleanly and a restart finds them running.
  up.kill('SIGINT');
  const code = await new Promise((r) => up!.on('close', r));
  assert.equal(code, 0);
  up = await startUp();
  const again = JSON.parse(await cli('env', 'list', '--json')) as { name: string; state: string }[];
  assert.deepEqual(
    again.map((e) => `${e.name}:${e.state}`).sort(),
    ['alive:running', 'half-made:failed', 'half-stopped:running', 'resting:running'],
  );
});
