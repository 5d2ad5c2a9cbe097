// A git server for tests that speaks git's real smart HTTP protocol: a node:http server that
// runs git's own `git http-backend` as a CGI program over bare repositories in a directory.
// It can demand an Authorization header and records every request, so tests can prove which
// credentials git sent (or that it sent none).
import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { hostSpawner } from '../../src/runner/spawner/index.ts';
import { collectCapped } from '../../src/shared/output.ts';

export interface GitRequestRecord {
  method: string;
  /** The path under the server's root, `/owner/repo.git/info/refs`. */
  path: string;
  /** `git-upload-pack` (fetch, clone) or `git-receive-pack` (push), when the request names one. */
  service: string | null;
  authorization: 'none' | 'accepted' | 'refused';
  /** When it arrived (Date.now()). */
  at?: number;
}

/** Decides whether a request may touch `repo` (`owner/repo.git`); `header` is its Authorization. */
export type Authorize = (header: string | undefined, repo: string) => boolean;

export interface GitHttpOptions {
  /** The directory holding bare repositories (`ROOT/owner/repo.git`). */
  root: string;
  /** Omitted: anyone may fetch and push. A string: the exact Authorization header required. */
  authorize?: Authorize | string | undefined;
  /** Where to record requests; the server's own list when omitted. */
  records: GitRequestRecord[];
}

/** A tiny environment for git in tests, so the host's git configuration never applies. */
export function isolatedGitEnv(home: string): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: home,
    XDG_CONFIG_HOME: home,
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_TERMINAL_PROMPT: '0',
    LC_ALL: 'C',
  };
}

/**
 * Serves `pathInfo` (`/owner/repo.git/info/refs`) from `o.root` with git http-backend.
 * Exported so that the fake forges can serve git under their own routes.
 */
export function serveGit(o: GitHttpOptions, req: IncomingMessage, res: ServerResponse, pathInfo: string, query: string): void {
  const service = /(?:^|&)service=(git-[a-z-]+)/.exec(query)?.[1] ?? /\/(git-(?:upload|receive)-pack)$/.exec(pathInfo)?.[1] ?? null;
  const repo = /^\/(.+?\.git)(?:\/|$)/.exec(pathInfo)?.[1];
  const header = req.headers.authorization;
  let authorization: GitRequestRecord['authorization'] = header === undefined ? 'none' : 'accepted';
  if (o.authorize !== undefined) {
    const ok = repo !== undefined && (typeof o.authorize === 'string' ? header === o.authorize : o.authorize(header, repo));
    if (!ok) authorization = header === undefined ? 'none' : 'refused';
    o.records.push({ method: req.method ?? 'GET', path: pathInfo, service, authorization: ok ? 'accepted' : authorization, at: Date.now() });
    if (!ok) {
      req.resume();
      res.writeHead(401, { 'www-authenticate': 'Basic realm="git"', 'content-type': 'text/plain' }).end('authentication required\n');
      return;
    }
  } else {
    o.records.push({ method: req.method ?? 'GET', path: pathInfo, service, authorization, at: Date.now() });
  }

  const env: Record<string, string> = {
    ...isolatedGitEnv(o.root),
    GIT_PROJECT_ROOT: o.root,
    GIT_HTTP_EXPORT_ALL: '1',
    PATH_INFO: pathInfo,
    QUERY_STRING: query,
    REQUEST_METHOD: req.method ?? 'GET',
    CONTENT_TYPE: req.headers['content-type'] ?? '',
    REMOTE_USER: 'berth-test',
    REMOTE_ADDR: req.socket.remoteAddress ?? '127.0.0.1',
    // Pushes are off by default in http-backend; this server is a forge, so they are on.
    GIT_CONFIG_COUNT: '1',
    GIT_CONFIG_KEY_0: 'http.receivepack',
    GIT_CONFIG_VALUE_0: 'true',
  };
  if (req.headers['content-length'] !== undefined) env.CONTENT_LENGTH = req.headers['content-length'];
  const encoding = req.headers['content-encoding'];
  if (encoding !== undefined) env.HTTP_CONTENT_ENCODING = encoding;
  const protocol = req.headers['git-protocol'];
  if (typeof protocol === 'string') {
    env.HTTP_GIT_PROTOCOL = protocol;
    env.GIT_PROTOCOL = protocol;
  }

  // From the host spawner: a fork of the test process would block its Berth's event loop.
  const child = hostSpawner().spawn('git', ['http-backend'], { env, stdin: true });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdin.on('error', () => {}); // the backend may stop reading early; its answer says why
  req.pipe(child.stdin);

  // CGI output: headers (Status: among them), a blank line, the body.
  let head = Buffer.alloc(0);
  let headersSent = false;
  child.stdout.on('data', (chunk: Buffer) => {
    if (headersSent) {
      res.write(chunk);
      return;
    }
    head = Buffer.concat([head, chunk]);
    const crlf = head.indexOf('\r\n\r\n');
    const lf = head.indexOf('\n\n');
    const end = crlf >= 0 && (lf < 0 || crlf < lf) ? crlf + 4 : lf >= 0 ? lf + 2 : -1;
    if (end < 0) return;
    let status = 200;
    const headers: Record<string, string> = {};
    for (const line of head.subarray(0, end).toString('latin1').split(/\r?\n/)) {
      const colon = line.indexOf(':');
      if (colon <= 0) continue;
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      if (name === 'status') status = Number.parseInt(value, 10);
      else headers[name] = value;
    }
    headersSent = true;
    res.writeHead(status, headers);
    res.write(head.subarray(end));
  });
  child.stderr.once('spawn-error', (message: string) => (stderr += message));
  void child.exited.then(({ code }) => {
    if (!headersSent) {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`git http-backend exited ${code}: ${stderr}`);
      return;
    }
    res.end();
  });
}

export interface GitServer {
  /** `http://127.0.0.1:PORT`; a repository is at `${url}/owner/repo.git`. */
  url: string;
  root: string;
  /** Every request, in order. */
  requests: GitRequestRecord[];
  /** Stops the server; removes `root` if the server made it. */
  close(): Promise<void>;
}

/** Starts a git smart-HTTP server on loopback over the bare repositories in `root` (a temp dir by default). */
export async function startGitServer(o: { root?: string; authorize?: Authorize | string } = {}): Promise<GitServer> {
  const ownRoot = o.root === undefined;
  const root = o.root ?? (await mkdtemp(join(tmpdir(), 'berth-git-server-')));
  const requests: GitRequestRecord[] = [];
  const options: GitHttpOptions = { root, authorize: o.authorize, records: requests };
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    serveGit(options, req, res, decodeURIComponent(url.pathname), url.search.replace(/^\?/, ''));
  });
  const port = await listen(server);
  return {
    url: `http://127.0.0.1:${port}`,
    root,
    requests,
    async close() {
      await closeServer(server);
      if (ownRoot) await rm(root, { recursive: true, force: true });
    },
  };
}

export async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

export async function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

/**
 * Runs git with the host's configuration shut out; a failure's message carries git's stderr.
 * Started from the host spawner, as the control plane's own git is: a fork of the test
 * process (a Berth runs in it) blocks its event loop for tens of milliseconds, hundreds of
 * times in a file that makes and reads many repositories.
 */
export async function runGit(args: string[], o: { cwd?: string; env?: Record<string, string>; input?: Buffer } = {}): Promise<string> {
  const home = await mkdtemp(join(tmpdir(), 'berth-git-home-'));
  try {
    const child = hostSpawner().spawn('git', args, { cwd: o.cwd, env: { ...isolatedGitEnv(home), ...o.env }, stdin: true });
    const out = collectCapped(child.stdout, RUN_GIT_MAX_OUTPUT);
    const err = collectCapped(child.stderr);
    // Could not start at all (a bad cwd): the reason, as stderr.
    child.stderr.once('spawn-error', (message: string) => err.push(Buffer.from(`${message}\n`)));
    child.stdin.on('error', () => {}); // git may exit without reading it
    child.stdin.end(o.input);
    const { code, signal } = await child.exited;
    if (code !== 0) throw new Error(`git ${args.join(' ')} exited ${code ?? signal}: ${err.text()}`);
    if (out.truncated) throw new Error(`git ${args.join(' ')} printed more than ${RUN_GIT_MAX_OUTPUT} bytes`);
    return out.text();
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}
const RUN_GIT_MAX_OUTPUT = 64 << 20;

export const TEST_AUTHOR = { name: 'Fixture Author', email: 'fixture@example.com' };
const AUTHOR_ENV = {
  GIT_AUTHOR_NAME: TEST_AUTHOR.name,
  GIT_AUTHOR_EMAIL: TEST_AUTHOR.email,
  GIT_COMMITTER_NAME: TEST_AUTHOR.name,
  GIT_COMMITTER_EMAIL: TEST_AUTHOR.email,
};

/**
 * Makes the bare repository `root/name` (`owner/repo.git`) holding one commit of `files`
 * (path → content) on `branch`, which is also its default branch (HEAD). Returns its path
 * and the commit.
 */
export async function createBareRepo(o: { root: string; name: string; files: Record<string, string | Buffer>; branch?: string }): Promise<{ path: string; sha: string }> {
  const branch = o.branch ?? 'main';
  const bare = join(o.root, o.name);
  const work = await mkdtemp(join(tmpdir(), 'berth-fixture-'));
  try {
    await runGit(['init', '-q', '--bare', `--initial-branch=${branch}`, bare]);
    await runGit(['init', '-q', `--initial-branch=${branch}`, work]);
    for (const [path, content] of Object.entries(o.files)) {
      await mkdir(dirname(join(work, path)), { recursive: true });
      await writeFile(join(work, path), content);
    }
    await runGit(['add', '-A'], { cwd: work });
    await runGit(['commit', '-q', '-m', 'Initial commit'], { cwd: work, env: AUTHOR_ENV });
    await runGit(['push', '-q', bare, `HEAD:refs/heads/${branch}`], { cwd: work });
    return { path: bare, sha: await refSha(bare, `refs/heads/${branch}`) ?? '' };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * The bare repositories `root/NAME` for each of `names`, all holding the same one commit of
 * `files`: git makes the first, the others are copies of it (git itself would take minutes
 * for hundreds). Returns their paths in the order of `names`.
 */
export async function createBareRepos(o: { root: string; names: string[]; files: Record<string, string | Buffer>; branch?: string }): Promise<string[]> {
  const [first, ...others] = o.names;
  if (first === undefined) return [];
  const paths = [(await createBareRepo({ ...o, name: first })).path];
  for (const name of others) {
    const path = join(o.root, name);
    await cp(paths[0]!, path, { recursive: true });
    paths.push(path);
  }
  return paths;
}

/** Adds a commit to `branch` of a bare repository, as someone else pushing; returns the commit. */
export async function pushCommit(o: { bare: string; branch: string; files: Record<string, string | Buffer | null>; message: string }): Promise<string> {
  const work = await mkdtemp(join(tmpdir(), 'berth-fixture-'));
  try {
    await runGit(['clone', '-q', '--branch', o.branch, o.bare, work]);
    for (const [path, content] of Object.entries(o.files)) {
      if (content === null) await rm(join(work, path));
      else {
        await mkdir(dirname(join(work, path)), { recursive: true });
        await writeFile(join(work, path), content);
      }
    }
    await runGit(['add', '-A'], { cwd: work });
    await runGit(['commit', '-q', '-m', o.message], { cwd: work, env: AUTHOR_ENV });
    await runGit(['push', '-q', 'origin', `HEAD:refs/heads/${o.branch}`], { cwd: work });
    return (await runGit(['rev-parse', 'HEAD'], { cwd: work })).trim();
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** The commit `ref` points at in a bare repository, or null when there is no such ref. */
export async function refSha(bare: string, ref: string): Promise<string | null> {
  try {
    return (await runGit(['rev-parse', '--verify', '-q', `${ref}^{commit}`], { cwd: bare })).trim() || null;
  } catch {
    return null;
  }
}

// Small HTTP helpers the fake forges share.

/** The request's JSON body; undefined when it has none or it is not JSON. */
export async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  if (text === '') return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers }).end(JSON.stringify(body));
}
