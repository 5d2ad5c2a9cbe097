// Pulling from a container registry with skopeo, the registry tool hosts already have:
// it speaks every registry's auth and protocol quirks, and writes an OCI layout the store
// then imports like any other.
import { spawn } from 'node:child_process';
import { isIP, type BlockList } from 'node:net';
import { createInterface } from 'node:readline';
import { BerthError, notFound, unavailable } from '../../shared/errors.ts';
import { checkAddress, hostAddressesNow } from '../network/request-filter.ts';
import { systemResolver } from '../network/destination.ts';
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
  if (addresses.some((address) => checkAddress(address, { hostAddresses, allowPrivate: access.allowPrivate }) !== null)) {
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
}

const SANDBOX = new URL('./pull-sandbox.ts', import.meta.url).pathname;

/** Copies `ref` for this host's platform into an OCI layout at `into`, tagged `latest`. */
export async function pullImage(ref: string, into: string, progress: ImageProgress, opts: PullOptions = {}): Promise<void> {
  progress({ phase: 'pull', message: `pulling ${ref}` });
  const skopeo = ['skopeo', ...copyArgs(ref, into, opts.certDir)];
  const [command, ...args] = opts.proxySocket
    ? ['unshare', '--net', '--', process.execPath, '--disable-warning=ExperimentalWarning', SANDBOX, opts.proxySocket, '--', ...skopeo]
    : skopeo;
  const child = spawn(command!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  createInterface({ input: child.stdout }).on('line', (line) => {
    if (line.trim()) progress({ phase: 'pull', message: line.trim() });
  });
  const errors: string[] = [];
  createInterface({ input: child.stderr }).on('line', (line) => errors.push(line));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', resolve);
  }).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') {
      throw unavailable('pulling from a registry needs skopeo and unshare (apt-get install skopeo util-linux); or import the image from a tarball with `berth image import FILE`');
    }
    throw error;
  });
  if (code === 0) return;
  const message = errors.join('\n').trim();
  if (/manifest unknown|not found|name unknown|does not exist/i.test(message)) {
    throw notFound(`image '${ref}' is not in its registry: ${lastLine(message)}`);
  }
  throw unavailable(`cannot pull '${ref}': ${lastLine(message) || `skopeo exited with ${code}`}`);
}

/** skopeo's arguments for pulling `ref` into the OCI layout `into`. */
export function copyArgs(ref: string, into: string, certDir?: string): string[] {
  // skopeo speaks only HTTPS unless told otherwise, but registries on this machine (a local
  // cache, a test registry) are usually plain HTTP, as Docker assumes for loopback too.
  // Skipping TLS there risks nothing, since the traffic never leaves the host; every other
  // host keeps full TLS verification. Loopback is only pulled from when an instance
  // administrator listed it (checkRegistry).
  const tls = isLoopback(registryHost(ref)) ? ['--src-tls-verify=false'] : [];
  const certs = certDir ? [`--src-cert-dir=${certDir}`] : [];
  return ['copy', ...tls, ...certs, `docker://${ref}`, `oci:${into}:latest`];
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
