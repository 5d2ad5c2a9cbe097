// Registry mirrors (BERTH_REGISTRY_MIRRORS=docker.io=https://mirror.corp): a pull of an image
// of a mirrored registry goes to the mirror instead, and only there. The reference is
// rewritten rather than handed to skopeo's registries.conf, whose mirrors fall back to the
// registry itself: an instance with a mirror usually has it because the registry is not to
// be reached.
import { invalid } from '../../shared/errors.ts';

/** Registry (`docker.io`, `ghcr.io`, `host:port`) → where its images are pulled from: `host[:port][/path]`. */
export type RegistryMirrors = ReadonlyMap<string, string>;

const AUTHORITY = /^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:.]+\])(?::\d{1,5})?$/;
const PATH = /^[a-z0-9][a-z0-9._-]*(?:\/[a-z0-9][a-z0-9._-]*)*$/;
/** Docker Hub's other names: one mirror setting covers them all. */
const DOCKER_HUB = ['docker.io', 'index.docker.io', 'registry-1.docker.io'];

/**
 * Reads `registry=mirror,registry=mirror`; a mirror is `https://host[:port][/path]` or the
 * same without `https://`. Anything else stops the start with a message.
 */
export function parseMirrors(text: string | undefined): RegistryMirrors {
  const mirrors = new Map<string, string>();
  for (const entry of (text ?? '').split(',').map((e) => e.trim()).filter(Boolean)) {
    const [registry, target] = entry.split('=').map((s) => s.trim().toLowerCase());
    const bad = (why: string) => invalid(`BERTH_REGISTRY_MIRRORS: '${entry}' ${why}: write registry=mirror, like docker.io=https://mirror.corp`);
    if (!registry || !target || entry.split('=').length !== 2) throw bad('is not registry=mirror');
    if (!AUTHORITY.test(registry)) throw bad(`names no registry host ('${registry}')`);
    // Pulls speak HTTPS except to loopback (registry.ts copyArgs), so the scheme can only be https.
    const bare = target.replace(/^https:\/\//, '').replace(/\/+$/, '');
    if (/^[a-z][a-z0-9+.-]*:\/\//.test(bare)) throw bad('gives a mirror URL that is not https://');
    const [authority, ...path] = bare.split('/');
    if (!authority || !AUTHORITY.test(authority) || (path.length > 0 && !PATH.test(path.join('/')))) throw bad(`gives no mirror host[:port][/path] ('${target}')`);
    for (const name of DOCKER_HUB.includes(registry) ? DOCKER_HUB : [registry]) mirrors.set(name, bare);
  }
  return mirrors;
}

/**
 * Where `ref` is pulled from: the same reference with its registry replaced by the mirror
 * (Docker Hub's one-part names get their `library/`), or `ref` itself when its registry has none.
 */
export function mirrored(ref: string, mirrors: RegistryMirrors): string {
  const slash = ref.indexOf('/');
  const registry = ref.slice(0, slash).toLowerCase();
  const mirror = mirrors.get(registry);
  if (!mirror) return ref;
  let path = ref.slice(slash + 1);
  if (DOCKER_HUB.includes(registry) && !path.split(/[:@]/)[0]!.includes('/')) path = `library/${path}`;
  return `${mirror}/${path}`;
}
