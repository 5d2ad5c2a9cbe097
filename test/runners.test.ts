// The runners list: the local runner of a real `berth up` reports its host, backend,
// environments, tasks, network and disk every few seconds; a runner that stops reporting
// is offline, one with a problem is degraded with the reason; org admins and owners see
// the list, members and viewers are refused.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { availableParallelism, hostname, totalmem } from 'node:os';
import { after, before, describe, test } from 'node:test';
import { VERSION } from '../src/shared/client-config.ts';
import type { Runner, RunnerReport } from '../src/shared/api-runners.ts';
import { openDatabase } from '../src/server/db/index.ts';
import { Authorizer } from '../src/server/authz.ts';
import { RunnerRegistry } from '../src/server/runners/index.ts';
import { probeHost } from '../src/runner/index.ts';
import { startTestBerth, waitFor, type TestBerth } from './helpers.ts';

let t: TestBerth;
const tokens: Record<string, string> = {};

const as = (token: string) => async (path: string) => {
  const res = await fetch(`${t.client.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
  return { status: res.status, body: (await res.json()) as any };
};

const runners = async (): Promise<Runner[]> => {
  const res = await t.api('GET', '/api/runners');
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.items;
};
const local = async () => (await runners()).find((r) => r.name === 'local')!;

before(async () => {
  t = await startTestBerth({ runnerHeartbeatMs: 300, taskConcurrency: 3 });
  for (const role of ['viewer', 'member', 'admin', 'owner']) {
    const made = await t.api('POST', '/api/orgs/default/tokens', { role, name: `runners-${role}` });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    tokens[role] = made.body.token;
  }
});
after(async () => {
  await t?.destroy();
});

describe('runners', () => {
  test('the local runner reports its host, backend, load, network and disk, and is ok', async () => {
    const items = await runners();
    assert.equal(items.length, 1);
    const r = items[0]!;
    assert.equal(r.id, `local:${t.dataDir}`);
    assert.equal(r.name, 'local');
    assert.equal(r.host, hostname());
    assert.equal(r.version, VERSION);
    assert.equal(r.backend, t.berth.runner.backend.name);
    assert.ok(['v2', 'v1', 'hybrid'].includes(r.cgroups));
    assert.equal(r.cpus, availableParallelism());
    assert.equal(r.memoryBytes, totalmem());
    assert.deepEqual(r.environments, { running: 0, total: 0 });
    assert.deepEqual(r.tasks, { running: 0, concurrency: 3 });
    assert.deepEqual(r.network, { egressProxy: true, nftables: true, trustedNetworks: [], upstreamProxy: null, noProxy: [] });
    assert.equal(r.diskQuota, process.env.BERTH_DISK_QUOTA !== 'off');
    assert.ok(r.dataDisk.freeBytes > 0 && r.dataDisk.freeBytes <= r.dataDisk.totalBytes, JSON.stringify(r.dataDisk));
    assert.deepEqual(r.health, { status: 'ok', reasons: [] });
    assert.equal(r.heartbeatMs, 300);
    assert.ok(Date.parse(r.startedAt) <= Date.parse(r.lastHeartbeatAt));
    // The same shape /openapi.json documents.
    const spec = (await (await fetch(`${t.client.url}/openapi.json`)).json()) as { paths: Record<string, { get?: { responses?: Record<string, unknown> } }> };
    assert.ok(spec.paths['/api/runners']?.get?.responses?.['200']);
  });

  test('the heartbeat keeps the list current: an environment started shows up within a beat or two', async () => {
    const first = await local();
    const env = await t.api('POST', '/api/orgs/default/environments', { name: 'counted' });
    assert.equal(env.status, 201, JSON.stringify(env.body));
    const seen = await waitFor('the running environment in the runner list', async () => {
      const r = await local();
      return r.environments.running === 1 && r.environments.total === 1 && r;
    });
    assert.ok(Date.parse(seen.lastHeartbeatAt) > Date.parse(first.lastHeartbeatAt));
    assert.equal((await t.api('POST', '/api/orgs/default/environments/counted/stop')).status, 200);
    await waitFor('the stopped environment in the runner list', async () => {
      const r = await local();
      return r.environments.running === 0 && r.environments.total === 1;
    });
    assert.equal((await t.api('DELETE', '/api/orgs/default/environments/counted')).status, 200);
  });

  test('org admins and owners may list runners; members, viewers and callers without a token may not', async () => {
    for (const role of ['admin', 'owner']) assert.equal((await as(tokens[role]!)('/api/runners')).status, 200, role);
    for (const role of ['viewer', 'member']) {
      const res = await as(tokens[role]!)('/api/runners');
      assert.equal(res.status, 403, role);
      assert.match(res.body.error.message, new RegExp(`shown to admins and owners of an org.*your highest role is ${role}`));
      assert.doesNotMatch(JSON.stringify(res.body), /local:|crun|runc/, 'nothing about the runners leaks');
    }
    assert.equal((await fetch(`${t.client.url}/api/runners`)).status, 401);
  });

  test('a runner whose heartbeat stopped is offline, and its last problems are shown', async () => {
    const report: RunnerReport = {
      backend: 'crun',
      cgroups: 'v2',
      cpus: 64,
      memoryBytes: 256 * 1024 ** 3,
      environments: { running: 4, total: 9 },
      tasks: { running: 2, concurrency: 128 },
      network: { egressProxy: true, nftables: false },
      diskQuota: true,
      dataDisk: { freeBytes: 1, totalBytes: 2 },
      problems: ['nftables (nft) is missing: environments with a network cannot start (apt-get install nftables)'],
      heartbeatMs: 5_000,
    };
    // As another host's runner would have written it, its last beat two minutes ago.
    await t.berth.database.db
      .insertInto('runners')
      .values({ id: 'remote:build-7', name: 'build-7', host: 'build-7.internal', version: '0.0.9', report: JSON.stringify(report), started_at: new Date(Date.now() - 3_600_000), heartbeat_at: new Date(Date.now() - 120_000) })
      .execute();
    const items = await runners();
    assert.deepEqual(items.map((r) => r.name), ['build-7', 'local'], 'sorted by name');
    const remote = items[0]!;
    assert.equal(remote.health.status, 'offline');
    assert.match(remote.health.reasons[0]!, /^no heartbeat for 2m\d*s? \(it reports every 5s\)$/);
    assert.match(remote.health.reasons[1]!, /nftables \(nft\) is missing/);
    assert.deepEqual(remote.tasks, { running: 2, concurrency: 128 });
    assert.equal(items[1]!.health.status, 'ok');

    // The CLI: a table with the health, and why a runner is not ok.
    const r = await t.cli(['runner', 'list']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^NAME\s+HOST\s+HEALTH\s+BACKEND/);
    assert.match(r.stdout, new RegExp(`\\nlocal\\s+${hostname().replace(/[.]/g, '\\.')}\\s+ok\\s+${t.berth.runner.backend.name} \\(cgroup`));
    assert.match(r.stdout, /build-7\s+build-7\.internal\s+offline\s+crun \(cgroup v2\)\s+64\s+256G\s+4\/9 running\s+2\/128 running\s+egress proxy, no nft\s+on/);
    assert.match(r.stdout, /\nbuild-7 is offline:\n {2}- no heartbeat for 2m/);
    const json = JSON.parse((await t.cli(['runner', 'ls', '--json'])).stdout) as Runner[];
    assert.deepEqual(json.map((x) => x.id), ['remote:build-7', `local:${t.dataDir}`]);
    const refused = await t.cli(['runner', 'list'], { env: { BERTH_URL: t.client.url, BERTH_TOKEN: tokens.member! } });
    assert.equal(refused.code, 4, 'not allowed');
    assert.match(refused.stderr, /^berth: runners are shown to admins and owners of an org/);
    await t.berth.database.db.deleteFrom('runners').where('id', '=', 'remote:build-7').execute();
  });
});

describe('a runner with a problem', () => {
  test('is degraded with the reason, and after a clean stop it is offline at once', async () => {
    // Any real disk has less free space than this: the probe reports the data directory as low.
    const low = await startTestBerth({ minFreeDiskBytes: 2 ** 50 });
    let closed = false;
    try {
      const res = await low.api('GET', '/api/runners');
      assert.equal(res.status, 200);
      const r = res.body.items[0] as Runner;
      assert.equal(r.health.status, 'degraded');
      assert.match(r.health.reasons.join('\n'), /disk space is low on the data directory: [\d.]+[KMGT]? free of [\d.]+[KMGT]?, below 1024T \(BERTH_MIN_FREE_DISK\)/);

      await low.close();
      closed = true;
      // What another replica would list now, read with the same registry from the same database.
      const database = await openDatabase({ dataDir: low.dataDir, databaseUrl: low.database?.url });
      try {
        const registry = new RunnerRegistry({ db: database.db, authz: new Authorizer(database.db) });
        const { items } = await registry.list({ tokenId: 'test', kind: 'user', userId: null, orgId: null, role: null, instanceAdmin: true });
        assert.equal(items[0]!.health.status, 'offline');
        assert.match(items[0]!.health.reasons[0]!, /^stopped \d+(ms|s) ago$/);
      } finally {
        await database.close();
      }
    } finally {
      // No environments to remove: the data dir and the database go.
      if (!closed) await low.close();
      await low.database?.drop();
      rmSync(low.dataDir, { recursive: true, force: true });
    }
  });
});

describe('the host probe', () => {
  test('names each problem: a missing OCI runtime, a data directory low on space or unreadable', () => {
    const base = { backend: t.berth.runner.backend.name, network: true, diskQuota: true, dataDir: t.dataDir, minFreeDiskBytes: 0 };
    assert.deepEqual(probeHost(base).problems, []);
    assert.deepEqual(probeHost({ ...base, backend: 'no-such-runtime' }).problems, ['the OCI runtime no-such-runtime is missing: environments cannot start (apt-get install no-such-runtime)']);
    assert.match(probeHost({ ...base, minFreeDiskBytes: 2 ** 50 }).problems.join(), /^disk space is low on the data directory/);
    const gone = probeHost({ ...base, dataDir: '/nonexistent/berth-data' });
    assert.match(gone.problems.join(), /^the data directory cannot be read: ENOENT/);
    assert.deepEqual(gone.dataDisk, { freeBytes: 0, totalBytes: 0 });
  });
});
