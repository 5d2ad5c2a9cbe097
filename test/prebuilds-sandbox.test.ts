// A prebuild on real sandboxes (LocalRunner, crun, the btrfs state store): the setup runs once
// in the prebuild, and a task started from it finds what the setup made (a node_modules-like
// folder of many files, ignored by git) without running the setup again; a commit since is
// fetched into it and checked out.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { storeSupport } from '../src/runner/store.ts';
import { createBareRepo, pushCommit, runGit } from './fakes/git-server.ts';
import { startTestBerth, waitFor, type TestBerth } from './helpers.ts';

const support = storeSupport();
const skip = support.available ? false : support.reason;

// 2,000 files and 8 MiB, counted in a file the agent reads back.
const SETUP = 'mkdir -p node_modules/dep && for i in $(seq 1 2000); do echo "$i" > node_modules/dep/f$i.js; done && head -c 8388608 /dev/zero > node_modules/dep/blob && echo ran >> .setup-runs';
const AGENT = 'ls node_modules/dep | wc -l > files.txt; stat -c %s node_modules/dep/blob > blob.txt; cat .setup-runs > runs.txt; cat NEWS.md > news.txt';

let t: TestBerth;
let root: string;
let bare: string;

before(async () => {
  if (skip) return;
  root = await mkdtemp(join(tmpdir(), 'berth-pb-sandbox-'));
  bare = (await createBareRepo({ root, name: 'app.git', files: { 'berth.yaml': `setup:\n  - ${JSON.stringify(SETUP)}\n`, '.gitignore': 'node_modules/\n.setup-runs\n', 'NEWS.md': 'v1\n' } })).path;
  t = await startTestBerth();
  const p = await t.api('POST', '/api/orgs/default/projects', { name: 'app', repoUrl: bare });
  assert.equal(p.status, 201, JSON.stringify(p.body));
});
after(async () => {
  await t?.destroy();
  if (root) await rm(root, { recursive: true, force: true });
});

test('a task from a prebuild has the setup\'s files without running the setup', { skip }, async () => {
  const r = await t.cli(['prebuild', 'app', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const pb = JSON.parse(r.stdout);
  assert.equal(pb.state, 'ready', pb.stateReason);
  const sha = await pushCommit({ bare, branch: 'main', files: { 'NEWS.md': 'v2\n' }, message: 'news' });

  const made = await t.api('POST', '/api/orgs/default/tasks', { goal: 'count what setup made', project: 'app', agent: 'command', command: AGENT });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  const done = await waitFor('the task', async () => {
    const body = (await t.api('GET', `/api/orgs/default/tasks/${made.body.id}`)).body;
    return ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(body.state) ? body : null;
  }, 300_000);
  assert.equal(done.state, 'succeeded', done.stateReason);
  const events = (await t.api('GET', `/api/orgs/default/tasks/${made.body.id}/events`)).body.items as { data: Record<string, any> }[];
  const logs = events.filter((e) => e.data.type === 'log').map((e) => String(e.data.message));
  assert.ok(logs.some((l) => l.startsWith(`from prebuild ${pb.id} at ${pb.commit.slice(0, 12)}: 1 commit(s) ahead`)), logs.join('\n'));
  assert.deepEqual(events.filter((e) => e.data.type === 'command' && e.data.phase === 'setup'), [], 'the setup did not run in the task');
  const file = (name: string) => runGit(['show', `${done.branch}:${name}`], { cwd: bare });
  assert.equal((await file('files.txt')).trim(), '2001');
  assert.equal((await file('blob.txt')).trim(), '8388608');
  assert.equal(await file('runs.txt'), 'ran\n', 'the setup ran once, in the prebuild');
  assert.equal(await file('news.txt'), 'v2\n', 'the commit since the prebuild is checked out');
  assert.equal((await runGit(['rev-parse', `${done.branch}~1`], { cwd: bare })).trim(), sha, 'the task built on the pushed head');
});
