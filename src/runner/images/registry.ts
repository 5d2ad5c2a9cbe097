// Pulling from a container registry with skopeo, the registry tool hosts already have:
// it speaks every registry's auth and protocol quirks, and writes an OCI layout the store
// then imports like any other.
import { spawn } from 'node:child_process';
import { lstat, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { isIP, type BlockList } from 'node:net';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { BerthError, invalid, notFound, unavailable } from '../../shared/errors.ts';
import { Redactor } from '../../shared/redact.ts';
import { checkAddress, hostAddressesNow } from '../network/request-filter.ts';
import { systemResolver } from '../network/destination.ts';
import { countBytes } from './byte-progress.ts';
import type { ImageProgress } from './types.ts';

export interface RegistryAccess {
  /**
   * Registries an instance administrator listed (BERTH_ALLOWED_REGISTRIES), as `host` (any
   * port) or `host:port`: pulled from wherever they are, a local cache on loopback included.
   */
  allowed: readonly string[];
  /** Test escape hatch, like the egress proxy's allowPrivateAddresses: addresses treated as public. */
  allowPrivate?: BlockList | undefined;
  /** How names are resolved (tests inject one); the system resolver otherwise. */
  resolve?: ((host: string) => Promise<string[]>) | undefined;
  /** Whether a private address lies in the instance's trusted networks (company.ts): those registries are pulled from like public ones. */
  trusted?: ((address: string) => boolean) | undefined;
}

/**
 * Throws `forbidden` unless `ref`'s registry may be pulled from: a listed registry, or one
 * whose every address passes the egress proxy's address check (no loopback, private,
 * link-local or this host's own addresses). Pulls run on the host, outside any
 * environment's network, so without this a reference would be a way to reach the host's
 * own services. Fails closed: a name that does not resolve is not pulled.
 */
export async function checkRegistry(ref: string, access: RegistryAccess): Promise<{ listed: boolean }> {
  const authority = ref.split('/')[0]!.toLowerCase();
  const host = registryHost(ref);
  if (access.allowed.some((entry) => entry.toLowerCase() === authority || entry.toLowerCase() === host)) return { listed: true };
  let addresses: string[];
  if (isIP(host)) addresses = [host];
  else {
    addresses = await (access.resolve ?? systemResolver)(host).catch(() => []);
    if (addresses.length === 0) throw unavailable(`cannot pull '${ref}': the registry host '${host}' does not resolve`);
  }
  const hostAddresses = hostAddressesNow();
  if (addresses.some((address) => checkAddress(address, { hostAddresses, allowPrivate: access.allowPrivate, trusted: access.trusted }) !== null)) {
    throw new BerthError(
      'forbidden',
      `registry '${authority}' is on a loopback, private or link-local address (or this host's own), which pulls do not reach: ` +
        'an instance administrator can list it in BERTH_ALLOWED_REGISTRIES, or import the image with `berth image import FILE`',
    );
  }
  return { listed: false };
}

export interface PullOptions {
  /**
   * Run skopeo in an empty network namespace whose only way out is the pull proxy on this
   * unix socket (pull-proxy.ts): for every registry an instance administrator did not list.
   */
  proxySocket?: string | undefined;
  /** CA certificates for registries (skopeo --src-cert-dir): an internal CA, or a test's. */
  certDir?: string | undefined;
  /** Credentials for the registry pulled from (see RegistryCredential); anonymous without. */
  credential?: RegistryCredential | undefined;
}

/**
 * A registry login from a Berth secret holding `USER:PASSWORD` (a token goes where the
 * password does: `USER:TOKEN`, as GHCR, GitLab and Docker Hub take it).
 */
export interface RegistryCredential {
  value: string;
  /** What holds it, for messages: "secret GHCR_LOGIN". Never the value. */
  from: string;
}

/** Throws `invalid` unless the credential is USER:PASSWORD; the message never shows the value. */
export function checkCredential(credential: RegistryCredential): void {
  const colon = credential.value.indexOf(':');
  if (colon < 1 || colon === credential.value.length - 1 || /[\r\n]/.test(credential.value)) {
    throw invalid(`${credential.from} does not hold a registry login: store it as USER:PASSWORD (or USER:TOKEN) on one line, like \`printf %s "$USER:$TOKEN" | berth secret set NAME\``);
  }
}

const SANDBOX = new URL('./pull-sandbox.ts', import.meta.url).pathname;

/** Copies `ref` for this host's platform into an OCI layout at `into`, tagged `latest`. */
export async function pullImage(ref: string, into: string, progress: ImageProgress, opts: PullOptions = {}): Promise<void> {
  if (opts.credential) checkCredential(opts.credential);
  // skopeo reads the login from a file only it and root can read, in a directory of its
  // own beside the layout (the caller's scratch, not the shared /tmp), gone when the pull is:
  // never in its arguments (ps shows those) or environment. Without a credential the file is
  // empty, so neither is root's own login (~/.docker, $XDG_RUNTIME_DIR/containers) ever sent
  // on an org's behalf.
  const private_ = await mkdtemp(join(dirname(into), '.login-'));
  try {
    const authFile = join(private_, 'auth.json');
    await writeFile(authFile, JSON.stringify(authFileOf(ref, opts.credential?.value)), { mode: 0o600 });
    await runSkopeo(ref, into, progress, opts, authFile);
  } finally {
    await rm(private_, { recursive: true, force: true });
  }
}

/** containers-auth.json(5) with one login, for the registry `ref` names, or none. */
function authFileOf(ref: string, credential: string | undefined): { auths: Record<string, { auth: string }> } {
  if (credential === undefined) return { auths: {} };
  return { auths: { [ref.split('/')[0]!.toLowerCase()]: { auth: Buffer.from(credential, 'utf8').toString('base64') } } };
}

async function runSkopeo(ref: string, into: string, progress: ImageProgress, opts: PullOptions, authFile: string): Promise<void> {
  const secret = opts.credential?.value;
  const redactor = new Redactor(secret ? [{ name: 'registry login', value: secret }, { name: 'registry login', value: secret.slice(secret.indexOf(':') + 1) }] : []);
  progress({ phase: 'pull', message: `pulling ${ref}` });
  const skopeo = ['skopeo', ...copyArgs(ref, into, opts.certDir, authFile)];
  const [command, ...args] = opts.proxySocket
    ? ['unshare', '--net', '--', process.execPath, '--disable-warning=ExperimentalWarning', SANDBOX, opts.proxySocket, '--', ...skopeo]
    : skopeo;
  const child = spawn(command!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  // What skopeo has written so far: the registry sends no total before the manifest, which comes last.
  const pulled = countBytes(progress, 'pull', `pulling ${ref}`);
  const measure = () => void bytesUnder(into).then((n) => pulled.set(n));
  const meter = setInterval(measure, 500);
  child.on('close', () => clearInterval(meter));
  createInterface({ input: child.stdout }).on('line', (line) => {
    if (line.trim()) progress({ phase: 'pull', message: redactor.redact(line.trim()) });
  });
  const errors: string[] = [];
  createInterface({ input: child.stderr }).on('line', (line) => errors.push(redactor.redact(line)));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', resolve);
  }).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') {
      throw unavailable('pulling from a registry needs skopeo and unshare (apt-get install skopeo util-linux); or import the image from a tarball with `berth image import FILE`');
    }
    throw error;
  });
  if (code === 0) {
    pulled.set(await bytesUnder(into));
    pulled.end();
    return;
  }
  const message = errors.join('\n').trim();
  if (/unauthorized|authentication required|access to the resource is denied|denied: /i.test(message)) {
    throw new BerthError(
      'forbidden',
      opts.credential
        ? `cannot pull '${ref}': the registry refused the login in ${opts.credential.from}: check the user and password (or token) and that it may pull this image (${lastLine(message)})`
        : `cannot pull '${ref}': the registry wants a login: store USER:PASSWORD as a secret and pull with \`berth image pull ${ref} --auth-secret NAME\`, ` +
            `or name the secret for this registry in the project (\`berth project update NAME --registry-login ${ref.split('/')[0]}=SECRET\`) (${lastLine(message)})`,
    );
  }
  if (/manifest unknown|not found|name unknown|does not exist/i.test(message)) {
    throw notFound(`image '${ref}' is not in its registry: ${lastLine(message)}`);
  }
  throw unavailable(`cannot pull '${ref}': ${lastLine(message) || `skopeo exited with ${code}`}`);
}

/** skopeo's arguments for pulling `ref` into the OCI layout `into`. */
export function copyArgs(ref: string, into: string, certDir?: string, authFile?: string): string[] {
  // skopeo speaks only HTTPS unless told otherwise, but registries on this machine (a local
  // cache, a test registry) are usually plain HTTP, as Docker assumes for loopback too.
  // Skipping TLS there risks nothing, since the traffic never leaves the host; every other
  // host keeps full TLS verification. Loopback is only pulled from when an instance
  // administrator listed it (checkRegistry).
  const tls = isLoopback(registryHost(ref)) ? ['--src-tls-verify=false'] : [];
  const certs = certDir ? [`--src-cert-dir=${certDir}`] : [];
  const auth = authFile ? [`--src-authfile=${authFile}`] : [];
  return ['copy', ...tls, ...certs, ...auth, `docker://${ref}`, `oci:${into}:latest`];
}

/** The host a reference names, without its port or IPv6 brackets: `localhost:5000/a:1` → `localhost`. */
function registryHost(ref: string): string {
  const authority = ref.split('/')[0]!;
  const bracketed = /^\[([^\]]*)\]/.exec(authority);
  return (bracketed ? bracketed[1]! : authority.replace(/:\d+$/, '')).toLowerCase();
}

const isLoopback = (host: string) => host === 'localhost' || host === '::1' || /^127(?:\.\d{1,3}){3}$/.test(host);

/** skopeo's last line, without its logrus dressing (`time=… level=fatal msg="…"`). */
function lastLine(text: string): string {
  const line = text.split('\n').at(-1) ?? '';
  const message = /msg="((?:[^"\\]|\\.)*)"/.exec(line)?.[1];
  return message === undefined ? line : message.replace(/\\(.)/g, '$1');
}

/** The bytes of the files under `dir` (0 before it exists). */
async function bytesUnder(dir: string): Promise<number> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  let total = 0;
  for (const entry of entries) {
    if (entry.isFile()) total += (await lstat(join(entry.parentPath, entry.name)).catch(() => ({ size: 0 }))).size;
  }
  return total;
}
