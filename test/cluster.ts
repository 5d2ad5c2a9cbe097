// A Berth cluster on one machine, for tests and bench/cluster: control-plane replicas on one
// PostgreSQL (no runner of their own), and runners as other hosts, each in its own network
// namespace with its own veth address and data dir, joined over the network with a token.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { startBerth, type ClientConfig, type RunningBerth, type StartOptions } from '../src/server/index.ts';
import { apiAs, IMAGE_DIR, REPO, removeRunnerHostState, TEST_REPOS, waitFor } from './helpers.ts';
import { freshDatabase, type TestDatabase } from './postgres.ts';

export interface Replica {
  berth: RunningBerth;
  client: ClientConfig;
  dataDir: string;
  api<T = any>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
}

export interface JoinedRunnerProcess {
  name: string;
  /** The replica it dialled. */
  replica: number;
  child: ChildProcess;
  log: () => string;
  exited: Promise<number | null>;
}

export interface Cluster {
  database: TestDatabase;
  replicas: Replica[];
  runners: JoinedRunnerProcess[];
  /** Starts runner `i` (again, after a kill): its namespace and data dir are kept. */
  startRunner(i: number): JoinedRunnerProcess;
  /** Waits until every runner started is registered and connected to its replica. */
  connected(): Promise<string[]>;
  close(): Promise<void>;
}

function ip(...args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
}

/**
 * `replicas` control planes and `runners` joined runners, runner i dialling replica
 * i % replicas over its namespace's veth pair. Replicas share the database and the two keys
 * (secrets and audit), as docs/deploy.md asks of a deployment.
 */
export async function startCluster(o: { replicas: number; runners: number; labels?: (i: number) => string; start?: Partial<StartOptions> }): Promise<Cluster> {
  const tag = `c${process.pid % 1000}`;
  const work = mkdtempSync(join(tmpdir(), 'berth-cluster-'));
  const database = await freshDatabase();
  const octet = (process.pid % 150) + 50;
  const namespaces: string[] = [];
  const hostAddr = (i: number) => `10.233.${octet}.${4 * i + 1}`;
  for (let i = 0; i < o.runners; i++) {
    const ns = `brt-${tag}-${i}`;
    spawnSync('ip', ['netns', 'del', ns]);
    ip('netns', 'add', ns);
    namespaces.push(ns);
    ip('link', 'add', `brt${tag}h${i}`, 'type', 'veth', 'peer', 'name', `brt${tag}r${i}`);
    ip('link', 'set', `brt${tag}r${i}`, 'netns', ns);
    ip('addr', 'add', `${hostAddr(i)}/30`, 'dev', `brt${tag}h${i}`);
    ip('link', 'set', `brt${tag}h${i}`, 'up');
    ip('-n', ns, 'addr', 'add', `10.233.${octet}.${4 * i + 2}/30`, 'dev', `brt${tag}r${i}`);
    ip('-n', ns, 'link', 'set', `brt${tag}r${i}`, 'up');
    ip('-n', ns, 'link', 'set', 'lo', 'up');
  }

  const replicas: Replica[] = [];
  for (let r = 0; r < o.replicas; r++) {
    const dataDir = join(work, `replica-${r}`);
    mkdirSync(dataDir, { recursive: true });
    // One deployment: the second replica gets the first one's keys.
    if (r > 0) for (const key of ['secret.key', 'audit.key']) if (existsSync(join(replicas[0]!.dataDir, key))) copyFileSync(join(replicas[0]!.dataDir, key), join(dataDir, key));
    const berth = await startBerth({
      dataDir,
      port: 0,
      // Every veth address of the host side: runners dial the one on their own link.
      host: '0.0.0.0',
      noRunner: true,
      databaseUrl: database.url,
      logger: pino({ level: process.env.BERTH_TEST_LOG ?? 'silent' }),
      sweepIntervalMs: 3_600_000,
      modelEnv: {},
      repos: TEST_REPOS,
      tokenRateLimit: 1_000_000,
      runnerHeartbeatMs: 1_000,
      ...o.start,
    });
    const client = JSON.parse(readFileSync(berth.clientConfigPath, 'utf8')) as ClientConfig;
    replicas.push({ berth, client, dataDir, api: (m, p, b) => apiAs({ client }, client.token)(m, p, b) });
  }
  const created = await replicas[0]!.api('POST', '/api/runners/tokens', { name: 'cluster' });
  if (created.status !== 201 && created.status !== 200) throw new Error(`runner token: ${created.status} ${JSON.stringify(created.body)}`);
  const token = created.body.token as string;

  const runners: JoinedRunnerProcess[] = [];
  const startRunner = (i: number): JoinedRunnerProcess => {
    const replica = i % replicas.length;
    const port = new URL(replicas[replica]!.client.url).port;
    const name = `runner-${i}`;
    const child = spawn(
      'nsenter',
      [`--net=/run/netns/${namespaces[i]}`, join(REPO, 'bin', 'berth'), 'runner', 'join', `http://${hostAddr(i)}:${port}`, '--insecure', '--data-dir', join(work, name), '--name', name, '--image-dir', IMAGE_DIR, ...(o.labels ? ['--labels', o.labels(i)] : [])],
      { env: { ...process.env, BERTH_RUNNER_TOKEN: token, BERTH_NODE: process.execPath, BERTH_LOG_LEVEL: 'info', FORCE_COLOR: undefined }, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let log = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (log = (log + d).slice(-20_000)));
    const joined = { name, replica, child, log: () => log, exited: new Promise<number | null>((r) => child.on('exit', (code) => r(code))) };
    runners[i] = joined;
    return joined;
  };
  for (let i = 0; i < o.runners; i++) startRunner(i);

  const connected = async () => {
    const ids: string[] = [];
    for (const runner of runners) {
      const id = await waitFor(`${runner.name} to join`, async () => {
        const rows = await replicas[0]!.berth.database.db.selectFrom('runners').select(['id', 'name']).where('name', '=', runner.name).execute();
        const row = rows[0];
        return row && replicas[runner.replica]!.berth.runners.has(row.id) ? row.id : undefined;
      }, 120_000).catch((err: Error) => {
        throw new Error(`${err.message}; it said:\n${runner.log().slice(-3000)}`);
      });
      ids.push(id);
    }
    return ids;
  };

  return {
    database,
    replicas,
    runners,
    startRunner,
    connected,
    async close() {
      for (const r of runners) r.child.kill('SIGTERM');
      await Promise.all(runners.map((r) => Promise.race([r.exited, new Promise((res) => setTimeout(res, 10_000))])));
      for (const r of runners) r.child.kill('SIGKILL');
      // What each runner made on its host: environments (containers, mounts, disks) and namespaces.
      for (const r of runners) await removeRunnerHostState(join(work, r.name));
      for (const replica of replicas) await replica.berth.close().catch(() => {});
      for (let i = 0; i < namespaces.length; i++) {
        spawnSync('ip', ['link', 'del', `brt${tag}h${i}`]);
        spawnSync('ip', ['netns', 'del', namespaces[i]!]);
      }
      await database.drop().catch(() => {});
      rmSync(work, { recursive: true, force: true });
    },
  };
}
