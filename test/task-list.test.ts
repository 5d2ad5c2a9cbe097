// The tasks list pages with a cursor in a stable order (created time, then id), keeps its
// filters from page to page, and a task shows the model it runs with.
// sandbox: none (test/fakes/fake-runner.ts; scripts/test.ts runs these more at once)
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startTestBerth, waitFor, type TestBerth } from './helpers.ts';

let t: TestBerth;
let orgId: string;

before(async () => {
  // A model is configured (BERTH_MODEL) but never reached: these tasks fail at the clone.
  t = await startTestBerth({ fake: true, modelEnv: { BERTH_MODEL: 'gpt-4o-mini', OPENAI_BASE_URL: 'http://127.0.0.1:9/v1' } });
  orgId = (await t.api('GET', '/api/orgs')).body.items.find((o: { name: string }) => o.name === 'default').id;
});
after(async () => {
  await t?.destroy();
});

/** Task rows written straight to the table, ended (the worker claims only queued ones), with the given creation times. */
async function insertTasks(rows: { id: string; createdAt: string; state: 'succeeded' | 'failed'; goal?: string }[]) {
  await t.berth.database.db
    .insertInto('tasks')
    .values(
      rows.map((r) => ({
        id: r.id,
        org_id: orgId,
        project_id: null,
        repo_url: 'https://example.invalid/x.git',
        base_branch: null,
        goal: r.goal ?? `goal of ${r.id}`,
        agent: 'builtin',
        command: null,
        model: null,
        budget: JSON.stringify({ maxSteps: 1, maxTokens: null, maxCostUsd: null, timeoutMs: 60_000, maxCheckRetries: 0 }),
        check_command: null,
        state: r.state,
        trigger: 'api',
        created_by: 'test',
        created_at: r.createdAt,
      })) as never,
    )
    .execute();
}

async function walk(query: string, limit: number): Promise<{ ids: string[]; pages: number }> {
  const ids: string[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const res: { status: number; body: any } = await t.api('GET', `/api/orgs/default/tasks?limit=${limit}${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.ok(res.body.items.length <= limit);
    ids.push(...res.body.items.map((x: { id: string }) => x.id));
    cursor = res.body.nextCursor;
    pages++;
    assert.ok(pages < 100, 'the pages end');
  } while (cursor);
  return { ids, pages };
}

describe('tasks list paging', () => {
  test('every task exactly once, newest first, even when many share a millisecond or a timestamp', async () => {
    // Created within one millisecond (microseconds apart), several at the very same instant
    // (the id breaks the tie), and some a day earlier.
    const rows: Parameters<typeof insertTasks>[0] = [];
    for (let i = 0; i < 9; i++) rows.push({ id: `task_pagems${String(i).padStart(6, '0')}`, createdAt: `2030-01-02T03:04:05.678${String(100 + i * 90).padStart(3, '0')}Z`, state: i % 3 ? 'succeeded' : 'failed' });
    for (let i = 0; i < 5; i++) rows.push({ id: `task_pagesame${String(i).padStart(4, '0')}`, createdAt: '2030-01-02T03:04:05.678050Z', state: 'succeeded' });
    for (let i = 0; i < 6; i++) rows.push({ id: `task_pageold${String(i).padStart(5, '0')}`, createdAt: `2030-01-01T00:00:0${i}Z`, state: i % 2 ? 'succeeded' : 'failed' });
    await insertTasks(rows);
    // Newest first to the microsecond, then the larger id first.
    const micros = (iso: string) => {
      const [sec, frac = ''] = iso.replace('Z', '').split('.');
      return `${sec}.${frac.padEnd(6, '0')}`;
    };
    const expected = rows
      .slice()
      .sort((a, b) => (micros(a.createdAt) === micros(b.createdAt) ? (a.id < b.id ? 1 : -1) : micros(a.createdAt) < micros(b.createdAt) ? 1 : -1))
      .map((r) => r.id);

    for (const limit of [1, 2, 3, 7]) {
      const { ids, pages } = await walk('', limit);
      assert.deepEqual(ids, expected, `limit ${limit}`);
      assert.equal(pages, Math.ceil(expected.length / limit), `limit ${limit}: no empty page at the end`);
    }
    // The filters hold on every page.
    const failed = await walk('&state=failed', 2);
    assert.deepEqual(failed.ids, expected.filter((id) => rows.find((r) => r.id === id)!.state === 'failed'));
    const one = await t.api('GET', `/api/orgs/default/tasks?limit=${expected.length}`);
    assert.equal(one.body.nextCursor, null, 'a page holding the rest has no next cursor');
  });

  test('a cursor that is not one the server gave out is refused, naming the field', async () => {
    for (const cursor of ['nonsense', Buffer.from('["yesterday","task_x"]').toString('base64url'), Buffer.from('2030-01-01T00:00:00.000Z|task_x').toString('base64url')]) {
      const res = await t.api('GET', `/api/orgs/default/tasks?cursor=${cursor}`);
      assert.equal(res.status, 400, cursor);
      assert.equal(res.body.error.field, 'cursor');
    }
    assert.equal((await t.api('GET', '/api/orgs/default/tasks?limit=0')).status, 400);
    assert.equal((await t.api('GET', '/api/orgs/default/tasks?limit=201')).status, 400);
  });

  test('environments page the same way', async () => {
    const db = t.berth.database.db;
    const envs = [0, 1, 2, 3, 4].map((i) => ({ id: `env_pagems00000${i}`, name: `page-${i}`, createdAt: `2030-01-02T03:04:05.678${String(100 + i * 150).padStart(3, '0')}Z` }));
    await db
      .insertInto('environments')
      .values(envs.map((e) => ({ id: e.id, org_id: orgId, name: e.name, image: 'debian', image_digest: null, state: 'deleted', state_reason: null, cpus: 1, memory_bytes: '1', disk_bytes: '1', pids_limit: 1, idle_timeout_ms: null, max_lifetime_ms: null, created_at: e.createdAt })) as never)
      .execute();
    const ids: string[] = [];
    let cursor: string | null = null;
    do {
      const res: { status: number; body: any } = await t.api('GET', `/api/orgs/default/environments?state=deleted&limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      ids.push(...res.body.items.map((e: { id: string }) => e.id));
      cursor = res.body.nextCursor;
    } while (cursor);
    assert.deepEqual(ids, envs.map((e) => e.id).reverse());
  });
});

describe('the model a task runs with', () => {
  // A directory where BERTH_LOCAL_REPOS allows one, but no repository: the clone fails.
  const NOT_A_REPO = mkdtempSync(join(tmpdir(), 'berth-not-a-repo-'));
  const ended = (id: string) =>
    waitFor(`task ${id} to end`, async () => {
      const task = (await t.api('GET', `/api/orgs/default/tasks/${id}`)).body;
      return ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(task.state) && task;
    }, 120_000);

  test("a task that names no model shows the runner's default (BERTH_MODEL) once it starts; a retry follows the default again", async () => {
    // There is no repository: the task starts (and takes its model), then fails at the clone.
    const created = await t.api('POST', '/api/orgs/default/tasks', { goal: 'Use the default model', repo: NOT_A_REPO });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal(created.body.model, null, 'not chosen while queued');
    assert.equal(created.body.modelIsDefault, false);
    const task = await ended(created.body.id);
    assert.equal(task.state, 'failed');
    assert.equal(task.model, 'gpt-4o-mini');
    assert.equal(task.modelIsDefault, true);
    const shown = await t.cli(['task', 'show', task.id]);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /^agent\s+built-in \(gpt-4o-mini, the runner's default\)$/m);

    const retry = await t.api('POST', `/api/orgs/default/tasks/${task.id}/retry`);
    assert.equal(retry.status, 201, JSON.stringify(retry.body));
    assert.equal(retry.body.model, null, "the retry takes the default of when it starts, not the first run's");
    await ended(retry.body.id);
  });

  test('a model the task names is kept and not marked as the default', async () => {
    const created = await t.api('POST', '/api/orgs/default/tasks', { goal: 'Use a named model', repo: NOT_A_REPO, model: 'gpt-4.1' });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const task = await ended(created.body.id);
    assert.deepEqual([task.model, task.modelIsDefault], ['gpt-4.1', false]);
    assert.match((await t.cli(['task', 'show', task.id])).stdout, /^agent\s+built-in \(gpt-4\.1\)$/m);
  });
});
