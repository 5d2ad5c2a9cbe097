// The image store: turns what a user names with --image into an unpacked, read-only root
// file system that environments use as their overlay lowerdir. Images are content
// addressed and unpacked once per runner (catalog.ts has the layout on disk); this module
// decides what a reference means and makes sure each image is built exactly once.
import { rm, stat } from 'node:fs/promises';
import { basename, join, resolve as resolvePath } from 'node:path';
import pino, { type Logger } from 'pino';
import type { BlockList } from 'node:net';
import { BerthError, invalid, notFound, unavailable } from '../../shared/errors.ts';
import { formatSize } from '../../shared/units.ts';
import { ID_BASE } from '../idmap.ts';
import { extractArchive, inspectImageDir } from './archive.ts';
import type { Digest } from './blobs.ts';
import { Catalog, INSTANCE, type RefScope } from './catalog.ts';
import { buildDebianRootfs, defaultRecipe, recipeDigest } from './debian.ts';
import { Inflight } from './inflight.ts';
import { withFileLock } from './lock.ts';
import { checkImageName, derivedName, isImageName, isRegistryReference, looksLikePath } from './names.ts';
import { PullProxy } from './pull-proxy.ts';
import { checkRegistry, pullImage, type RegistryAccess, type RegistryCredential } from './registry.ts';
import { mirrored, type RegistryMirrors } from './mirrors.ts';
import { systemResolver } from '../network/destination.ts';
import { isTrusted, type EgressNetworkConfig } from '../network/company.ts';
import { ensureWorkspace, treeSize } from './rootfs.ts';
import type { ImageConfig, ImageProgress, ImageRecord, ImageSource } from './types.ts';
import { unpackPlan } from './unpack.ts';

export type { ImageConfig, ImagePhase, ImageProgress, ImageProgressEvent, ImageRecord, ImageSource } from './types.ts';

/** The name of the built-in Debian image (see debian.ts). */
export const DEFAULT_IMAGE = 'default';

const NPM_REGISTRY = 'https://registry.npmjs.org';
/** The most an image may unpack to (all layers' tar bytes) unless BERTH_MAX_IMAGE_SIZE says otherwise. */
export const DEFAULT_MAX_IMAGE_BYTES = 32 * 2 ** 30;

/** Who asks for an image decides what a reference may mean (see resolve). */
export interface ResolveOptions {
  /** The org the image is for: its own names come first, and what it pulls is named in it. Instance-level when absent. */
  org?: string | undefined;
  /**
   * The caller is an instance administrator, so a reference may be a path on this host
   * (imported at instance level, as `berth image import` does). Nobody else's may: the
   * path would be read by root on the host.
   */
  hostPaths?: boolean | undefined;
  onProgress?: ImageProgress | undefined;
  /**
   * The login for a registry (`docker.io`, `ghcr.io`, `host:port`, as the reference names
   * it), when the caller has one: asked only when an image is pulled, and sent only to the
   * registry the pull goes to (its mirror, when the instance has one for it).
   */
  login?: ((registry: string) => Promise<RegistryCredential | undefined>) | undefined;
}

/** The one answer to a host path from someone who may not name one: the same whatever is at the path. */
const HOST_PATH_REFUSED =
  'only an instance administrator may name a path on the server as an image: use an image name (`berth image ls`) or a registry reference, ' +
  'or ask an instance administrator to run `berth image import FILE`';

export interface ImageStoreOptions {
  /** Where images live. Must be on a file system overlayfs accepts as a lowerdir (ext4, xfs, btrfs). */
  dir: string;
  logger?: Logger;
  /** Debian mirror for the default image; mmdebstrap's default (deb.debian.org) when unset. */
  debianMirror?: string;
  /** npm registry the default image's npm comes from. */
  npmRegistry?: string;
  /** Registries pulled from even on private or loopback addresses (BERTH_ALLOWED_REGISTRIES): `host` or `host:port`. */
  allowedRegistries?: readonly string[] | undefined;
  /** Test escape hatch: addresses registry pulls may reach as if public (like the egress proxy's allowPrivateAddresses). */
  allowPrivateAddresses?: BlockList | undefined;
  /** Name resolution for registry hosts; the system resolver by default. */
  resolveHost?: ((host: string) => Promise<string[]>) | undefined;
  /** The most decompressed bytes one image may unpack to (BERTH_MAX_IMAGE_SIZE); DEFAULT_MAX_IMAGE_BYTES by default. */
  maxImageBytes?: number | undefined;
  /** CA certificates for registries (skopeo --src-cert-dir), for an internal CA; tests give theirs. */
  registryCertDir?: string | undefined;
  /** Where a registry's images are pulled from instead (BERTH_REGISTRY_MIRRORS, see mirrors.ts). */
  registryMirrors?: RegistryMirrors | undefined;
  /**
   * The company network (company.ts): registries in trusted networks are pulled from like
   * public ones, and pulls through the pull proxy go on through the upstream proxy.
   */
  egressNetwork?: EgressNetworkConfig | undefined;
}

type Populate = (rootfs: string, progress: ImageProgress) => Promise<ImageConfig>;

export class ImageStore {
  readonly dir: string;
  #catalog: Catalog;
  #log: Logger;
  #debianMirror: string | undefined;
  #npmRegistry: string;
  #registries: RegistryAccess;
  #maxImageBytes: number;
  #registryCertDir: string | undefined;
  #mirrors: RegistryMirrors;
  #egressNetwork: EgressNetworkConfig | undefined;
  // Two levels of sharing: requests for the same thing (an archive path, a registry
  // reference, the default image) share one run; runs that turn out to need the same
  // content share one unpack.
  #requests = new Inflight<ImageRecord>();
  #builds = new Inflight<void>();

  constructor(options: ImageStoreOptions) {
    this.dir = resolvePath(options.dir);
    this.#catalog = new Catalog(this.dir);
    this.#log = (options.logger ?? pino({ enabled: false })).child({ component: 'images' });
    this.#debianMirror = options.debianMirror;
    this.#npmRegistry = options.npmRegistry ?? NPM_REGISTRY;
    const trusted = options.egressNetwork?.trusted;
    this.#registries = {
      allowed: options.allowedRegistries ?? [],
      allowPrivate: options.allowPrivateAddresses,
      resolve: options.resolveHost,
      trusted: trusted ? (address) => isTrusted(trusted, address) : undefined,
    };
    this.#egressNetwork = options.egressNetwork;
    this.#maxImageBytes = options.maxImageBytes ?? DEFAULT_MAX_IMAGE_BYTES;
    this.#registryCertDir = options.registryCertDir;
    this.#mirrors = options.registryMirrors ?? new Map();
  }

  /**
   * Named images: the instance's, and those of `filter.orgs` (every org's when no filter is
   * given, for an instance administrator), sorted by name.
   */
  async list(filter?: { orgs: readonly string[] }): Promise<ImageRecord[]> {
    const orgs = filter ? filter.orgs : await this.#catalog.orgScopes();
    const records: ImageRecord[] = [];
    for (const scope of [INSTANCE, ...orgs.map((org) => ({ org }))]) {
      for (const [name, digest] of await this.#catalog.refs(scope)) {
        const record = await this.#record(name, digest, scope);
        if (record) records.push(record);
      }
    }
    return records.sort((a, b) => a.name.localeCompare(b.name) || (a.org ?? '').localeCompare(b.org ?? ''));
  }

  /** The image `name` means to `scope.org`: its own name first, then the instance's. */
  async get(name: string, scope: RefScope = INSTANCE): Promise<ImageRecord | undefined> {
    if (!isImageName(name)) return undefined;
    for (const s of scope.org === undefined ? [INSTANCE] : [{ org: scope.org }, INSTANCE]) {
      const digest = await this.#catalog.getRef(name, s);
      if (digest) return this.#record(name, digest, s);
    }
    return undefined;
  }

  /**
   * What a user typed for --image, as an image ready to run, in this order: a name stored
   * for `opts.org`, then for the instance; `default` (built on first use); for an instance
   * administrator only (`opts.hostPaths`), a path to an OCI image layout (directory or tar)
   * or a docker-save tarball (imported on first use); a registry reference with a host, like
   * docker.io/library/alpine:3.20 (pulled with skopeo on first use, if its registry passes
   * the address rules, and named in `opts.org`). Anything else is `not_found`, with a
   * message that says how to get an image. Without `hostPaths`, nothing about the host's
   * files is looked at: every path gets the same `forbidden`.
   */
  async resolve(ref: string, opts: ResolveOptions = {}): Promise<ImageRecord> {
    const { org, hostPaths = false, onProgress, login } = opts;
    if (typeof ref !== 'string' || ref.trim() === '') throw invalid('no image given: pass an image name, a path or a registry reference', 'image');
    const stored = await this.get(ref, { org });
    if (stored) return stored;
    if (ref === DEFAULT_IMAGE) return this.buildDefault(onProgress);
    if (!hostPaths) {
      if (looksLikePath(ref)) throw new BerthError('forbidden', HOST_PATH_REFUSED);
    } else {
      if (await stat(ref).then(() => true, () => false)) return this.importArchive(ref, {}, onProgress);
      if (looksLikePath(ref)) throw notFound(`no image archive at '${ref}': the path does not exist`);
    }
    if (isRegistryReference(ref)) return this.#pull(ref, org, onProgress, login);
    throw notFound(
      hostPaths
        ? `image '${ref}' not found: import one with \`berth image import FILE\`, pass a path to an OCI layout or ` +
            'docker-save tarball, or a registry reference with its host, like docker.io/library/alpine:3.20'
        : `image '${ref}' not found: \`berth image ls\` shows the images you can use; pass a registry reference with its host, ` +
            'like docker.io/library/alpine:3.20, or ask an instance administrator to import one',
    );
  }

  /**
   * Imports an OCI image layout (a directory, or a tar of one) or a docker-save / podman-save
   * tarball, named `opts.name`, else the archive's own reference, else after the file; at
   * instance level unless `opts.org` is given. The path is read as root: callers let only
   * instance administrators name one. A bad archive is `invalid` and leaves the store as it was.
   */
  async importArchive(path: string, opts: { name?: string | undefined; org?: string | undefined } = {}, onProgress?: ImageProgress): Promise<ImageRecord> {
    if (opts.name !== undefined) checkImageName(opts.name);
    if (opts.name === DEFAULT_IMAGE) throw invalid(`'${DEFAULT_IMAGE}' is the built-in image: import under another name`, 'name');
    const absolute = resolvePath(path);
    const scope: RefScope = { org: opts.org };
    return this.#requests.run(`archive:${opts.org ?? ''}:${absolute}:${opts.name ?? ''}`, onProgress, (progress) =>
      this.#importArchive(absolute, opts.name, scope, progress).catch((error: unknown) => {
        throw describeInput(error, path);
      }),
    );
  }

  /**
   * The default image (Debian bookworm with build tools, git, Python, this runner's Node.js
   * and npm): built the first time (about half a minute, from Debian's mirrors and the npm
   * registry), then returned from the store. A new recipe (another Node.js, say) builds anew.
   */
  async buildDefault(onProgress?: ImageProgress): Promise<ImageRecord> {
    const recipe = defaultRecipe();
    const digest = recipeDigest(recipe);
    return this.#requests.run(`default:${digest}`, onProgress, async (progress) => {
      await this.#ensure(digest, 'debian', progress, (rootfs, progress) =>
        buildDebianRootfs(rootfs, recipe, {
          ...(this.#debianMirror && { mirror: this.#debianMirror }),
          npmRegistry: this.#npmRegistry,
          progress,
        }),
      );
      return this.#name(DEFAULT_IMAGE, digest, INSTANCE);
    });
  }

  /**
   * Removes a name, and the image's files once no name refers to them. The caller must make
   * sure no environment still runs on it: its rootfs is their overlay lowerdir.
   */
  async remove(name: string, scope: RefScope = INSTANCE): Promise<void> {
    const digest = isImageName(name) ? await this.#catalog.getRef(name, scope) : undefined;
    if (!digest) throw notFound(`image '${name}' not found`);
    await this.#catalog.deleteRef(name, scope);
    if (!(await this.#catalog.inUse(digest))) {
      await this.#catalog.discard(digest);
      this.#log.info({ name, digest }, 'image removed');
    }
  }

  async #importArchive(path: string, name: string | undefined, scope: RefScope, progress: ImageProgress): Promise<ImageRecord> {
    const stats = await stat(path).catch((error: NodeJS.ErrnoException) => {
      throw error.code === 'ENOENT' ? notFound(`no such file or directory: ${path}`) : error;
    });
    if (stats.isDirectory()) return this.#importDir(path, path, name, undefined, scope, progress);
    if (!stats.isFile()) throw invalid('it is neither a file nor a directory');

    // Tarballs are extracted before they can be inspected, so remember what each held.
    const memo = await this.#catalog.readSource(path, stats);
    if (memo && (await this.#catalog.has(memo.digest))) return this.#name(name ?? memo.name, memo.digest, scope);
    const scratch = await this.#catalog.scratch();
    try {
      progress({ phase: 'extract', message: `reading ${basename(path)}` });
      await extractArchive(path, scratch, this.#maxImageBytes, progress);
      const record = await this.#importDir(scratch, path, name, undefined, scope, progress);
      await this.#catalog.writeSource(path, stats, record.digest, record.name);
      return record;
    } finally {
      await removeScratch(scratch);
    }
  }

  async #importDir(
    dir: string,
    origin: string,
    name: string | undefined,
    source: ImageSource | undefined,
    scope: RefScope,
    progress: ImageProgress,
  ): Promise<ImageRecord> {
    progress({ phase: 'inspect', message: 'reading the image manifest' });
    const plan = await inspectImageDir(dir, name);
    const finalName = name ?? derivedName(plan.tag, origin);
    if (finalName === DEFAULT_IMAGE) throw invalid(`it calls itself '${DEFAULT_IMAGE}', the built-in image: import it under another name`);
    await this.#ensure(plan.digest, source ?? plan.format, progress, (rootfs, progress) => unpackPlan(plan, rootfs, progress, this.#log, this.#maxImageBytes));
    return this.#name(finalName, plan.digest, scope);
  }

  /** Pulls `ref` and names it in `org` (instance level without one): a pull never names an image for anyone else. */
  #pull(ref: string, org: string | undefined, onProgress: ImageProgress | undefined, login: ResolveOptions['login']): Promise<ImageRecord> {
    return this.#requests.run(`pull:${org ?? ''}:${ref}`, onProgress, async (progress) => {
      // The image keeps the name people gave; the bytes come from the mirror when there is one.
      const source = mirrored(ref, this.#mirrors);
      const { listed } = await checkRegistry(source, this.#registries);
      const credential = await login?.(ref.split('/')[0]!.toLowerCase());
      const scratch = await this.#catalog.scratch();
      try {
        const layout = join(scratch, 'oci');
        if (source !== ref) progress({ phase: 'pull', message: `from the mirror ${source.split('/')[0]}` });
        // A listed registry is the instance administrator's trust; any other is reached only through the pull proxy.
        if (listed) await pullImage(source, layout, progress, { certDir: this.#registryCertDir, credential });
        else await this.#pullThroughProxy(source, layout, scratch, progress, credential);
        return await this.#importDir(layout, ref, ref, 'registry', { org }, progress).catch((error: unknown) => {
          throw describeInput(error, ref);
        });
      } finally {
        await removeScratch(scratch);
      }
    });
  }

  /**
   * Copies the OCI artifact `ref` (a devcontainer feature) as it is into the OCI layout `into`,
   * under the same rules as an image pull: mirrors, the registry address check, and the pull
   * proxy for any registry an instance administrator did not list. Nothing is stored or named.
   */
  async copyArtifact(ref: string, into: string, onProgress: ImageProgress = () => {}): Promise<void> {
    if (!isRegistryReference(ref)) throw invalid(`'${ref}' is not a registry reference: give its registry host, like ghcr.io/devcontainers/features/node:1`);
    const source = mirrored(ref, this.#mirrors);
    const { listed } = await checkRegistry(source, this.#registries);
    const scratch = await this.#catalog.scratch();
    try {
      if (listed) await pullImage(source, into, onProgress, { certDir: this.#registryCertDir });
      else await this.#pullThroughProxy(source, into, scratch, onProgress, undefined);
    } finally {
      await removeScratch(scratch);
    }
  }

  async #pullThroughProxy(ref: string, layout: string, scratch: string, progress: ImageProgress, credential: RegistryCredential | undefined): Promise<void> {
    const socket = join(scratch, 'proxy.sock');
    const proxy = await PullProxy.listen(socket, {
      allowPrivate: this.#registries.allowPrivate,
      resolve: this.#registries.resolve ?? systemResolver,
      maxBytes: this.#maxImageBytes,
      egressNetwork: this.#egressNetwork,
    });
    try {
      await pullImage(ref, layout, progress, { proxySocket: socket, certDir: this.#registryCertDir, credential });
    } catch (error) {
      if (proxy.overLimit) throw invalid(`cannot pull '${ref}': it is larger than ${formatSize(this.#maxImageBytes)}, the largest image this runner takes (an instance administrator sets BERTH_MAX_IMAGE_SIZE)`);
      if (proxy.refused.length > 0) {
        throw new BerthError(
          'forbidden',
          `cannot pull '${ref}': its registry sent the pull to ${[...new Set(proxy.refused)].join(', ')}, which pulls do not reach ` +
            '(loopback, private, link-local or this host): an instance administrator can list the registry in BERTH_ALLOWED_REGISTRIES',
        );
      }
      throw error;
    } finally {
      await proxy.close();
    }
  }

  /** Makes sure image `digest` is in the store, building it with `populate` unless it is. */
  async #ensure(digest: Digest, source: ImageSource, progress: ImageProgress, populate: Populate): Promise<void> {
    if (await this.#catalog.has(digest)) return;
    requireRoot();
    await this.#builds.run(digest, progress, (progress) =>
      withFileLock(
        this.#catalog.lockPath(digest),
        async () => {
          if (await this.#catalog.has(digest)) return; // another process built it while we waited
          const started = Date.now();
          const scratch = await this.#catalog.scratch();
          try {
            const rootfs = join(scratch, 'rootfs');
            const config = await populate(rootfs, progress);
            await ensureWorkspace(rootfs);
            const sizeBytes = await treeSize(rootfs);
            await this.#catalog.commit(scratch, { digest, source, sizeBytes, createdAt: new Date().toISOString(), config });
            this.#log.info({ digest, source, sizeBytes, ms: Date.now() - started }, 'image unpacked');
            progress({ phase: 'done', message: `image ready (${Math.round(sizeBytes / 2 ** 20)} MiB)`, fraction: 1 });
          } catch (error) {
            await removeScratch(scratch);
            throw error;
          }
        },
        (holder) => progress({ phase: 'wait', message: `waiting for process ${holder}, which is unpacking this image` }),
      ),
    );
  }

  async #name(name: string, digest: Digest, scope: RefScope): Promise<ImageRecord> {
    if ((await this.#catalog.getRef(name, scope)) !== digest) await this.#catalog.setRef(name, digest, scope);
    const record = await this.#record(name, digest, scope);
    if (!record) throw new Error(`image ${digest} vanished from the store while being named '${name}'`);
    return record;
  }

  async #record(name: string, digest: Digest, scope: RefScope): Promise<ImageRecord | undefined> {
    const image = await this.#catalog.readImage(digest);
    return image && { name, ...(scope.org !== undefined && { org: scope.org }), ...image, rootfs: this.#catalog.rootfs(digest) };
  }
}

/** Removes a scratch directory; a failure to clean up never hides what went wrong before it (the next store sweeps it). */
async function removeScratch(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 3 }).catch(() => {});
}

function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw unavailable(`unpacking images needs root: their files are given to the ids environments run as (${ID_BASE} and up)`);
  }
}

/** Says which input an `invalid` error is about; other errors pass through unchanged. */
function describeInput(error: unknown, input: string): unknown {
  if (error instanceof BerthError && error.kind === 'invalid' && error.field === undefined) {
    return invalid(`cannot import '${input}': ${error.message}`);
  }
  return error;
}
