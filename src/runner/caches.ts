// Where each package cache appears inside an environment and what its tools are told.
// Pure: the runner makes the host directories (one per project and kind, next to the
// project's named volumes) and binds them; this says where, with which variables and files.
import { volumeTargetProblem } from '../shared/env-spec.ts';
import type { CacheKind } from '../shared/caches.ts';

/** The folder the caches without a fixed place of their own are mounted under. */
export const CACHES_DIR = '/var/cache/berth';

/** apt keeps the .debs it downloaded (its default since Debian 10 drops them after a successful install). */
export const APT_KEEP_CONF = [
  '// Written by Berth: the project\'s apt cache (berth project update --cache apt) keeps what apt downloads.',
  'Binary::apt::APT::Keep-Downloaded-Packages "true";',
  'APT::Keep-Downloaded-Packages "true";',
  '',
].join('\n');

/** Stands in for Docker images' docker-clean, whose hook deletes every downloaded .deb after an install. */
export const APT_NO_CLEAN_CONF = "// Written by Berth: the image's docker-clean is off while the project's apt cache is mounted.\n";

/**
 * The variables for a command run as `uid`: a user other than the environment's root gets a
 * folder of its own in each cache (created by its tools in the cache's 1777 root), so what one
 * user wrote never makes another's install fail on a file it may not change (npm refuses a
 * cache with another owner's files). A project's tasks run as one user, so they share.
 */
export function cacheEnvFor(env: readonly string[], uid: number): string[] {
  if (uid === 0) return [...env];
  const prefix = new RegExp(`^([A-Za-z_]+=${CACHES_DIR}/[a-z]+)(/.*)?$`);
  return env.map((e) => e.replace(prefix, (_, head: string, rest: string | undefined) => `${head}/uid-${uid}${rest ?? ''}`));
}

export interface CacheLayout {
  /** Host directory name (under the project's volumes: a leading dot no volume name can take) → where it is mounted. */
  volumes: { dir: string; target: string }[];
  /** Variables for the environment's init and every command. */
  env: string[];
  /** Read-only files bound at `destination` (over the image's own, if it has one). */
  files: { content: string; destination: string }[];
}

/**
 * The mounts for `kinds`. `imageEnv` is the image's own environment: an image that sets
 * CARGO_HOME (the rust images: its bin/ holds cargo itself) keeps it, with the cache over its
 * registry/; any other gets a CARGO_HOME in the cache. `dockerClean`: the image has
 * /etc/apt/apt.conf.d/docker-clean.
 */
export function cacheLayout(kinds: readonly CacheKind[], opts: { imageEnv: readonly string[]; dockerClean: boolean }): CacheLayout {
  const out: CacheLayout = { volumes: [], env: [], files: [] };
  const at = (kind: CacheKind, target = `${CACHES_DIR}/${kind}`) => out.volumes.push({ dir: `.cache-${kind}`, target });
  for (const kind of new Set(kinds)) {
    switch (kind) {
      case 'npm':
        at(kind);
        out.env.push(`npm_config_cache=${CACHES_DIR}/npm`, `YARN_CACHE_FOLDER=${CACHES_DIR}/npm/yarn`);
        break;
      case 'pip':
        at(kind);
        out.env.push(`PIP_CACHE_DIR=${CACHES_DIR}/pip`, `UV_CACHE_DIR=${CACHES_DIR}/pip/uv`);
        break;
      case 'go':
        at(kind);
        out.env.push(`GOMODCACHE=${CACHES_DIR}/go/mod`, `GOCACHE=${CACHES_DIR}/go/build`);
        break;
      case 'cargo': {
        const home = opts.imageEnv.find((e) => e.startsWith('CARGO_HOME='))?.slice('CARGO_HOME='.length);
        if (home && !volumeTargetProblem(`${home}/registry`)) at(kind, `${home.replace(/\/+$/, '')}/registry`);
        else {
          at(kind);
          out.env.push(`CARGO_HOME=${CACHES_DIR}/cargo`);
        }
        break;
      }
      case 'apt':
        at(kind, '/var/cache/apt/archives');
        out.files.push({ content: APT_KEEP_CONF, destination: '/etc/apt/apt.conf.d/99berth-cache' });
        if (opts.dockerClean) out.files.push({ content: APT_NO_CLEAN_CONF, destination: '/etc/apt/apt.conf.d/docker-clean' });
        break;
    }
  }
  return out;
}
