// Agent task benchmark on this host: a scripted model (instant, over the OpenAI protocol)
// and one-file tasks, each on a bare repository of its own with a quick check command.
// Prints tasks per minute with every task slot busy, the time from the POST (what
// `berth run` does) to the change request, and Berth's own overhead per task: everything
// but the model's and the check command's time, broken down by step. The baseline, in
// the same run, is the same change made by hand on the host: clone, edit, commit, push.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Task } from '../src/shared/api-tasks.ts';
import type { TaskEvent, TaskStep } from '../src/shared/tasks.ts';
import { createBareRepo, isolatedGitEnv } from '../test/fakes/git-server.ts';
import { startModelServer, type Reply, type ScriptRequest } from '../test/fakes/model-server.ts';
import { startTestBerth, type TestBerth } from '../test/helpers.ts';
import { ON_POSTGRES } from '../test/postgres.ts';
import { percentile, summary, time } from './stats.ts';

const TASKS = Number(process.env.BENCH_TASKS ?? 50);
const ALONE = Number(process.env.BENCH_ALONE ?? 3);
const CONCURRENCY = Number(process.env.BERTH_TASK_CONCURRENCY) || 2 * availableParallelism();
const MODEL_KEY = 'sk-bench-model-key';
const GOAL_OVERHEAD_P50_MS = 2_000;
const GOAL_PER_MINUTE = 30;

const execFileAsync = promisify(execFile);
/** Where a task's time goes, in order. */
const PARTS = ['claim → cloning', 'cloning', 'provisioning', 'setup', 'agent (tools, loop)', 'checks (besides the command)', 'commit', 'push', 'pull_request', 'done → succeeded'] as const;
type Part = (typeof PARTS)[number];

/** One repository per task: one file to change and a check that says whether it was. */
const fileOf = (n: number) => `note-${String(n).padStart(3, '0')}.txt`;
const goalOf = (n: number) => `Mark ${fileOf(n)} as done`;
const repoFiles = (n: number) => ({
  [fileOf(n)]: `# note ${n}\nstatus: todo\n`,
  'berth.yaml': `check: "grep -q 'status: done' ${fileOf(n)}"\n`,
});

/**
 * The model: tasks run at once, so each reply is decided from the conversation it is
 * sent, not from a fixed order. First turn: edit the file the goal names; then finish.
 */
function decide(req: ScriptRequest): Reply {
  const goal = req.messages.find((m) => m.role === 'user')?.text ?? '';
  const file = /note-\d{3}\.txt/.exec(goal)?.[0];
  if (!file) return { status: 400, message: `bench model: no file named in the goal: ${goal.slice(0, 200)}` };
  if (!req.messages.some((m) => m.role === 'assistant')) {
    return { toolCalls: [{ name: 'edit_file', args: { path: file, old_text: 'status: todo', new_text: 'status: done' } }] };
  }
  return { toolCalls: [{ name: 'finish', args: { summary: `${file} is marked done.` } }] };
}

const root = mkdtempSync(join(tmpdir(), 'berth-bench-tasks-'));
const repos: string[] = [];
const model = await startModelServer(Array.from({ length: (TASKS + ALONE + 10) * 20 }, () => decide), { apiKey: MODEL_KEY });
let t: TestBerth | undefined;

try {
  const total = TASKS + ALONE + 3;
  for (let n = 0; n < total; n++) repos.push((await createBareRepo({ root, name: `acme/repo-${n}.git`, files: repoFiles(n) })).path);
  t = await startTestBerth({ modelEnv: { OPENAI_BASE_URL: model.url, OPENAI_API_KEY: MODEL_KEY, BERTH_MODEL: 'gpt-4o-mini' } });
  const berth = t;

  const [l1, l5, l15] = loadavg().map((l) => l.toFixed(2));
  console.log(
    `Berth task benchmark — ${berth.berth.runner.backend.name}, ${ON_POSTGRES ? 'PostgreSQL' : 'embedded PGlite'}, ${availableParallelism()} cores, ` +
      `${TASKS} one-file tasks, ${CONCURRENCY} at a time, scripted model; load average before: ${l1} ${l5} ${l15}\n`,
  );

  let next = 0;
  const create = async () => {
    const n = next++;
    const res = await berth.api('POST', '/api/orgs/default/tasks', { repo: repos[n], goal: goalOf(n) });
    if (res.status !== 201) throw new Error(`POST /tasks: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body as Task;
  };

  // Warm up: the image in the page cache, the SDK and the database's first queries.
  for (let i = 0; i < 2; i++) {
    const [w] = await ended(berth, [(await create()).id]);
    if (w?.state !== 'succeeded') throw new Error(`the warm-up task ${w?.id} ${w?.state}: ${w?.stateReason}`);
  }

  // The batch: every task posted at once, then every slot busy until the queue drains.
  const cpuBefore = cpuTimes();
  const posted = new Map<string, number>();
  const batchStart = Date.now();
  for (let i = 0; i < TASKS; i++) {
    const before = Date.now();
    posted.set((await create()).id, before);
  }
  const done = await ended(berth, [...posted.keys()]);
  const cpuAfter = cpuTimes();
  const batchEnd = Math.max(...done.map((d) => Date.parse(d.finishedAt ?? '') || Date.now()));

  // Alone: what one `berth run` sees on an idle Berth, through the API and through the CLI.
  const alone: number[] = [];
  const aloneDone: Task[] = [];
  for (let i = 0; i < ALONE; i++) {
    const before = Date.now();
    const [d] = await ended(berth, [(await create()).id], 50);
    alone.push(Date.parse(d!.finishedAt!) - before);
    aloneDone.push(d!);
  }
  const n = next++;
  let cliOk = false;
  const cliMs = await time(async () => {
    const r = await berth.cli(['run', goalOf(n), '--repo', repos[n]!]);
    cliOk = r.code === 0;
    if (!cliOk) console.log(`✖ berth run exited ${r.code}: ${r.stderr.trim()}`);
  });

  const succeeded = (d: Task) => d.state === 'succeeded' && d.changeRequest !== null;
  for (const d of [...done, ...aloneDone].filter((d) => !succeeded(d))) console.log(`✖ ${d.id} ${d.state}: ${d.stateReason ?? 'no change request'}`);
  const failed = done.filter((d) => !succeeded(d));
  if (failed.length) console.log(`WARNING: ${failed.length} of ${TASKS} tasks did not succeed; the figures below are over the ${TASKS - failed.length} that did\n`);
  if (!aloneDone.every(succeeded)) console.log('WARNING: a task run alone did not succeed\n');
  if (model.failures.length) console.log(`WARNING: the scripted model failed: ${model.failures.join('; ')}\n`);
  const ok = done.filter(succeeded);
  if (!ok.length) throw new Error('no task succeeded: nothing to measure');

  const runs = await Promise.all(ok.map(async (d) => breakdown(d, posted.get(d.id)!, (await berth.api('GET', `/api/orgs/default/tasks/${d.id}/events`)).body.items)));
  const aloneRuns = await Promise.all(aloneDone.map(async (d) => breakdown(d, Date.parse(d.createdAt), (await berth.api('GET', `/api/orgs/default/tasks/${d.id}/events`)).body.items)));

  const minutes = (batchEnd - batchStart) / 60_000;
  const perMinute = ok.length / minutes;
  const busy = 1 - (cpuAfter.idle - cpuBefore.idle) / (cpuAfter.total - cpuBefore.total);
  console.log(`throughput, ${TASKS} tasks posted at once`.padEnd(52) + ` ${perMinute.toFixed(1)} tasks/min   (${ok.length} in ${(minutes * 60).toFixed(1)} s; host CPU ${(busy * 100).toFixed(0)}% busy)`);
  console.log(`${''.padEnd(52)} goal ≥ ${GOAL_PER_MINUTE} tasks/min: ${perMinute >= GOAL_PER_MINUTE ? 'met' : 'NOT met'}\n`);

  summary('POST → change request, in the batch (queue incl.)', runs.map((r) => r.total));
  summary('  waiting in the queue', runs.map((r) => r.queued));
  summary('  claimed → change request', runs.map((r) => r.run));
  summary('    model round trips (scripted, 2 per task)', runs.map((r) => r.model));
  summary('    check command', runs.map((r) => r.check));
  const overhead = summary('    Berth overhead (claimed → CR − model − check)', runs.map((r) => r.overhead));
  console.log(`${''.padEnd(52)} goal overhead p50 ≤ ${GOAL_OVERHEAD_P50_MS} ms: ${overhead.p50 <= GOAL_OVERHEAD_P50_MS ? 'met' : 'NOT met'}`);
  summary('POST → change request, one task alone (API)', alone);
  const aloneOverhead = summary('  Berth overhead, one task alone', aloneRuns.map((r) => r.overhead));
  console.log(`\`berth run\` (CLI) → change request, one task alone     ${cliMs.toFixed(0)} ms${cliOk ? '' : ' (FAILED)'}`);
  console.log();

  // Where the overhead goes: each step from its event to the next, less the model and the check.
  console.log(`${'Berth overhead by step (ms)'.padEnd(52)} batch p50   batch p99   alone p50`);
  for (const part of PARTS) {
    const batch = runs.map((r) => r.parts[part]);
    const cells = [percentile(batch, 50), percentile(batch, 99), percentile(aloneRuns.map((r) => r.parts[part]), 50)];
    console.log(`  ${part.padEnd(50)}${cells.map((c) => c.toFixed(0).padStart(10)).join('  ')}`);
  }
  console.log();

  const byHand = await baseline(repos.slice(0, Math.min(TASKS, 20)));
  const hand = summary('baseline: clone, edit, commit, push by hand (host)', byHand);
  console.log(`${''.padEnd(52)} ratio Berth overhead/by hand at p50: in the batch ${(overhead.p50 / hand.p50).toFixed(1)}x, alone ${(aloneOverhead.p50 / hand.p50).toFixed(1)}x`);
} finally {
  await t?.destroy();
  await model.close();
  rmSync(root, { recursive: true, force: true });
}

/** Polls the task list until every task in `ids` has ended; returns them in order. */
async function ended(t: TestBerth, ids: string[], pollMs = 250): Promise<Task[]> {
  const waiting = new Set(ids);
  const found = new Map<string, Task>();
  const deadline = Date.now() + 30 * 60_000;
  while (waiting.size) {
    if (Date.now() > deadline) throw new Error(`timed out with ${waiting.size} task(s) still running`);
    await new Promise((r) => setTimeout(r, pollMs));
    for (let cursor: string | null = null, first = true; first || cursor; first = false) {
      const page = (await t.api('GET', `/api/orgs/default/tasks?limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`)).body as { items: Task[]; nextCursor: string | null };
      for (const task of page.items) {
        if (waiting.has(task.id) && ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(task.state)) {
          waiting.delete(task.id);
          found.set(task.id, task);
        }
      }
      cursor = page.nextCursor;
    }
  }
  return ids.map((id) => found.get(id)!);
}

/** One task's times, from the POST and its events. */
function breakdown(task: Task, postedAt: number, events: TaskEvent[]) {
  const at = (e: TaskEvent) => Date.parse(e.at);
  const finished = Date.parse(task.finishedAt!);
  const claimed = events.find((e) => e.data.type === 'state' && e.data.state === 'provisioning');
  if (!claimed) throw new Error(`task ${task.id} has no provisioning event`);
  let model = 0;
  let check = 0;
  for (const e of events) {
    if (e.data.type === 'model') model += e.data.durationMs;
    if (e.data.type === 'command' && e.data.phase === 'check') check += e.data.durationMs;
  }
  const steps = events.filter((e) => e.data.type === 'step');
  const per: Partial<Record<TaskStep, number>> = {};
  steps.forEach((e, i) => {
    const step = (e.data as { step: TaskStep }).step;
    const until = steps[i + 1] ? at(steps[i + 1]!) : finished;
    per[step] = (per[step] ?? 0) + until - at(e);
  });
  const parts: Record<Part, number> = {
    'claim → cloning': (steps[0] ? at(steps[0]) : finished) - at(claimed),
    cloning: per.cloning ?? 0,
    provisioning: per.provisioning ?? 0,
    setup: per.setup ?? 0,
    'agent (tools, loop)': (per.agent ?? 0) - model,
    'checks (besides the command)': (per.checks ?? 0) - check,
    commit: per.commit ?? 0,
    push: per.push ?? 0,
    pull_request: per.pull_request ?? 0,
    'done → succeeded': per.done ?? 0,
  };
  const run = finished - at(claimed);
  return { total: finished - postedAt, queued: at(claimed) - postedAt, run, model, check, overhead: run - model - check, parts };
}

/** The same change by hand, one after the other: what Berth's overhead compares with. */
async function baseline(bares: string[]): Promise<number[]> {
  const home = mkdtempSync(join(tmpdir(), 'berth-bench-hand-'));
  const env = {
    ...isolatedGitEnv(home),
    GIT_AUTHOR_NAME: 'Bench',
    GIT_AUTHOR_EMAIL: 'bench@localhost',
    GIT_COMMITTER_NAME: 'Bench',
    GIT_COMMITTER_EMAIL: 'bench@localhost',
  };
  const git = (args: string[], cwd?: string) => execFileAsync('git', args, { cwd, env });
  const samples: number[] = [];
  try {
    for (const [i, bare] of bares.entries()) {
      const dir = join(home, `work-${i}`);
      samples.push(
        await time(async () => {
          await git(['clone', '--quiet', '--no-recurse-submodules', '--', bare, dir]);
          const file = join(dir, fileOf(i));
          writeFileSync(file, readFileSync(file, 'utf8').replace('status: todo', 'status: done'));
          await execFileAsync('sh', ['-c', `grep -q 'status: done' ${fileOf(i)}`], { cwd: dir });
          await git(['commit', '--quiet', '--no-verify', '-am', `Mark ${fileOf(i)} as done`], dir);
          await git(['push', '--quiet', '--no-verify', 'origin', `HEAD:refs/heads/by-hand-${i}`], dir);
        }),
      );
    }
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
  return samples;
}

/** Jiffies of all CPUs from /proc/stat: how busy the host was over an interval. */
function cpuTimes(): { idle: number; total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
  return { idle, total: fields.reduce((a, b) => a + b, 0) };
}
