// Pulling from a container registry with skopeo, the registry tool hosts already have:
// it speaks every registry's auth and protocol quirks, and writes an OCI layout the store
// then imports like any other.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { notFound, unavailable } from '../../shared/errors.ts';
import type { ImageProgress } from './types.ts';

/** Copies `ref` for this host's platform into an OCI layout at `into`, tagged `latest`. */
export async function pullImage(ref: string, into: string, progress: ImageProgress): Promise<void> {
  progress({ phase: 'pull', message: `pulling ${ref}` });
  const child = spawn('skopeo', copyArgs(ref, into), { stdio: ['ignore', 'pipe', 'pipe'] });
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
      throw unavailable('pulling from a registry needs skopeo (apt-get install skopeo); or import the image from a tarball with `berth image import FILE`');
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
export function copyArgs(ref: string, into: string): string[] {
  // skopeo speaks only HTTPS unless told otherwise, but registries on this machine (a local
  // cache, a test registry) are usually plain HTTP, as Docker assumes for loopback too.
  // Skipping TLS there risks nothing, since the traffic never leaves the host; every other
  // host keeps full TLS verification.
  const tls = isLoopback(registryHost(ref)) ? ['--src-tls-verify=false'] : [];
  return ['copy', ...tls, `docker://${ref}`, `oci:${into}:latest`];
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
