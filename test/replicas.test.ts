// Control-plane replicas on one PostgreSQL (issue #14): task event streams served by any
// replica, seqs that never collide, the policy cache refreshed on change (NOTIFY), periodic
// jobs on one replica at a time, and a stream that survives kill -9 of the replica serving it.
// Replicas need PostgreSQL; on the embedded database only the in-process sanity check runs.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import pino from 'pino';
import { PostgresSingletons } from '../src/server/db/singleton.ts';
import type { TaskEventData } from '../src/shared/tasks.ts';
import { IMAGE_DIR, REPO, startTestBerth, waitFor, type TestBerth } from './helpers.ts';
import { freshDatabase, ON_POSTGRES, type TestDatabase } from './postgres.ts';

const REPLICAS = ON_POSTGRES ? false : 'replicas need PostgreSQL: run with BERTH_TEST_DATABASE=postgres';
const quiet = pino({ level: 'silent' });

let tasks = 0;
/** A task held in `running` by a runner that is not here, so no worker touches it: the test writes its transcript. */
async function heldTask(t: TestBerth): Promise<string> {
  const id = `task_r${String(process.pid % 100_000).padStart(5, '0')}${String(++tasks).padStart(6, '0')}`;
  const orgId = (await t.api('GET', '/api/orgs')).body.items[0].id as string;
  await t.berth.database.db
    .insertInto('tasks')
    .values({ id, org_id: orgId, project_id: null, repo_url: 'https://example.invalid/x.git', base_branch: null, goal: 'Hold still for the replica test', agent: 'builtin', command: null, model: null, budget: JSON.stringify({ maxSteps: 1, maxTokens: null, maxCostUsd: null, timeoutMs: 60_000, maxCheckRetries: 0 }), check_command: null, state: 'running', state_reason: null, step: 'agent', trigger: 'api', created_by: 'test', runner_id: 'elsewhere', environment_id: null, branch: null, base_sha: null, head_sha: null, change_request: null, checks_passed: null, summary: null, diff: null } as never)
    .execute();
  return id;
}

const log = (n: number): TaskEventData => ({ type: 'log', level: 'info', message: `event ${n}` });
const DONE: TaskEventData = { type: 'state', state: 'succeeded' };

interface Received {
  seq: number;
  /** performance.now() when it arrived. */
  at: number;
  data: TaskEventData;
}

/** An SSE stream of a task's events as a browser reads it; `done` resolves at `end` or when the connection breaks. */
async function openStream(url: string, token: string, taskId: string, lastEventId?: number) {
  const controller = new AbortController();
  const events: Received[] = [];
  const state = { ended: false, broken: false };
  const res = await fetch(`${url}/api/orgs/default/tasks/${taskId}/events`, {
    headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream', ...(lastEventId === undefined ? {} : { 'last-event-id': String(lastEventId) }) },
    signal: controller.signal,
  });
  assert.equal(res.status, 200);
  const done = (async () => {
    const decoder = new TextDecoder();
    let buf = '';
    try {
      for await (const chunk of res.body!) {
        buf += decoder.decode(chunk as Uint8Array, { stream: true });
        for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const event = /^event: (\w+)$/m.exec(block)?.[1];
          if (event === 'end') {
            state.ended = true;
            return;
          }
          const id = /^id: (\d+)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (event === 'task' && id && data) events.push({ seq: Number(id), at: performance.now(), data: (JSON.parse(data) as { data: TaskEventData }).data });
        }
      }
    } catch {
      // The server went away (or the test closed the stream).
    }
    state.broken = !state.ended;
  })();
  return { events, state, done, close: () => controller.abort() };
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]!;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('two control planes on one PostgreSQL', { skip: REPLICAS }, () => {
  let database: TestDatabase;
  let a: TestBerth;
  let b: TestBerth;

  before(async () => {
    database = await freshDatabase();
    // Each with its own data dir (its own local runner), on the same database; the sweep every 200 ms.
    a = await startTestBerth({ database, sweepIntervalMs: 200 });
    b = await startTestBerth({ database, sweepIntervalMs: 200 });
  });

  after(async () => {
    await b?.close();
    await a?.close();
    for (const t of [a, b]) if (t) rmSync(t.dataDir, { recursive: true, force: true });
    await database?.drop();
  });

  test('streams opened on B get the events appended on A live, in order, with no gaps', async () => {
    const id = await heldTask(a);
    // Three people watching the task through B (B reads each new event once for all of them).
    const streams = await Promise.all([1, 2, 3].map(() => openStream(b.client.url, a.client.token, id)));
    const stream = streams[0]!;
    const appendedAt = new Map<number, number>();
    const N = 100;
    for (let n = 1; n <= N; n++) {
      const started = performance.now();
      const e = await a.berth.taskEvents.append(id, n === N ? DONE : log(n));
      appendedAt.set(e.seq, started);
      await sleep(5);
    }
    await Promise.all(streams.map((s) => s.done));
    for (const s of streams) {
      assert.equal(s.state.ended, true, 'the stream ends with the task');
      assert.deepEqual(s.events.map((e) => e.seq), range(1, N));
    }
    assert.deepEqual(stream.events.at(-1)!.data, DONE);
    const latency = stream.events.map((e) => e.at - appendedAt.get(e.seq)!);
    console.log(`replica A append -> replica B SSE: p50 ${percentile(latency, 50).toFixed(1)} ms, p99 ${percentile(latency, 99).toFixed(1)} ms, max ${Math.max(...latency).toFixed(1)} ms over ${N} events`);
    // Live: through NOTIFY, not the safety poll (5 s).
    assert.ok(percentile(latency, 50) < 200, `p50 ${percentile(latency, 50)} ms`);
  });

  test("the listening connection is cut: the replica reconnects and reads what was sent meanwhile, well before the safety poll", async () => {
    const id = await heldTask(a);
    const stream = await openStream(b.client.url, a.client.token, id);
    await a.berth.taskEvents.append(id, log(1));
    await waitFor('the first event on B', async () => stream.events.length === 1, 5_000);
    // Every replica's listening session goes (as a PostgreSQL restart or a network cut does); A appends while B is deaf.
    const admin = new pg.Client({ connectionString: database.url });
    await admin.connect();
    try {
      const { rows } = await admin.query("select pg_terminate_backend(pid) as gone from pg_stat_activity where application_name = 'berth-listen' and datname = current_database()");
      assert.ok(rows.length >= 2, 'both replicas listen');
    } finally {
      await admin.end();
    }
    const cut = performance.now();
    for (let n = 2; n <= 10; n++) await a.berth.taskEvents.append(id, n === 10 ? DONE : log(n));
    await stream.done;
    const took = performance.now() - cut;
    console.log(`listening connection cut: every event on B ${took.toFixed(0)} ms later`);
    assert.deepEqual(stream.events.map((e) => e.seq), range(1, 10));
    assert.ok(took < 2_000, `resumed by the reconnect, not the 5 s poll (${took} ms)`);
  });

  test('appends from A and B to one task at once (and a cancel through B) get distinct consecutive seqs', async () => {
    const id = await heldTask(a);
    const N = 200;
    const made: { by: 'a' | 'b'; n: number; seq: number }[] = [];
    const append = async (by: 'a' | 'b', n: number) => {
      const e = await (by === 'a' ? a : b).berth.taskEvents.append(id, log(n));
      made.push({ by, n, seq: e.seq });
    };
    const cancel = sleep(20).then(() => b.api('POST', `/api/orgs/default/tasks/${id}/cancel`));
    await Promise.all([...range(1, N).map((n) => append(n % 2 ? 'a' : 'b', n)), cancel]);
    assert.equal((await cancel).status, 200, JSON.stringify((await cancel).body));
    const stored = await a.berth.taskEvents.list(id);
    assert.deepEqual(stored.map((e) => e.seq), range(1, N + 1), 'one seq each, none skipped');
    // Each append got the seq it was stored under, and one replica's appends keep their order.
    for (const m of made) assert.deepEqual(stored[m.seq - 1]!.data, log(m.n));
    for (const by of ['a', 'b'] as const) {
      const seqs = made.filter((m) => m.by === by).sort((x, y) => x.n - y.n).map((m) => m.seq);
      assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y), `${by}'s appends are stored in the order they were made`);
    }
    assert.equal(stored.filter((e) => e.data.type === 'state' && e.data.state === 'cancelled').length, 1);
  });

  test("a policy change through B's API is enforced by A's policy cache within 500 ms", async () => {
    const envId = `env_rep${String(process.pid % 100_000).padStart(5, '0')}`;
    const orgId = (await a.api('GET', '/api/orgs')).body.items[0].id as string;
    await a.berth.database.db
      .insertInto('environments')
      .values({ id: envId, org_id: orgId, name: 'replica-policy', image: 'debian', image_digest: null, state: 'running', state_reason: null, cpus: 1, memory_bytes: '1', disk_bytes: '1', pids_limit: 1, idle_timeout_ms: null, max_lifetime_ms: null } as never)
      .execute();
    const policies = a.berth.app.policies;
    const seen: number[] = [];
    for (let i = 1; i <= 10; i++) {
      const domain = `change-${i}.example`;
      const started = performance.now();
      const res = await b.api('PATCH', '/api/orgs/default/policies/org', { allowDomains: [domain] });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const answered = performance.now();
      while (!policies.policyFor(envId).allowDomains.includes(domain)) {
        assert.ok(performance.now() - answered < 5_000, `A never saw ${domain}`);
        await new Promise((r) => setImmediate(r));
      }
      seen.push(performance.now() - answered);
      if (i === 1) console.log(`first change (PATCH included): ${(performance.now() - started).toFixed(1)} ms`);
    }
    console.log(`policy change on B -> A's PolicyService: p50 ${percentile(seen, 50).toFixed(1)} ms, max ${Math.max(...seen).toFixed(1)} ms over ${seen.length} changes (from B's answer)`);
    assert.ok(Math.max(...seen) < 500, `slowest ${Math.max(...seen)} ms`);
    // And a change no API call made (a row written by hand) reaches it the same way: the trigger sends it.
    await b.berth.database.db.updateTable('network_policies').set({ allow_domains: JSON.stringify(['by-hand.example']) } as never).where('scope_kind', '=', 'org').execute();
    await waitFor('A to see the change made by hand', async () => policies.policyFor(envId).allowDomains.includes('by-hand.example'), 500);
  });

  test("the environment sweep runs on one replica at a time, and another takes it over when the holder's session ends", async () => {
    // The real sweep of both control planes (every 200 ms): one holds it.
    await sleep(1_000);
    const holders = [a, b].filter((t) => t.berth.database.singletons.holds('environment-sweep'));
    assert.equal(holders.length, 1, 'exactly one replica holds the environment sweep');

    // Counted: two replicas' schedulers ticking the same job every 10 ms.
    const url = database.url;
    const one = new PostgresSingletons({ url, logger: quiet });
    const two = new PostgresSingletons({ url, logger: quiet });
    const runs = { one: 0, two: 0 };
    let running = 0;
    let overlapped = false;
    const job = (who: 'one' | 'two') => async () => {
      running++;
      if (running > 1) overlapped = true;
      runs[who]++;
      await sleep(3);
      running--;
    };
    const tickFor = async (ms: number) => {
      const end = Date.now() + ms;
      while (Date.now() < end) {
        await Promise.all([one.run('replicas-test', job('one')), two.run('replicas-test', job('two'))]);
        await sleep(10);
      }
    };
    try {
      await tickFor(1_000);
      console.log(`job runs in 1 s of 10 ms ticks on two replicas: ${runs.one} and ${runs.two}`);
      assert.equal(overlapped, false, 'never on both at once');
      assert.ok(Math.min(runs.one, runs.two) === 0 && Math.max(runs.one, runs.two) > 20, `runs on exactly one replica: ${JSON.stringify(runs)}`);
      const [holder, other] = runs.one ? [one, two] : [two, one];
      const before = { ...runs };

      // The holder's process dies: its session goes (terminated from the server's side, as a crash leaves it).
      const admin = new pg.Client({ connectionString: url });
      await admin.connect();
      try {
        // The session holding this job's lock (a bigint key shows as classid, objid).
        const { rows } = await admin.query(
          `select pg_terminate_backend(pid) as gone from pg_locks where locktype = 'advisory' and granted and database = (select oid from pg_database where datname = current_database())
             and ((classid::bigint << 32) | objid::bigint) = hashtextextended('berth.singleton.replicas-test', 0)`,
        );
        assert.deepEqual(rows, [{ gone: true }]);
      } finally {
        await admin.end();
      }
      await holder.close();
      await tickFor(500);
      const gained = runs.one - before.one + (runs.two - before.two);
      assert.ok(other.holds('replicas-test'), 'the other replica took the job over');
      assert.ok(gained > 10, `it ran there: ${JSON.stringify(runs)}`);
      assert.equal(overlapped, false);
    } finally {
      await one.close();
      await two.close();
    }
  });

  test('kill -9 of the replica serving a stream: the client resumes on another with Last-Event-ID and gets every event exactly once', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'berth-replica-child-'));
    let child: ChildProcess | undefined;
    try {
      child = spawn(join(REPO, 'bin', 'berth'), ['up', '--data-dir', dataDir, '--port', '0'], {
        env: { ...process.env, DATABASE_URL: database.url, BERTH_IMAGE_DIR: IMAGE_DIR, BERTH_NODE: process.execPath, BERTH_LOG_LEVEL: 'warn' },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr!.on('data', (d) => (stderr += d));
      const childUrl = await waitFor('the child berth up', async () => {
        if (child!.exitCode !== null) throw new Error(`berth up exited: ${stderr}`);
        return /Berth is up at (http:\/\/\S+)/.exec(stderr)?.[1];
      }, 120_000);

      const id = await heldTask(a);
      const N = 300;
      // A (the worker's replica) writes the transcript throughout.
      const writing = (async () => {
        for (let n = 1; n <= N; n++) {
          await a.berth.taskEvents.append(id, n === N ? DONE : log(n));
          await sleep(3);
        }
      })();
      const first = await openStream(childUrl, a.client.token, id);
      await waitFor('events through the child replica', async () => first.events.length >= 40, 30_000);
      child.kill('SIGKILL');
      await first.done;
      assert.equal(first.state.broken, true, 'the stream broke with the replica');
      const last = first.events.at(-1)!.seq;
      assert.ok(last < N, 'killed mid-stream');

      // The client reconnects through the other replica, as an EventSource does, with the last id it saw.
      const second = await openStream(b.client.url, a.client.token, id, last);
      await writing;
      await second.done;
      assert.equal(second.state.ended, true);
      const seqs = [...first.events, ...second.events].map((e) => e.seq);
      console.log(`kill -9 mid-stream: ${first.events.length} events through the killed replica, ${second.events.length} after resuming on another`);
      assert.deepEqual(seqs, range(1, N), 'every event exactly once, in order');
    } finally {
      if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe('one control plane (either database)', () => {
  let t: TestBerth;
  before(async () => {
    t = await startTestBerth();
  });
  after(async () => {
    await t?.destroy();
  });

  test('a stream hears its own process appends at once, in order', async () => {
    const id = await heldTask(t);
    const stream = await openStream(t.client.url, t.client.token, id);
    const N = 50;
    const appendedAt = new Map<number, number>();
    for (let n = 1; n <= N; n++) {
      const started = performance.now();
      const e = await t.berth.taskEvents.append(id, n === N ? DONE : log(n));
      appendedAt.set(e.seq, started);
      await sleep(2);
    }
    await stream.done;
    assert.deepEqual(stream.events.map((e) => e.seq), range(1, N));
    const latency = stream.events.map((e) => e.at - appendedAt.get(e.seq)!);
    console.log(`${t.berth.database.kind}: append -> SSE on the same process: p50 ${percentile(latency, 50).toFixed(1)} ms, max ${Math.max(...latency).toFixed(1)} ms`);
    assert.ok(Math.max(...latency) < 1_000, 'not by the poll');
  });

  test('a policy row written by hand reaches the cache without waiting for the safety reload', async () => {
    const envId = `env_one${String(process.pid % 100_000).padStart(5, '0')}`;
    const orgId = (await t.api('GET', '/api/orgs')).body.items[0].id as string;
    const db = t.berth.database.db;
    await db.insertInto('environments').values({ id: envId, org_id: orgId, name: 'one-policy', image: 'debian', image_digest: null, state: 'running', state_reason: null, cpus: 1, memory_bytes: '1', disk_bytes: '1', pids_limit: 1, idle_timeout_ms: null, max_lifetime_ms: null } as never).execute();
    assert.equal((await t.api('PATCH', '/api/orgs/default/policies/org', { allowDomains: ['first.example'] })).status, 200);
    const policies = t.berth.app.policies;
    await waitFor('the environment in the cache', async () => policies.policyFor(envId).allowDomains.includes('first.example'), 1_000);
    await db.updateTable('network_policies').set({ allow_domains: JSON.stringify(['second.example']) } as never).where('scope_kind', '=', 'org').execute();
    const started = performance.now();
    while (!policies.policyFor(envId).allowDomains.includes('second.example')) {
      assert.ok(performance.now() - started < 1_000, 'the cache never saw the change made by hand');
      await new Promise((r) => setImmediate(r));
    }
    console.log(`${t.berth.database.kind}: a policy row written by hand is in the cache after ${(performance.now() - started).toFixed(1)} ms`);
    await db.deleteFrom('environments').where('id', '=', envId).execute();
  });
});
