// Shared test harness: a real `berth up` in a temp data dir, and the real CLI.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { WebSocket } from 'ws';
import type { OidcConfig } from '../src/server/oidc/index.ts';
import { startBerth, type ClientConfig, type RunningBerth, type StartOptions } from '../src/server/index.ts';
import { freshDatabase, ON_POSTGRES, type TestDatabase } from './postgres.ts';
import { openDatabase } from '../src/server/db/index.ts';
import { SECRET_KEY_FILE } from '../src/server/secrets/crypto.ts';
import { AUDIT_KEY_FILE } from '../src/server/audit/key.ts';
import type { RepoAccessConfig } from '../src/forges/index.ts';
import { ImageStore, LocalRunner, type RunningCommand } from '../src/runner/index.ts';
import { netnsPrefix } from '../src/runner/network/netns.ts';
import { FakeRunner } from './fakes/fake-runner.ts';

export const REPO = new URL('..', import.meta.url).pathname.replace(/\/$/, '');
/** One image cache for every test file, so the default image is built once per machine. */
export const IMAGE_DIR = process.env.BERTH_IMAGE_DIR ?? join(REPO, '.cache', 'images');

/**
 * What the tests' instance administrator allows: repositories the tests make under the temp
 * directory, and the fake git, GitHub and GitLab servers and the scripted model servers,
 * which listen on 127.0.0.1.
 */
export const TEST_REPOS: RepoAccessConfig = { localRepos: [tmpdir()], allowedGitHosts: ['127.0.0.1'], allowedModelHosts: ['127.0.0.1'] };

/**
 * pg's warning that a client was given a query while one was running (deprecated; an error in
 * pg@9): the code sent queries at once on a connection it holds. It fails the test file, with
 * where it was sent from; pg warns once per process, at the first. Said at exit rather than
 * thrown from a close, which would skip the rest of an after hook and leave its servers running.
 */
const concurrentQueryWarnings: Error[] = [];
process.on('warning', (w) => {
  if (w.name === 'DeprecationWarning' && w.message.includes('when the client is already executing a query')) concurrentQueryWarnings.push(w);
});
process.on('exit', () => {
  const [first] = concurrentQueryWarnings;
  if (!first) return;
  process.stderr.write(`a pg client was given a query while it ran another (queries at once on one held connection):\n${first.stack ?? first.message}\n`);
  process.exitCode = 1;
});

export interface TestBerth {
  berth: RunningBerth;
  dataDir: string;
  /** The runner when it is the fake one (`fake: true`); else `berth.runner` is the real LocalRunner. */
  fake: FakeRunner | undefined;
  /** The PostgreSQL database this control plane uses, when the suite runs on PostgreSQL. */
  database: TestDatabase | undefined;
  client: ClientConfig;
  api<T = any>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
  cli(args: string[], opts?: { input?: string; env?: Record<string, string> }): Promise<CliResult>;
  /** Stops the control plane, keeping the data dir (environments keep running). */
  close(): Promise<void>;
  /** Removes every environment and the data dir. */
  destroy(): Promise<void>;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * `fake: true` runs the control plane on FakeRunner (test/fakes/fake-runner.ts) instead of a
 * LocalRunner: no sandbox, no crun, for tests about the API and not what runs inside. Pass the
 * same FakeRunner to a restart to keep its environments.
 */
export async function startTestBerth(opts: { fake?: boolean | FakeRunner; dataDir?: string; database?: TestDatabase; sweepIntervalMs?: number; port?: number; oidc?: OidcConfig; tokenRateLimit?: number; authFailureLimit?: number; modelEnv?: NodeJS.ProcessEnv; taskConcurrency?: number; runnerHeartbeatMs?: number; minFreeDiskBytes?: number; repos?: RepoAccessConfig; network?: StartOptions['network']; denialStorms?: StartOptions['denialStorms']; observability?: StartOptions['observability']; logger?: StartOptions['logger']; runnerOfflineAfterMs?: number; taskRetries?: number; runnerMemoryBytes?: number; clock?: StartOptions['clock']; publicUrl?: string } = {}): Promise<TestBerth> {
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'berth-test-'));
  // On PostgreSQL each control plane gets a database of its own; a restart passes it on.
  const database = opts.database ?? (ON_POSTGRES ? await freshDatabase() : undefined);
  const databaseUrl = database?.url;
  if (!database) await seedEmbeddedDatabase(dataDir);
  const fake = opts.fake instanceof FakeRunner ? opts.fake : opts.fake ? new FakeRunner({ images: new ImageStore({ dir: IMAGE_DIR, logger: pino({ level: 'silent' }) }), dir: join(dataDir, 'fake-runner') }) : undefined;
  const berth = await startBerth({
    dataDir,
    runner: fake,
    port: opts.port ?? 0,
    oidc: opts.oidc,
    tokenRateLimit: opts.tokenRateLimit ?? 1_000_000,
    authFailureLimit: opts.authFailureLimit,
    imageDir: IMAGE_DIR,
    databaseUrl,
    logger: opts.logger ?? pino({ level: process.env.BERTH_TEST_LOG ?? 'silent' }),
    sweepIntervalMs: opts.sweepIntervalMs ?? 3_600_000,
    // No model unless a test brings its own: nothing reaches a real provider from a test.
    modelEnv: opts.modelEnv ?? {},
    taskConcurrency: opts.taskConcurrency,
    runnerHeartbeatMs: opts.runnerHeartbeatMs,
    runnerOfflineAfterMs: opts.runnerOfflineAfterMs,
    taskRetries: opts.taskRetries,
    // Test files keep many idle environments at the default 2g limit: more than this host's memory, were it counted.
    runnerMemoryBytes: opts.runnerMemoryBytes ?? 1024 ** 4,
    minFreeDiskBytes: opts.minFreeDiskBytes,
    repos: opts.repos ?? TEST_REPOS,
    network: opts.network,
    denialStorms: opts.denialStorms,
    observability: opts.observability,
    clock: opts.clock,
    ...(opts.publicUrl ? { publicUrl: opts.publicUrl } : {}),
  });
  const client = JSON.parse(readFileSync(berth.clientConfigPath, 'utf8')) as ClientConfig;
  let closed = false;

  const t: TestBerth = {
    berth,
    fake,
    dataDir,
    database,
    client,
    api: (method, path, body) => apiAs(t, client.token)(method, path, body),
    cli: (args, o) => runCli(args, { BERTH_DATA_DIR: dataDir, ...o?.env }, o?.input),
    async close() {
      if (closed) return;
      closed = true;
      await berth.close();
    },
    async destroy() {
      const rows = await berth.database.db.selectFrom('environments').select('id').where('state', '<>', 'deleted').execute();
      for (const { id } of rows) await (fake ?? berth.runner).remove(id).catch(() => {});
      await t.close();
      await fake?.close();
      await database?.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return t;
}

export interface TestReplicas {
  database: TestDatabase;
  /** In start order; the first made the keys the others share. */
  replicas: TestBerth[];
  /** Stops every replica, removes their environments and data dirs, and drops the database. */
  close(): Promise<void>;
}

/**
 * `count` control planes on one fresh PostgreSQL database, as a deployment runs replicas: each
 * with its own data dir (and runner), all with the first one's keys (secrets and audit), as
 * docs/deploy.md asks, so each reads the secrets another stored.
 */
export async function startReplicas(count: number, opts: Omit<NonNullable<Parameters<typeof startTestBerth>[0]>, 'database' | 'dataDir'> = {}): Promise<TestReplicas> {
  if (!Number.isInteger(count) || count < 1) throw new Error(`startReplicas: count must be a positive integer, not ${count}`);
  const database = await freshDatabase();
  const replicas: TestBerth[] = [];
  const close = async () => {
    const [first, ...rest] = replicas;
    // The others stop first: the first one's destroy drops the database they use.
    for (const r of rest.toReversed()) await r.close();
    if (first) await first.destroy();
    else await database.drop();
    for (const r of rest) {
      await r.fake?.close();
      rmSync(r.dataDir, { recursive: true, force: true });
    }
  };
  try {
    replicas.push(await startTestBerth({ ...opts, database }));
    for (let i = 1; i < count; i++) {
      const dataDir = mkdtempSync(join(tmpdir(), 'berth-replica-'));
      for (const key of [SECRET_KEY_FILE, AUDIT_KEY_FILE]) {
        const from = join(replicas[0]!.dataDir, key);
        // A key given by environment variable has no file to share.
        if (existsSync(from)) copyFileSync(from, join(dataDir, key));
      }
      replicas.push(await startTestBerth({ ...opts, database, dataDir }));
    }
  } catch (err) {
    await close().catch(() => {});
    throw err;
  }
  return { database, replicas, close };
}

let template: Promise<string> | undefined;

/**
 * Before an embedded (PGlite) database is opened in `dataDir` for the first time: its schema is
 * copied from a template instead of made by initdb (seconds). For tests that call startBerth or
 * openDatabase themselves; startTestBerth does it.
 */
export async function seedEmbeddedDatabase(dataDir: string): Promise<void> {
  if (!existsSync(join(dataDir, 'db'))) cpSync(await embeddedTemplate(), join(dataDir, 'db'), { recursive: true });
}

/**
 * A migrated PGlite data dir, made once per machine and schema (kept with the image cache) and
 * copied into each new data dir: PGlite's initdb takes seconds, a copy a fraction of one. It is
 * made by openDatabase alone (no org, no token); startBerth migrates again, so a template
 * behind the schema costs only the missing steps.
 */
function embeddedTemplate(): Promise<string> {
  template ??= (async () => {
    const key = createHash('sha256')
      .update(readFileSync(join(REPO, 'src', 'server', 'db', 'migrations.ts')))
      .update(readFileSync(join(REPO, 'node_modules', '@electric-sql', 'pglite', 'package.json')))
      .digest('hex')
      .slice(0, 16);
    const dir = join(REPO, '.cache', 'pglite', key);
    if (existsSync(dir)) return dir;
    mkdirSync(join(REPO, '.cache', 'pglite'), { recursive: true });
    const making = mkdtempSync(`${dir}.tmp-`);
    try {
      const handle = await openDatabase({ dataDir: making });
      await handle.close();
      // Another test file may have made it first: theirs is as good.
      renameSync(join(making, 'db'), dir);
    } catch (err) {
      if (!existsSync(dir)) throw err;
    } finally {
      rmSync(making, { recursive: true, force: true });
    }
    return dir;
  })();
  return template;
}

/** The API as the holder of `token` calls it: a JSON body in (a string is sent as is), the status and parsed body out. */
export function apiAs(t: { client: ClientConfig }, token: string) {
  return async (method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> => {
    const res = await fetch(`${t.client.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON
    }
    return { status: res.status, body: parsed as any };
  };
}

export function runCli(args: string[], env: Record<string, string>, input?: string): Promise<CliResult> {
  return new Promise((resolve) => {
    // node --test sets FORCE_COLOR for its children when run on a terminal: the CLI's output is
    // read here as a pipe would read it, uncoloured, unless a test asks for colour itself.
    const child = spawn(join(REPO, 'bin', 'berth'), args, {
      env: { ...process.env, FORCE_COLOR: undefined, BERTH_NODE: process.execPath, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdin.end(input ?? '');
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

/** Runs a command through the API and returns its result, failing loudly on an API error. */
export async function sh(t: TestBerth, env: string, script: string, extra: Record<string, unknown> = {}) {
  const res = await t.api('POST', `/api/orgs/default/environments/${env}/exec`, { cmd: ['sh', '-c', script], ...extra });
  if (res.status !== 200) throw new Error(`exec failed: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body as { exitCode: number; stdout: string; stderr: string; timedOut: boolean };
}

/** Polls `get` until it gives something truthy, failing with `what` after `timeoutMs`. */
export async function waitFor<T>(what: string, get: () => Promise<T | undefined | null | false>, timeoutMs = 60_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await get();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Runs a command in an environment to its end, collecting its output. */
export async function runToEnd(command: RunningCommand) {
  let stdout = '';
  let stderr = '';
  command.stdout.on('data', (b: Buffer) => (stdout += b));
  command.stderr.on('data', (b: Buffer) => (stderr += b));
  command.stdin.end();
  return { ...(await command.exited), stdout, stderr };
}

/**
 * A terminal through the attach WebSocket at `url` (the control plane's, with `token`) in
 * environment `env`: its size at the start, a resize, then SIGINT. Throws unless all three
 * arrive as a terminal would show them.
 */
export async function checkTerminal(url: string, token: string, env: string): Promise<void> {
  const ws = new WebSocket(`${url.replace('http', 'ws')}/api/orgs/default/environments/${env}/attach`, { headers: { authorization: `Bearer ${token}` } });
  let out = '';
  const exit = new Promise<{ exitCode: number }>((resolve, reject) => {
    ws.on('message', (d, binary) => {
      if (binary) out += (d as Buffer).subarray(1).toString();
      else {
        const m = JSON.parse(String(d)) as { type: string; exitCode: number };
        if (m.type === 'exit') resolve(m);
        if (m.type === 'error') reject(new Error(String(d)));
      }
    });
  });
  await new Promise((r) => ws.once('open', r));
  // It prints its size, then again when told of a new one, then waits to be interrupted.
  const script = "stty size; trap 'stty size' WINCH; trap 'echo interrupted; exit 7' INT; while :; do sleep 0.1; done";
  ws.send(JSON.stringify({ type: 'start', cmd: ['bash', '-c', script], tty: true, cols: 100, rows: 30, stdin: true }));
  await waitFor('the first size', async () => out.includes('30 100'), 20_000);
  ws.send(JSON.stringify({ type: 'resize', cols: 120, rows: 40 }));
  await waitFor('the new size', async () => out.includes('40 120'), 20_000);
  ws.send(JSON.stringify({ type: 'signal', signal: 'SIGINT' }));
  const { exitCode } = await exit;
  ws.close();
  if (exitCode !== 7 || !/interrupted/.test(out)) throw new Error(`the terminal ended with ${exitCode}, showing ${JSON.stringify(out)}`);
}

/**
 * What a runner with data dir `dir` made on its host: its environments (containers, mounts,
 * disks) and its network namespaces (warm ones left by a killed runner among them).
 */
export async function removeRunnerHostState(dir: string): Promise<void> {
  const envDir = join(dir, 'environments');
  if (existsSync(envDir) && readdirSync(envDir).length) {
    // No agent build and no disk pool: nothing of its own made in the folder being removed.
    const local = new LocalRunner({ dataDir: dir, images: new ImageStore({ dir: IMAGE_DIR }), logger: pino({ level: 'silent' }), agent: false, diskQuota: false });
    for (const id of readdirSync(envDir)) await local.remove(id).catch(() => {});
    local.close();
  }
  const prefix = netnsPrefix(dir);
  for (const name of spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').map((l) => l.split(' ')[0]!)) {
    if (name.startsWith(prefix)) spawnSync('ip', ['netns', 'del', name]);
  }
}

/** A fake forge as the campaign tests use it (test/fakes/github.ts, test/fakes/gitlab.ts). */
export interface FakeForgeRepos {
  apiUrl: string;
  repoUrl(path: string): string;
  createRepo(path: string, files: Record<string, string>): Promise<unknown>;
}

/** Repositories acme/PREFIX-N on a fake forge, each a project of the same name with that forge (and token secret) as its forge. */
export async function forgeProjects(t: TestBerth, forge: FakeForgeRepos, o: { kind: 'github' | 'gitlab'; tokenSecret: string; prefix: string; count: number }): Promise<string[]> {
  const urls: string[] = [];
  for (let i = 0; i < o.count; i++) {
    const name = `${o.prefix}-${i}`;
    await forge.createRepo(`acme/${name}`, { 'a.txt': 'a\n' });
    const made = await t.api('POST', '/api/orgs/default/projects', { name, repoUrl: forge.repoUrl(`acme/${name}`), forge: { kind: o.kind, apiUrl: forge.apiUrl, tokenSecret: o.tokenSecret } });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    urls.push(forge.repoUrl(`acme/${name}`));
  }
  return urls;
}

/** Starts a campaign whose command agent appends to a.txt (its check passes), with `body` on top; every line of its list taken. */
export async function createBumpCampaign(t: TestBerth, body: Record<string, unknown>): Promise<{ id: string; name: string; branch: string }> {
  const res = await t.api('POST', '/api/orgs/default/campaigns', { goal: 'bump a.txt', agent: 'command', command: 'echo bumped >> a.txt', check: 'true', ...body });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  assert.deepEqual(res.body.invalid, []);
  return res.body.campaign;
}
