// A runner held by one control-plane replica, used through another on the same PostgreSQL
// (issue #14): exec, cp, a terminal and stop/start go through the replica relay, which
// only a replica of the deployment (its HMAC under the shared secret key) may open.
import assert from 'node:assert/strict';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { WebSocket } from 'ws';
import { joinControlPlane } from '../src/runner/remote/host.ts';
import { startBerth, type RunningBerth } from '../src/server/index.ts';
import type { ClientConfig } from '../src/shared/client-config.ts';
import { checkTerminal, apiAs, IMAGE_DIR, runCli, startTestBerth, TEST_REPOS, waitFor, type TestBerth } from './helpers.ts';
import { freshDatabase, ON_POSTGRES } from './postgres.ts';

const REPLICAS = ON_POSTGRES ? false : 'replicas need PostgreSQL: run with BERTH_TEST_DATABASE=postgres';

/** How a replica answers a WebSocket to the relay of `runnerId` with this authorization. */
function relayAnswer(url: string, runnerId: string, authorization: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url.replace('http', 'ws')}/api/runners/${encodeURIComponent(runnerId)}/relay`, { headers: { authorization } });
    ws.on('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.on('open', () => {
      resolve(101);
      ws.close();
    });
    ws.on('error', reject);
  });
}

describe('a runner used through another replica', { skip: REPLICAS, timeout: 300_000 }, () => {
  let a: TestBerth;
  let b: RunningBerth;
  let bDir: string;
  let bClient: ClientConfig;
  const work = mkdtempSync(join(tmpdir(), 'berth-relay-'));
  const cli = (args: string[], input?: string) => runCli(args, { BERTH_DATA_DIR: bDir }, input);
  const api = (method: string, path: string, body?: unknown) => apiAs({ client: bClient }, bClient.token)(method, path, body);

  before(async () => {
    const database = await freshDatabase();
    a = await startTestBerth({ database });
    // Replica B: no runner of its own, the same database and the same keys (docs/deploy.md).
    bDir = mkdtempSync(join(tmpdir(), 'berth-relay-b-'));
    for (const f of readdirSync(a.dataDir).filter((f) => f.endsWith('.key'))) copyFileSync(join(a.dataDir, f), join(bDir, f));
    b = await startBerth({ dataDir: bDir, noRunner: true, port: 0, databaseUrl: database.url, imageDir: IMAGE_DIR, logger: pino({ level: process.env.BERTH_TEST_LOG ?? 'silent' }), sweepIntervalMs: 3_600_000, modelEnv: {}, repos: TEST_REPOS, tokenRateLimit: 1_000_000 });
    bClient = JSON.parse(readFileSync(b.clientConfigPath, 'utf8')) as ClientConfig;
    const made = await a.api('POST', '/api/orgs/default/environments', { name: 'far' });
    assert.equal(made.status, 201, JSON.stringify(made.body));
  });

  after(async () => {
    // A was closed by the last test: its sandboxes are removed through its runner, the rest by hand.
    const rows = (await b?.database.db.selectFrom('environments').select('id').where('state', '<>', 'deleted').execute()) ?? [];
    for (const { id } of rows) await a?.berth.runner.remove(id).catch(() => {});
    await b?.close();
    await a?.close();
    await a?.database?.drop();
    if (a) rmSync(a.dataDir, { recursive: true, force: true });
    rmSync(bDir, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  });

  it('records which replica holds the runner', async () => {
    const row = await b.database.db.selectFrom('runners').select(['replica_url']).where('id', '=', a.berth.runner.id).executeTakeFirstOrThrow();
    assert.equal(row.replica_url, a.berth.url);
    assert.equal(b.runners.has(a.berth.runner.id), false);
  });

  it('places a new environment through a replica that holds no runner, on a runner another replica holds', async () => {
    const made = await api('POST', '/api/orgs/default/environments', { name: 'made-on-b' });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    assert.equal(made.body.runnerId, a.berth.runner.id);
    const r = await api('POST', '/api/orgs/default/environments/made-on-b/exec', { cmd: ['uname', '-n'] });
    assert.equal(r.body.stdout.trim(), 'made-on-b');
    assert.equal((await api('DELETE', '/api/orgs/default/environments/made-on-b')).status, 200);
  });

  it('runs commands through it, with a few MB of stdin and stdout', async () => {
    const r = await api('POST', '/api/orgs/default/environments/far/exec', { cmd: ['sh', '-c', 'echo hi; cat'], stdin: 'through the relay\n' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.stdout, 'hi\nthrough the relay\n');
    const big = randomBytes(3 * 1024 * 1024).toString('base64'); // 4 MB of text
    const started = performance.now();
    const round = await cli(['env', 'exec', '-i', 'far', '--', 'sh', '-c', 'cat; echo done >&2'], big);
    console.log(`4 MB round trip through replica B's relay: ${Math.round(performance.now() - started)} ms`);
    assert.equal(round.code, 0, round.stderr);
    assert.equal(createHash('sha256').update(round.stdout).digest('hex'), createHash('sha256').update(big).digest('hex'));
    assert.match(round.stderr, /done/);
  });

  it('copies files in and out through it', async () => {
    const local = join(work, 'in.txt');
    writeFileSync(local, 'copied across replicas\n');
    const cpIn = await cli(['env', 'cp', local, 'far:/tmp/in.txt']);
    assert.equal(cpIn.code, 0, cpIn.stderr);
    const cat = await a.api('POST', '/api/orgs/default/environments/far/exec', { cmd: ['cat', '/tmp/in.txt'] });
    assert.equal(cat.body.stdout, 'copied across replicas\n');
    const out = join(work, 'out');
    mkdirSync(out);
    const cpOut = await cli(['env', 'cp', 'far:/tmp/in.txt', out]);
    assert.equal(cpOut.code, 0, cpOut.stderr);
    assert.equal(readFileSync(join(out, 'in.txt'), 'utf8'), 'copied across replicas\n');
  });

  it('gives a terminal through it: its size, a resize, a signal', async () => {
    await checkTerminal(bClient.url, bClient.token, 'far');
  });

  it('stops and starts it through it', async () => {
    const stop = await cli(['env', 'stop', 'far']);
    assert.equal(stop.code, 0, stop.stderr);
    // Its processes are gone on the runner's host, as replica A sees it.
    assert.equal((await a.api('GET', '/api/orgs/default/environments/far')).body.state, 'stopped');
    assert.notEqual(await a.berth.runner.status((await a.api('GET', '/api/orgs/default/environments/far')).body.id), 'running');
    const start = await cli(['env', 'start', 'far']);
    assert.equal(start.code, 0, start.stderr);
    const r = await api('POST', '/api/orgs/default/environments/far/exec', { cmd: ['echo', 'back'] });
    assert.equal(r.body.stdout, 'back\n');
    const shown = await api('GET', '/api/orgs/default/environments/far');
    assert.equal(shown.body.state, 'running');
    assert.ok(shown.body.usage, 'usage read through the relay');
  });

  it('reaches a runner that joined another replica, through that replica', async () => {
    const made = await a.api('POST', '/api/runners/tokens', { name: 'relay-test', labels: { site: 'joined' } });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const runnerDir = join(work, 'joined-runner');
    const joined = await joinControlPlane({ url: a.berth.url, token: made.body.token, dataDir: runnerDir, imageDir: IMAGE_DIR, labels: {}, name: 'joined-1', logger: pino({ level: 'silent' }), onRefused: (why) => assert.fail(why) });
    try {
      await waitFor('the runner to join replica A', async () => a.berth.runners.has(joined.id), 30_000);
      const row = await b.database.db.selectFrom('runners').select(['replica_url']).where('id', '=', joined.id).executeTakeFirstOrThrow();
      assert.equal(row.replica_url, a.berth.url);
      const env = await a.api('POST', '/api/orgs/default/environments', { name: 'joined', runnerLabels: { site: 'joined' } });
      assert.equal(env.status, 201, JSON.stringify(env.body));
      // B → A's relay → A's connection to the runner → the sandbox, and back.
      const big = randomBytes(1024 * 1024).toString('base64');
      const round = await cli(['env', 'exec', '-i', 'joined', '--', 'sh', '-c', 'cat; hostname >&2'], big);
      assert.equal(round.code, 0, round.stderr);
      assert.equal(round.stdout, big);
      assert.equal((await cli(['env', 'stop', 'joined'])).code, 0);
      assert.equal((await cli(['env', 'start', 'joined'])).code, 0);
      const r = await api('POST', '/api/orgs/default/environments/joined/exec', { cmd: ['echo', 'joined'] });
      assert.equal(r.body.stdout, 'joined\n');
      assert.equal((await cli(['env', 'rm', 'joined'])).code, 0);
    } finally {
      await joined.close();
    }
    // It left replica A: nobody is recorded as holding it.
    await waitFor('the replica to be cleared', async () => (await b.database.db.selectFrom('runners').select(['replica_url']).where('id', '=', joined.id).executeTakeFirstOrThrow()).replica_url === null, 20_000);
    rmSync(runnerDir, { recursive: true, force: true });
  });

  it('opens the relay only to a replica of the deployment', async () => {
    const id = a.berth.runner.id;
    const key = Buffer.from(readFileSync(join(a.dataDir, 'secret.key'), 'utf8').trim(), 'base64');
    const credential = (runnerId: string) => createHmac('sha256', key).update(`berth:replica-relay\0${runnerId}`).digest('base64url');
    assert.equal(await relayAnswer(a.berth.url, id, `Bearer ${credential(id)}`), 101);
    assert.equal(await relayAnswer(a.berth.url, id, 'Bearer not-the-credential'), 401);
    assert.equal(await relayAnswer(a.berth.url, id, `Bearer ${a.client.token}`), 401);
    assert.equal(await relayAnswer(a.berth.url, id, ''), 401);
    // One runner's credential does not open another's relay; a key of another deployment opens none.
    assert.equal(await relayAnswer(a.berth.url, id, `Bearer ${credential('rnr_0123456789abcdef0123')}`), 401);
    const stranger = createHmac('sha256', randomBytes(32)).update(`berth:replica-relay\0${id}`).digest('base64url');
    assert.equal(await relayAnswer(a.berth.url, id, `Bearer ${stranger}`), 401);
    // A replica that does not hold the runner does not serve it (never relays on).
    assert.equal(await relayAnswer(b.url, id, `Bearer ${credential(id)}`), 404);
  });

  it('says the environment is lost once no replica holds its runner', async () => {
    await a.close();
    const r = await waitFor('the relay to drop', async () => {
      const answer = await api('POST', '/api/orgs/default/environments/far/exec', { cmd: ['true'] });
      return answer.status !== 200 && answer;
    }, 20_000);
    assert.equal(r.status, 503, JSON.stringify(r.body));
    assert.match(r.body.error.message, /lives on runner 'local:.*', which is not connected: it is lost until that runner is back/);
  });
});
