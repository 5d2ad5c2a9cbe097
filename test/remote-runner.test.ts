// A runner on "another host": its own network namespace with its own veth address and data
// dir, joined to a control plane started with no runner of its own, over the network.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { connect, type AddressInfo } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { WebSocket } from 'ws';
import { startBerth, type ClientConfig, type RunningBerth } from '../src/server/index.ts';
import { checkTerminal, apiAs, IMAGE_DIR, REPO, runCli, TEST_REPOS, waitFor, removeRunnerHostState } from './helpers.ts';
import { freshDatabase, ON_POSTGRES, type TestDatabase } from './postgres.ts';

const tag = `rr${process.pid % 10_000}`;
const NETNS = `brt-${tag}`;
const HOST_IF = `brt${tag}h`;
const RUNNER_IF = `brt${tag}r`;
const octet = (process.pid % 200) + 20;
const HOST_ADDR = `10.231.${octet}.1`;
const RUNNER_ADDR = `10.231.${octet}.2`;

function ip(...args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
}

interface Joined {
  child: ChildProcess;
  stderr: () => string;
  exited: Promise<number | null>;
}

describe('a runner that joins over the network', { timeout: 600_000 }, () => {
  let berth: RunningBerth;
  let database: TestDatabase | undefined;
  let client: ClientConfig;
  let cpDir: string;
  let runnerDir: string;
  let work: string;
  let token: { id: string; token: string };
  let runnerId: string;
  let current: Joined | undefined;
  const api = (method: string, path: string, body?: unknown) => apiAs({ client }, client.token)(method, path, body);
  const cli = (args: string[], input?: string) => runCli(args, { BERTH_DATA_DIR: cpDir }, input);

  /** `berth runner join` inside the runner's namespace, as another host would run it. */
  function join_(secret = token.token, how: string[] = [client.url, '--insecure']): Joined {
    const child = spawn(
      'nsenter',
      [`--net=/run/netns/${NETNS}`, join(REPO, 'bin', 'berth'), 'runner', 'join', ...how, '--data-dir', runnerDir, '--labels', 'site=lab,gpu=false', '--name', 'far-1', '--image-dir', IMAGE_DIR],
      // Its company network is its own setting, read on its host as berth up reads it.
      { env: { ...process.env, BERTH_RUNNER_TOKEN: secret, BERTH_NODE: process.execPath, BERTH_LOG_LEVEL: 'info', FORCE_COLOR: undefined, BERTH_EGRESS_TRUSTED_NETWORKS: '10.99.0.0/16' }, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let err = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    current = { child, stderr: () => err, exited };
    return current;
  }

  /** How the control plane answers a WebSocket to its runner endpoint with this token and protocol version. */
  const refusal = (secret: string, version: string) =>
    new Promise<{ status: number; message: string }>((resolve, reject) => {
      const ws = new WebSocket(`${client.url.replace('http', 'ws')}/api/runners/connect`, { headers: { authorization: `Bearer ${secret}`, 'x-berth-runner-protocol': version } });
      ws.on('open', () => reject(new Error('the control plane let the runner in')));
      ws.on('error', () => {});
      ws.on('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode!, message: (JSON.parse(body) as { error: { message: string } }).error.message }));
      });
    });
  const startOptions = () => ({
    dataDir: cpDir,
    port: 0,
    host: HOST_ADDR,
    noRunner: true,
    databaseUrl: database?.url,
    logger: pino({ level: process.env.BERTH_TEST_LOG ?? 'silent' }),
    sweepIntervalMs: 3_600_000,
    modelEnv: {},
    repos: TEST_REPOS,
    tokenRateLimit: 1_000_000,
    runnerHeartbeatMs: 1000,
  });
  const connected = () =>
    waitFor('the runner to be in the pool', async () => berth.runners.has(runnerId) || undefined, 60_000).catch((err: Error) => {
      throw new Error(`${err.message}; the runner said:\n${current?.stderr().slice(-3000)}`);
    });
  /** Back and reconciled: its environment is running again (not lost). */
  const reconciled = async () => {
    await connected();
    await waitFor('the environment to be running again', async () => (await api('GET', '/api/orgs/default/environments/far')).body.state === 'running', 30_000);
  };

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'berth-remote-'));
    cpDir = join(work, 'control-plane');
    runnerDir = join(work, 'runner');
    mkdirSync(cpDir);
    spawnSync('ip', ['netns', 'del', NETNS]);
    ip('netns', 'add', NETNS);
    ip('link', 'add', HOST_IF, 'type', 'veth', 'peer', 'name', RUNNER_IF);
    ip('link', 'set', RUNNER_IF, 'netns', NETNS);
    ip('addr', 'add', `${HOST_ADDR}/30`, 'dev', HOST_IF);
    ip('link', 'set', HOST_IF, 'up');
    ip('-n', NETNS, 'addr', 'add', `${RUNNER_ADDR}/30`, 'dev', RUNNER_IF);
    ip('-n', NETNS, 'link', 'set', RUNNER_IF, 'up');
    ip('-n', NETNS, 'link', 'set', 'lo', 'up');

    database = ON_POSTGRES ? await freshDatabase() : undefined;
    berth = await startBerth(startOptions());
    client = JSON.parse(readFileSync(berth.clientConfigPath, 'utf8')) as ClientConfig;
  });

  after(async () => {
    current?.child.kill('SIGKILL');
    await current?.exited;
    await removeRunnerHostState(runnerDir);
    await berth?.close();
    await database?.drop();
    spawnSync('ip', ['link', 'del', HOST_IF]);
    spawnSync('ip', ['netns', 'del', NETNS]);
    rmSync(work, { recursive: true, force: true });
    // The cleanup runner's helper build may still write its cache for a moment.
    await new Promise((r) => setTimeout(r, 1000));
    rmSync(work, { recursive: true, force: true });
  });

  it('is refused without a valid runner token, and runner tokens are for instance administrators', async () => {
    assert.deepEqual(await refusal('berth_runner_nope', '1'), { status: 401, message: 'this runner token is not valid (unknown or revoked): ask an instance administrator for a new one (`berth runner token create`)' });
    const bad = await api('POST', '/api/runners/tokens', { labels: { 'Bad Key': 'x' } });
    assert.equal(bad.status, 400);
    const made = await api('POST', '/api/runners/tokens', { labels: { zone: 'a' }, name: 'lab runners' });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    assert.match(made.body.token, /^berth_runner_/);
    token = { id: made.body.id, token: made.body.token };
    // A runner too old for this control plane is told so before it joins.
    const old = await refusal(token.token, '0');
    assert.equal(old.status, 426);
    assert.match(old.message, /protocol 0, older than this control plane takes \(1 and up\): upgrade Berth on the runner's host/);
    const listed = await api('GET', '/api/runners/tokens');
    assert.equal(listed.status, 200);
    assert.ok(!JSON.stringify(listed.body).includes(token.token), 'the token is shown once only');
    assert.deepEqual(listed.body.items.find((t: { id: string }) => t.id === token.id).labels, { zone: 'a' });
    const audit = await api('GET', '/api/orgs/default/audit?action=runner_token.create');
    assert.ok(JSON.stringify(audit.body).includes(token.id), 'the creation is in the audit log');
    assert.ok(!JSON.stringify(audit.body).includes(token.token), 'the token is not');
  });

  it('registers with its labels and capacity', async () => {
    join_();
    runnerId = await waitFor('the runner id file', async () => (existsSync(join(runnerDir, 'runner-id')) ? readFileSync(join(runnerDir, 'runner-id'), 'utf8').trim() : undefined), 120_000);
    await connected();
    const { body } = await api('GET', '/api/runners');
    const listed = body.items.find((r: { id: string }) => r.id === runnerId);
    assert.ok(listed, JSON.stringify(body));
    assert.equal(listed.name, 'far-1');
    assert.equal(listed.health.status, 'ok', JSON.stringify(listed.health));
    assert.ok(listed.cpus > 0 && listed.memoryBytes > 0 && listed.dataDisk.freeBytes > 0, JSON.stringify(listed));
    assert.deepEqual(listed.network.trustedNetworks, ['10.99.0.0/16'], 'its own trusted networks, from its host');
    const row = await berth.database.db.selectFrom('runners').select(['labels', 'token_id']).where('id', '=', runnerId).executeTakeFirstOrThrow();
    // The token's labels and the runner's own.
    assert.deepEqual(row.labels, { site: 'lab', gpu: 'false', zone: 'a' });
    assert.equal(row.token_id, token.id);
    // Its heartbeat (every second here, as the control plane tells it) keeps its report fresh.
    const before = listed.lastHeartbeatAt;
    await waitFor('a heartbeat', async () => (await api('GET', '/api/runners')).body.items.find((r: { id: string }) => r.id === runnerId).lastHeartbeatAt !== before, 10_000);
  });

  it('runs an environment placed on it: exec with stdin, 10 MB through and back, and file copies', async () => {
    const created = await api('POST', '/api/orgs/default/environments', { name: 'far' });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const row = await berth.database.db.selectFrom('environments').select('runner_id').where('name', '=', 'far').executeTakeFirstOrThrow();
    assert.equal(row.runner_id, runnerId);
    // Its files are on the runner's host, none on the control plane's.
    assert.ok(existsSync(join(runnerDir, 'environments', created.body.id)));
    assert.ok(!existsSync(join(cpDir, 'environments')));

    const r = await api('POST', '/api/orgs/default/environments/far/exec', { cmd: ['sh', '-c', 'echo hi; cat'], stdin: 'through the runner\n' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.stdout, 'hi\nthrough the runner\n');
    assert.equal(r.body.exitCode, 0);

    const big = randomBytes(7.5 * 1024 * 1024).toString('base64'); // 10 MB of text
    const round = await cli(['env', 'exec', '-i', 'far', '--', 'sh', '-c', 'cat; echo done >&2'], big);
    assert.equal(round.code, 0, round.stderr);
    assert.equal(round.stdout.length, big.length);
    assert.equal(createHash('sha256').update(round.stdout).digest('hex'), createHash('sha256').update(big).digest('hex'));
    assert.match(round.stderr, /done/);

    const local = join(work, 'in.txt');
    writeFileSync(local, 'copied across hosts\n');
    const cpIn = await cli(['env', 'cp', local, 'far:/tmp/in.txt']);
    assert.equal(cpIn.code, 0, cpIn.stderr);
    const cat = await api('POST', '/api/orgs/default/environments/far/exec', { cmd: ['cat', '/tmp/in.txt'] });
    assert.equal(cat.body.stdout, 'copied across hosts\n');
    const out = join(work, 'out');
    mkdirSync(out);
    const cpOut = await cli(['env', 'cp', 'far:/tmp/in.txt', out]);
    assert.equal(cpOut.code, 0, cpOut.stderr);
    assert.equal(readFileSync(join(out, 'in.txt'), 'utf8'), 'copied across hosts\n');
  });

  it('gives a terminal through it: its size at the start, a resize, a signal', async () => {
    await checkTerminal(client.url, client.token, 'far');
  });

  it("enforces the control plane's egress policy, pushed on change, and reports the requests back", async () => {
    const curl = (host: string) => api('POST', '/api/orgs/default/environments/far/exec', { cmd: ['sh', '-c', `curl -s -o /dev/null -w '%{http_code}' -m 10 http://${host}/ || true`] });
    const events = async () => (await api('GET', '/api/orgs/default/environments/far/network?limit=100')).body.items as { host: string; allowed: boolean; rule: string }[];
    await curl('allowed.example');
    const denied = await waitFor('the denial to reach the control plane', async () => (await events()).find((e) => e.host === 'allowed.example'), 20_000);
    assert.equal(denied.allowed, false);
    assert.match(denied.rule, /^deny:/);
    const set = await api('PATCH', '/api/orgs/default/policies/environments/far', { allowDomains: ['allowed.example'] });
    assert.equal(set.status, 200, JSON.stringify(set.body));
    // Within a push or two the runner's proxy lets it past the policy, to name resolution (there is no DNS here).
    const passed = await waitFor('the new policy to reach the runner', async () => {
      await curl('allowed.example');
      return (await events()).find((e) => e.host === 'allowed.example' && e.rule === 'error:resolve');
    }, 20_000);
    assert.equal(passed.host, 'allowed.example');
  });

  it("relays a socket the control plane serves into the environment (the LLM gateway's path)", async () => {
    const env = await api('GET', '/api/orgs/default/environments/far');
    const remote = berth.runners.get(runnerId);
    const stop = await remote.serveSocket(env.body.id, 'echo.sock', (c) => {
      c.on('data', (d: Buffer) => c.write(`echo:${d}`));
      c.on('end', () => c.end());
    });
    const script = "const s=require('net').connect('/.berth/agent/echo.sock');s.on('connect',()=>s.write('ping'));s.on('data',d=>{process.stdout.write(d);s.end()})";
    const r = await api('POST', '/api/orgs/default/environments/far/exec', { cmd: ['node', '-e', script] });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.stdout, 'echo:ping', JSON.stringify(r.body));
    await stop();
    const gone = await api('POST', '/api/orgs/default/environments/far/exec', { cmd: ['sh', '-c', 'test -e /.berth/agent/echo.sock && echo there || echo gone'] });
    assert.equal(gone.body.stdout, 'gone\n');
  });

  it('treats what a runner sends as hostile: no borrowed ids, no other runners\' environments, no malformed messages', async () => {
    const made = await api('POST', '/api/runners/tokens', { name: 'impostor' });
    const far = (await api('GET', '/api/orgs/default/environments/far')).body.id as string;
    const impostor = (hello: Record<string, unknown>) =>
      new Promise<{ ws: WebSocket; first: Promise<unknown>; closed: Promise<{ code: number; reason: string }> }>((resolve, reject) => {
        const ws = new WebSocket(`${client.url.replace('http', 'ws')}/api/runners/connect`, { headers: { authorization: `Bearer ${made.body.token}`, 'x-berth-runner-protocol': '1' } });
        const first = new Promise((r) => ws.once('message', (d) => r(JSON.parse(String(d)))));
        const closed = new Promise<{ code: number; reason: string }>((r) => ws.once('close', (code, reason) => r({ code, reason: String(reason) })));
        ws.once('open', () => {
          ws.send(JSON.stringify(hello));
          resolve({ ws, first, closed });
        });
        ws.once('error', reject);
      });
    const probe = { backend: 'crun', cgroups: 'v2', cpus: 1, memoryBytes: 1, network: { egressProxy: true, nftables: true, trustedNetworks: [], upstreamProxy: null, noProxy: [] }, diskQuota: false, dataDisk: { freeBytes: 1, totalBytes: 1 }, problems: [] };
    const hello = { t: 'hello', name: 'impostor', host: 'x', version: '0', labels: {}, isolation: ['crun'], probe };
    // berth up's own runner's id, and the joined runner's (whose token is valid): refused.
    assert.equal((await (await impostor({ ...hello, id: 'local:/var/lib/berth' })).closed).code, 1008);
    const taken = await (await impostor({ ...hello, id: runnerId })).closed;
    assert.equal(taken.code, 4409);
    assert.match(taken.reason, /registered with another runner token/);
    assert.ok(berth.runners.has(runnerId), 'the real runner stays');
    // A runner of its own may not write another's network log.
    const own = await impostor({ ...hello, id: 'rnr_0000000000000000impostor' });
    assert.equal(((await own.first) as { t: string }).t, 'welcome');
    const event = { environmentId: far, at: new Date().toISOString(), kind: 'http', host: 'forged.example', port: 80, method: 'GET', path: '/', allowed: true, rule: 'allow:forged', status: 200, bytesUp: 0, bytesDown: 0, durationMs: 1 };
    own.ws.send(JSON.stringify({ t: 'network', events: [event] }));
    own.ws.send(JSON.stringify({ t: 'exit', channel: 1, status: { exitCode: 0, timedOut: false, durationMs: 1 } }));
    own.ws.send(JSON.stringify({ t: 'nonsense' }));
    assert.equal((await own.closed).code, 1008);
    await new Promise((r) => setTimeout(r, 500));
    const events = (await api('GET', '/api/orgs/default/environments/far/network?limit=100')).body.items as { host: string }[];
    assert.ok(!events.some((e) => e.host === 'forged.example'));
    await waitFor('the impostor to leave the pool', async () => !berth.runners.has('rnr_0000000000000000impostor'), 10_000);
    // Without a runner of its own, this control plane keeps no images and says so.
    const images = await api('GET', '/api/images');
    assert.equal(images.status, 409);
    assert.match(images.body.error.message, /no runner of its own/);
  });

  it('killed, it leaves the pool and its environment is lost; back, it reconciles and serves again', async () => {
    current!.child.kill('SIGKILL');
    await current!.exited;
    await waitFor('the runner to leave the pool', async () => !berth.runners.has(runnerId), 30_000);
    const refused = await api('POST', '/api/orgs/default/environments/far/exec', { cmd: ['true'] });
    assert.equal(refused.status, 503, JSON.stringify(refused.body));
    assert.match(refused.body.error.message, /not connected: it is lost until that runner is back/);
    await waitFor('the runner to be listed offline', async () => {
      const { body } = await api('GET', '/api/runners');
      return body.items.find((r: { id: string }) => r.id === runnerId).health.status === 'offline';
    }, 10_000);

    join_();
    await reconciled();
    const r = await api('POST', '/api/orgs/default/environments/far/exec', { cmd: ['sh', '-c', 'echo again; cat /tmp/in.txt'] });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.stdout, 'again\ncopied across hosts\n');
    const env = await api('GET', '/api/orgs/default/environments/far');
    assert.equal(env.body.state, 'running');
  });

  it('comes back by itself when the control plane restarts, logging its backoff', async () => {
    const port = Number(new URL(client.url).port);
    await berth.close();
    await new Promise((r) => setTimeout(r, 1500));
    berth = await startBerth({ ...startOptions(), port });
    await reconciled();
    assert.match(current!.stderr(), /not connected to http:\/\/[^ ]+: trying again in \d+\.\d s/);
    const r = await api('POST', '/api/orgs/default/environments/far/exec', { cmd: ['echo', 'still here'] });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.stdout, 'still here\n');
  });

  it('over TLS, trusts the system CAs and --ca, and nothing else', async () => {
    // A TLS front for the control plane, as a reverse proxy would be, with a certificate from a CA of the test's own.
    const tls = join(work, 'tls');
    mkdirSync(tls);
    const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: tls, stdio: 'pipe' });
    ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=berth test CA');
    ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'cp.key', '-out', 'cp.csr', '-subj', '/CN=control plane');
    writeFileSync(join(tls, 'ext'), `subjectAltName=IP:${HOST_ADDR}\n`);
    ssl('x509', '-req', '-in', 'cp.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'cp.pem', '-days', '1', '-extfile', 'ext');
    const front = createTlsServer({ cert: readFileSync(join(tls, 'cp.pem')), key: readFileSync(join(tls, 'cp.key')) }, (socket) => {
      const upstream = connect(Number(new URL(client.url).port), HOST_ADDR);
      socket.pipe(upstream).pipe(socket);
      socket.on('error', () => upstream.destroy());
      upstream.on('error', () => socket.destroy());
    });
    await new Promise<void>((r) => front.listen(0, HOST_ADDR, r));
    const url = `https://${HOST_ADDR}:${(front.address() as AddressInfo).port}`;
    try {
      current!.child.kill('SIGTERM');
      await current!.exited;
      // Its certificate is from a CA the runner was not given: it does not join, and says why as it retries.
      const untrusted = join_(token.token, [url]);
      await waitFor('the runner to say why', async () => /"reason":"connection closed \(1006: unable to verify the first certificate[^"]*","msg":"not connected to https:/.test(untrusted.stderr()), 20_000).catch((err: Error) => {
        throw new Error(`${err.message}; it said:\n${untrusted.stderr().slice(-2000)}`);
      });
      assert.ok(!berth.runners.has(runnerId));
      untrusted.child.kill('SIGTERM');
      await untrusted.exited;
      join_(token.token, [url, '--ca', join(tls, 'ca.pem')]);
      await reconciled();
      const r = await api('POST', '/api/orgs/default/environments/far/exec', { cmd: ['echo', 'over tls'] });
      assert.equal(r.body.stdout, 'over tls\n');
    } finally {
      front.close();
    }
  });

  it('a revoked token is refused on the next connect: the runner says why and exits non-zero', async () => {
    current!.child.kill('SIGTERM');
    await current!.exited;
    const revoked = await cli(['runner', 'token', 'revoke', token.id]);
    assert.equal(revoked.code, 0, revoked.stderr);
    const again = join_();
    const code = await again.exited;
    assert.equal(code, 4, again.stderr().slice(-2000));
    assert.match(again.stderr(), /refused this runner: the control plane answered 401: this runner token is not valid/);
    assert.ok(!berth.runners.has(runnerId));
  });

  it('with a new token it comes back as itself; a token revoked while connected cuts it off', async () => {
    const made = await cli(['runner', 'token', 'create', '--name', 'rotated']);
    assert.equal(made.code, 0, made.stderr);
    const rotated = made.stdout.trim();
    const back = join_(rotated);
    await reconciled();
    const r = await api('POST', '/api/orgs/default/environments/far/exec', { cmd: ['cat', '/tmp/in.txt'] });
    assert.equal(r.body.stdout, 'copied across hosts\n', JSON.stringify(r.body));
    const { body } = await api('GET', '/api/runners/tokens');
    const id = body.items.find((t: { name: string | null }) => t.name === 'rotated').id;
    assert.equal((await cli(['runner', 'token', 'revoke', id])).code, 0);
    assert.equal(await back.exited, 4, back.stderr().slice(-2000));
    assert.match(back.stderr(), /refused this runner: connection closed \(4401: this runner token was revoked\)/);
    await waitFor('the runner to leave the pool', async () => !berth.runners.has(runnerId), 10_000);
  });
});
