// kill -9 of `berth up` while an agent works: after a restart the interrupted task has
// ended as failed with the reason, and the task that was waiting in the queue runs.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { createBareRepo } from './fakes/git-server.ts';
import { startModelServer, type ScriptRequest } from './fakes/model-server.ts';
import { IMAGE_DIR, REPO, runCli, waitFor } from './helpers.ts';
import { freshDatabase, ON_POSTGRES } from './postgres.ts';

const dataDir = mkdtempSync(join(tmpdir(), 'berth-task-recovery-'));
const repos = mkdtempSync(join(tmpdir(), 'berth-task-recovery-repos-'));
const database = ON_POSTGRES ? await freshDatabase() : undefined;

// The model stalls on the task whose goal says so and fixes the other one at once.
const model = await startModelServer(
  Array.from({ length: 50 }, () => (req: ScriptRequest) => {
    const goal = req.messages.find((m) => m.role === 'user')?.text ?? '';
    if (goal.includes('STALL')) return { text: 'thinking for a long time…', delayMs: 600_000 };
    if (!req.toolResults.length) return { toolCalls: [{ name: 'write_file', args: { path: 'done.txt', content: 'done\n' } }] };
    return { toolCalls: [{ name: 'finish', args: { summary: 'wrote done.txt' } }] };
  }),
);
const env: Record<string, string> = {
  BERTH_DATA_DIR: dataDir,
  BERTH_IMAGE_DIR: IMAGE_DIR,
  BERTH_TASK_CONCURRENCY: '1',
  // The instance administrator allows the test's repositories on this host.
  BERTH_LOCAL_REPOS: repos,
  OPENAI_BASE_URL: model.url,
  OPENAI_API_KEY: 'sk-test',
  BERTH_MODEL: 'gpt-4o-mini',
  ...(database ? { DATABASE_URL: database.url } : {}),
};
let up: ChildProcess | undefined;

async function startUp(): Promise<ChildProcess> {
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
  throw new Error(`berth up did not start: ${stderr}`);
}

async function show(id: string) {
  const r = await runCli(['task', 'show', id, '--json'], env);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

after(async () => {
  up?.kill('SIGKILL');
  up = await startUp();
  const list = JSON.parse((await runCli(['env', 'list', '--json'], env)).stdout) as { id: string }[];
  for (const e of list) await runCli(['env', 'rm', e.id], env);
  up.kill('SIGINT');
  await new Promise((r) => up!.on('close', r));
  await database?.drop();
  await model.close();
  rmSync(dataDir, { recursive: true, force: true });
  rmSync(repos, { recursive: true, force: true });
});

test('kill -9 in the middle of a task: it ends as failed with the reason, and the queued one runs after the restart', async () => {
  const { path: repo } = await createBareRepo({ root: repos, name: 'r.git', files: { 'README.md': 'hello\n' } });
  up = await startUp();
  const stalled = (await runCli(['run', 'STALL: think forever', '--repo', repo, '--detach'], env)).stdout.trim();
  const queued = (await runCli(['run', 'write done.txt', '--repo', repo, '--detach'], env)).stdout.trim();
  assert.match(stalled, /^task_[0-9a-z]{12}$/);
  assert.match(queued, /^task_[0-9a-z]{12}$/);

  // The first task's agent is waiting on the model; the second waits in the queue (one at a time).
  await waitFor('the stalled task to reach the model', async () => (model.requests.length ? true : null), 90_000);
  const during = await show(stalled);
  assert.equal(during.state, 'running');
  assert.equal(during.step, 'agent');
  assert.equal((await show(queued)).state, 'queued');

  up.kill('SIGKILL');
  await new Promise((r) => up!.on('close', r));
  up = await startUp();

  const failed = await show(stalled);
  assert.equal(failed.state, 'failed');
  assert.match(failed.stateReason, /the runner stopped while the task was at step 'agent'/);
  assert.match(failed.stateReason, /berth task retry/);
  const envState = JSON.parse((await runCli(['env', 'show', failed.environmentId, '--json'], env)).stdout).state;
  assert.equal(envState, 'stopped');

  const done = await waitFor('the queued task to finish', async () => {
    const t = await show(queued);
    return ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(t.state) ? t : null;
  }, 90_000);
  assert.equal(done.state, 'succeeded', done.stateReason);
  assert.equal(done.changeRequest.kind, 'berth');

  // The transcript says what happened, in order, with nothing lost.
  const logs = await runCli(['task', 'logs', stalled], env);
  assert.match(logs.stdout, /state: running[\s\S]*the built-in agent is working[\s\S]*state: failed \(the runner stopped/);
});
