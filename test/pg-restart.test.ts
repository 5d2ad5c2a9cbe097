// PostgreSQL restarted under load: Berth answers 503 with a retry while the database is
// gone (never a 500, never a hang), loses no write it acknowledged, and serves again by
// itself once the server is back. A PostgreSQL of the test's own (initdb in a temp dir,
// its own port), so restarting it disturbs no other test.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { freePort } from './oidc-provider.ts';
import { ON_POSTGRES } from './postgres.ts';
import { startTestBerth, type TestBerth } from './helpers.ts';

const PG_BIN = ['/usr/local/bin', ...['17', '16', '15'].map((v) => `/usr/lib/postgresql/${v}/bin`)];
const pgBinary = (name: string) => {
  for (const dir of PG_BIN) {
    try {
      execFileSync('test', ['-x', join(dir, name)]);
      return join(dir, name);
    } catch {}
  }
  return undefined;
};
const initdb = pgBinary('initdb');
const pgCtl = pgBinary('pg_ctl');
// Once per suite: the embedded run has nothing to restart.
const skip = !ON_POSTGRES ? 'runs in the PostgreSQL suite' : !initdb || !pgCtl ? 'initdb and pg_ctl are not installed' : false;

describe('PostgreSQL restarted under load', { skip }, () => {
  let dir: string;
  let data: string;
  let port: number;
  let t: TestBerth;
  const asPostgres = (file: string, args: string[]) => execFileSync('runuser', ['-u', 'postgres', '--', file, ...args], { stdio: 'pipe', timeout: 60_000 });
  const pgctl = (...args: string[]) => asPostgres(pgCtl!, ['-D', data, '-w', '-t', '60', ...args]);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'berth-pgrestart-'));
    execFileSync('chown', ['postgres:', dir]);
    data = join(dir, 'data');
    port = await freePort();
    asPostgres(initdb!, ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8']);
    pgctl('-l', join(dir, 'log'), '-o', `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50`, 'start');
    const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
    t = await startTestBerth({ database: { url, drop: async () => {} } });
  });

  after(async () => {
    await t?.destroy().catch(() => {});
    try {
      pgctl('-m', 'immediate', 'stop');
    } catch {}
    rmSync(dir, { recursive: true, force: true });
  });

  test('requests get 503 while it is down, none is lost or 500, and Berth serves again by itself', async () => {
    const acknowledged = new Set<string>();
    const statuses = new Map<number, number>();
    let slowest = 0;
    let stop = false;
    let n = 0;
    const worker = async (w: number) => {
      while (!stop) {
        const name = `S_${w}_${n++}`;
        const started = performance.now();
        const r = await t.api('PUT', `/api/orgs/default/secrets/${name}`, { value: `v-${name}` }).catch(() => ({ status: 0, body: null }));
        slowest = Math.max(slowest, performance.now() - started);
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        if (r.status >= 200 && r.status < 300) acknowledged.add(name);
        else if (r.status === 503) await new Promise((res) => setTimeout(res, 50));
        const l = await t.api('GET', '/api/orgs/default/secrets').catch(() => ({ status: 0, body: null }));
        statuses.set(l.status, (statuses.get(l.status) ?? 0) + 1);
      }
    };
    const load = [0, 1, 2, 3].map(worker);
    await new Promise((r) => setTimeout(r, 1_000));
    const before = acknowledged.size;
    // A fast restart ends every connection under way (57P01), then refuses new ones while it starts.
    pgctl('-m', 'fast', 'restart', '-l', join(dir, 'log'), '-o', `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50`);
    // Berth must serve again by itself: new writes succeed within a few seconds of the restart.
    const deadline = Date.now() + 20_000;
    const atRestart = acknowledged.size;
    while (acknowledged.size < atRestart + 20 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    stop = true;
    await Promise.all(load);

    assert.ok(before > 0, 'the load ran before the restart');
    assert.ok(acknowledged.size >= atRestart + 20, `writes resumed after the restart (statuses ${JSON.stringify([...statuses])})`);
    const bad = [...statuses].filter(([s]) => s !== 200 && s !== 503);
    assert.deepEqual(bad, [], `every answer was 200 or 503 (statuses ${JSON.stringify([...statuses])})`);
    assert.ok(slowest < 15_000, `no request hung (slowest ${Math.round(slowest)} ms)`);

    // Every write Berth acknowledged is in the database.
    const client = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${port}/postgres` });
    await client.connect();
    try {
      const { rows } = await client.query<{ name: string }>(`select name from secrets where name like 'S\\_%'`);
      const stored = new Set(rows.map((r) => r.name));
      const lost = [...acknowledged].filter((name) => !stored.has(name));
      assert.deepEqual(lost, [], 'no acknowledged write was lost');
    } finally {
      await client.end();
    }
    // And the control plane's own loops came back: the runner's heartbeat is written again.
    const runners = await t.api('GET', '/api/runners');
    assert.equal(runners.status, 200);
    assert.equal(runners.body.items[0].health.status === 'offline', false, 'the local runner is not offline after the restart');
  });
});
