// Runs the host's git for Berth: no shell, an environment built from nothing (so neither the
// host's git configuration nor a stray GIT_DIR applies), hooks off, a time limit, and stderr
// with every credential removed before it goes anywhere.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hostSpawner } from '../runner/spawner/index.ts';
import { collectCapped } from '../shared/output.ts';
import { Redactor } from '../shared/redact.ts';
import { inSpan } from '../shared/spans.ts';
import { proxySecrets } from './upstream.ts';

/** Enough for a large clone over a slow link; local operations finish far sooner. */
export const DEFAULT_GIT_TIMEOUT_MS = 10 * 60_000;

/** Variables passed through from the host: how to reach the network and which CAs to trust. */
const PASSED_THROUGH = ['PATH', 'http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'no_proxy', 'NO_PROXY', 'all_proxy', 'ALL_PROXY', 'GIT_SSL_CAINFO', 'GIT_SSL_CAPATH', 'SSL_CERT_FILE', 'SSL_CERT_DIR'];

/**
 * Configuration given on every command line. Hooks would run code from the repository on the
 * host; signing and fsmonitor would reach for programs the host's user set up.
 */
const SAFE_CONFIG = ['-c', 'core.hooksPath=/dev/null', '-c', 'commit.gpgSign=false', '-c', 'tag.gpgSign=false', '-c', 'core.fsmonitor=false', '-c', 'protocol.ext.allow=never'];

export interface GitRun {
  args: string[];
  cwd?: string | undefined;
  /** Added to the isolated environment: credentials (GIT_CONFIG_*), author identity. */
  env?: Record<string, string> | undefined;
  input?: Buffer | undefined;
  signal?: AbortSignal | undefined;
  timeoutMs?: number | undefined;
  /** Values to cut out of stderr before it appears in an error. */
  secrets?: readonly string[] | undefined;
  /** One-off `-c name=value` settings after the safe ones: what RepoAccess.reach pinned (address, no redirects). */
  config?: readonly string[] | undefined;
  /** For an SSH remote: how ssh reaches it (see GitSsh). */
  ssh?: GitSsh | undefined;
  /** The company's upstream proxy from RepoAccess.reach (URL with credentials), null for directly; undefined: the host's proxy variables apply. */
  proxy?: string | null | undefined;
}

/** What git's ssh is given for one command; nothing of the host user's ssh setup applies. */
export interface GitSsh {
  /** What RepoAccess.reach pinned: `-o HostKeyAlias=…`, `-o HostName=<checked address>`. */
  options: readonly string[];
  /** The deploy key (OpenSSH private key), or null for none. */
  privateKey: string | null;
  /** known_hosts lines; a host not among them is refused, never trusted on first use. */
  knownHosts: string;
}

export interface GitResult {
  stdout: string;
  /** Redacted. */
  stderr: string;
}

/** git exited non-zero (or ran out of time); stderr is already redacted. */
export class GitFailed extends Error {
  readonly exitCode: number | null;
  readonly stderr: string;
  readonly timedOut: boolean;

  constructor(command: string, exitCode: number | null, stderr: string, timedOut: boolean) {
    super(timedOut ? `git ${command} ran out of time` : `git ${command} failed (exit ${exitCode}): ${lastLines(stderr)}`);
    this.name = 'GitFailed';
    this.exitCode = exitCode;
    this.stderr = stderr;
    this.timedOut = timedOut;
  }
}

export function runGit(o: GitRun): Promise<GitResult> {
  // A span per git command under the current work (a task's clone or push), when traces are on:
  // the verb only, never a URL or an argument that could carry a credential.
  const verb = o.args.find((a) => /^[a-z][a-z-]*$/.test(a)) ?? 'git';
  return inSpan(`git ${verb}`, { 'git.command': verb }, () => runGitNow(o));
}

async function runGitNow(o: GitRun): Promise<GitResult> {
  o.signal?.throwIfAborted();
  // An empty HOME per command: no ~/.gitconfig, no credential store, no ~/.git-credentials.
  const home = await mkdtemp(join(tmpdir(), 'berth-git-'));
  try {
    const env: Record<string, string> = {};
    // The host's GIT_SSL_CAINFO would override the bundle a reach names (the host's store plus the company CAs).
    const caInfo = o.config?.some((c) => c.startsWith('http.sslCAInfo='));
    for (const name of PASSED_THROUGH) {
      const value = process.env[name];
      // The upstream proxy decided by the reach replaces the host's proxy variables (its no_proxy too).
      if (o.proxy !== undefined && /_proxy$/i.test(name)) continue;
      if (value !== undefined && !(caInfo && name === 'GIT_SSL_CAINFO')) env[name] = value;
    }
    Object.assign(env, {
      HOME: home,
      XDG_CONFIG_HOME: home,
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_CONFIG_GLOBAL: '/dev/null',
      GIT_TERMINAL_PROMPT: '0',
      GCM_INTERACTIVE: 'never',
      // Messages in English: errors are classified by what git says.
      LC_ALL: 'C',
      LANG: 'C',
      ...o.env,
    });
    if (o.ssh) env.GIT_SSH_COMMAND = await sshCommand(home, o.ssh);
    // The proxy's URL holds its credentials: in git's environment config, never on the command
    // line (ps shows it). An empty http.proxy makes git go directly, whatever the variables say.
    if (o.proxy !== undefined) addEnvConfig(env, 'http.proxy', o.proxy ?? '');
    return await spawnGit([...SAFE_CONFIG, ...(o.config ?? []).flatMap((c) => ['-c', c]), ...o.args], o.cwd, env, o);
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}

/** One more GIT_CONFIG_KEY_n/VALUE_n entry after those the credentials set. */
function addEnvConfig(env: Record<string, string>, key: string, value: string): void {
  const n = Number(env.GIT_CONFIG_COUNT ?? '0');
  env[`GIT_CONFIG_KEY_${n}`] = key;
  env[`GIT_CONFIG_VALUE_${n}`] = value;
  env.GIT_CONFIG_COUNT = String(n + 1);
}

/**
 * The ssh command line git runs for an SSH remote. The key and the known hosts are files in
 * the command's own HOME (0700, removed after the command), the key 0600: ssh reads the key
 * from there, so it is never in an environment variable or on a command line. No config file,
 * no agent, no default identities (root's ~/.ssh), no prompts; an unknown or changed host key
 * is refused (StrictHostKeyChecking=yes) and nothing is written back to the known hosts.
 */
async function sshCommand(home: string, ssh: GitSsh): Promise<string> {
  const knownHosts = join(home, 'known_hosts');
  await writeFile(knownHosts, ssh.knownHosts.endsWith('\n') || ssh.knownHosts === '' ? ssh.knownHosts : `${ssh.knownHosts}\n`, { mode: 0o600 });
  let identity = 'none';
  if (ssh.privateKey !== null) {
    identity = join(home, 'deploy_key');
    // OpenSSH refuses a key file without its final newline.
    await writeFile(identity, ssh.privateKey.endsWith('\n') ? ssh.privateKey : `${ssh.privateKey}\n`, { mode: 0o600 });
  }
  const args = [
    'ssh',
    '-F', '/dev/null',
    '-o', `IdentityFile=${identity}`,
    '-o', 'IdentitiesOnly=yes',
    '-o', 'IdentityAgent=none',
    '-o', 'BatchMode=yes',
    '-o', 'StrictHostKeyChecking=yes',
    '-o', `UserKnownHostsFile=${knownHosts}`,
    '-o', 'GlobalKnownHostsFile=/dev/null',
    '-o', 'UpdateHostKeys=no',
    '-o', 'ConnectTimeout=30',
    ...ssh.options,
  ];
  // git runs it through sh: every word quoted.
  return args.map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(' ');
}

/** git from the host spawner (see hostSpawner: no fork from the control plane). */
async function spawnGit(args: string[], cwd: string | undefined, env: Record<string, string>, o: GitRun): Promise<GitResult> {
  const secrets = [...(o.secrets ?? []), ...(o.proxy ? proxySecrets(o.proxy) : [])];
  const redactor = new Redactor(secrets.map((value) => ({ name: 'credential', value })));
  const command = o.args.find((a) => !a.startsWith('-')) ?? 'git';
  const child = hostSpawner().spawn('git', args, { cwd, env, stdin: true });
  // At most 16 MiB a stream, then a marker: a diff the size of a disk does not fill memory.
  const out = collectCapped(child.stdout);
  const err = collectCapped(child.stderr);
  let timedOut = false;
  const kill = () => child.kill('SIGKILL');
  const timer = setTimeout(() => {
    timedOut = true;
    kill();
  }, o.timeoutMs ?? DEFAULT_GIT_TIMEOUT_MS);
  o.signal?.addEventListener('abort', kill, { once: true });
  // Could not start at all (no git, a bad cwd): the reason, as stderr.
  child.stderr.once('spawn-error', (message: string) => err.push(Buffer.from(`${message}\n`)));
  // git may stop reading stdin early (a patch it refuses); its exit status says why.
  child.stdin.end(o.input);
  const { code } = await child.exited;
  clearTimeout(timer);
  o.signal?.removeEventListener('abort', kill);
  if (o.signal?.aborted) throw o.signal.reason;
  const stderr = redactor.redact(err.text());
  if (code !== 0 || timedOut) throw new GitFailed(command, code, stderr, timedOut);
  return { stdout: out.text(), stderr };
}

/** The end of git's stderr, where it says what went wrong, kept short for a message. */
export function lastLines(stderr: string, lines = 8, chars = 1500): string {
  const text = stderr
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l !== '')
    .slice(-lines)
    .join('\n');
  return text.length > chars ? `…${text.slice(-chars)}` : text;
}
