// Builds a devcontainer's image on this runner with buildah: its Dockerfile (build.dockerfile,
// context, args, target), then its features, into Berth's store under a content-addressed
// name, reused until anything that went into it changes.
//
// Isolation: buildah runs as root in a network namespace of its own whose only way out is
// an egress proxy with the project's policy (RUN steps see HTTP(S)_PROXY; nothing else is
// reachable, not even the host's loopback), and a mount namespace where crun sees a cgroup
// layout it accepts, and in a user namespace mapped onto the environments' unprivileged id
// range (buildah.ts): root in a build is nobody on the host. RUN steps run under crun
// (--isolation oci) inside that, with its pid, mount, ipc and uts namespaces.
// Base images come from Berth's store (build-base.ts), never from a registry buildah picks;
// build storage is build/ in the image store's folder (DATA_DIR/images/build), with buildah's layer cache.
import { randomBytes } from 'node:crypto';
import { chown, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, connect, type BlockList, type Server } from 'node:net';
import { join, relative } from 'node:path';
import { invalid } from '../../shared/errors.ts';
import type { EgressNetworkConfig } from '../network/company.ts';
import { EgressProxy } from '../network/proxy.ts';
import type { EgressPolicy, NetworkEvent } from '../network/types.ts';
import { sha256 } from './blobs.ts';
import { ensureBase } from './build-base.ts';
import { copyContext, insideCheckout, DEFAULT_MAX_CONTEXT_BYTES } from './build-context.ts';
import { rewriteFroms } from './build-dockerfile.ts';
import { Buildah, BUILD_UID, chownTree } from './buildah.ts';
import { fetchFeature } from './feature-fetch.ts';
import { resolveFeatures, type FeatureValue, type ResolvedFeature } from './features.ts';
import { withFileLock } from './lock.ts';
import type { ImageStore } from './store.ts';
import type { ImageRecord } from './types.ts';

/** What devcontainer.json asks to be built (repo-config.ts reads it). */
export interface BuildSpec {
  /** The folder devcontainer.json is in, relative to the checkout: paths in it are relative to that. */
  configDir: string;
  /** build.dockerfile (or the legacy dockerFile); without one the image is `image` (or the default) plus the features. */
  dockerfile?: string | undefined;
  context?: string | undefined;
  args?: Record<string, string> | undefined;
  target?: string | undefined;
  /** The image features are installed on when there is no Dockerfile. */
  image?: string | undefined;
  features?: Record<string, FeatureValue> | undefined;
  overrideFeatureInstallOrder?: string[] | undefined;
  /** Features see it as _REMOTE_USER (root when unset). */
  remoteUser?: string | undefined;
  containerUser?: string | undefined;
}

export interface BuildRequest {
  /** The org the image is for: base images resolve in it and the result is named in it. */
  org: string;
  /** For the image's name: build/<project>:<hash>. */
  project: string;
  /** The checkout (hostile). */
  repoDir: string;
  spec: BuildSpec;
  /** Where RUN steps may connect: the project's egress policy. */
  policy: EgressPolicy;
  /** The build log, line by line. */
  onLog?: ((line: string) => void) | undefined;
  signal?: AbortSignal | undefined;
}

export interface BuildResult {
  image: ImageRecord;
  /** True when an earlier build with the same inputs was reused. */
  reused: boolean;
}

export interface ImageBuilderOptions {
  store: ImageStore;
  /** Build storage; by default `build/` in the store's folder (DATA_DIR/images/build). */
  dir?: string | undefined;
  maxContextBytes?: number | undefined;
  /** Name resolution for the build's egress proxy. */
  resolver?: ((host: string) => Promise<string[]>) | undefined;
  /** TESTS ONLY: addresses the build's proxy may reach although private (like the runner network's). */
  allowPrivate?: BlockList | undefined;
  /** The instance's trusted networks and upstream proxy: a build's RUN steps go out as environments do. */
  egressNetwork?: EgressNetworkConfig | undefined;
}

/** Bumped when the way an image is built changes, so old results are not reused. */
const RECIPE = 1;
const FEATURES_DIR = '/tmp/berth-features';
const MAX_DOCKERFILE_BYTES = 1024 * 1024;

export class ImageBuilder {
  readonly #store: ImageStore;
  readonly #buildah: Buildah;
  readonly #o: ImageBuilderOptions & { dir: string };

  constructor(o: ImageBuilderOptions) {
    this.#o = { ...o, dir: o.dir ?? join(o.store.dir, 'build') };
    this.#store = o.store;
    this.#buildah = new Buildah({ dir: this.#o.dir });
  }

  async build(req: BuildRequest): Promise<BuildResult> {
    const log = (line: string) => {
      try {
        req.onLog?.(line);
      } catch {
        // The log's reader going away never stops a build.
      }
    };
    const { spec } = req;
    const scratch = join(this.#o.dir, 'tmp', `build-${randomBytes(8).toString('hex')}`);
    await mkdir(scratch, { recursive: true, mode: 0o700 });
    try {
      // Read and copy everything first: what is hashed is exactly what is built.
      let dockerfile: { text: string; contextHash: string; file: string } | undefined;
      if (spec.dockerfile !== undefined) {
        const path = await insideCheckout(req.repoDir, spec.configDir, spec.dockerfile, 'build.dockerfile');
        const s = await stat(path);
        if (!s.isFile()) throw invalid(`build.dockerfile '${spec.dockerfile}' is not a file`);
        if (s.size > MAX_DOCKERFILE_BYTES) throw invalid(`build.dockerfile '${spec.dockerfile}' is larger than 1 MiB`);
        const contextDir = await insideCheckout(req.repoDir, spec.configDir, spec.context ?? '.', 'build.context');
        if (!(await stat(contextDir)).isDirectory()) throw invalid(`build.context '${spec.context}' is not a folder`);
        log(`copying the build context ${relative(req.repoDir, contextDir) || '.'}`);
        const contextHash = await copyContext(contextDir, join(scratch, 'context'), this.#o.maxContextBytes ?? DEFAULT_MAX_CONTEXT_BYTES);
        dockerfile = { text: await readFile(path, 'utf8'), contextHash, file: relative(req.repoDir, path) };
      }
      let fetched = 0;
      const maxBytes = this.#o.maxContextBytes ?? DEFAULT_MAX_CONTEXT_BYTES;
      const fetch = (ref: string) => fetchFeature(this.#store, ref, join(scratch, 'fetched', String(fetched++)), maxBytes, log);
      const features = await resolveFeatures(req.repoDir, spec.configDir, spec.features ?? {}, spec.overrideFeatureInstallOrder, fetch);
      const featureHashes: string[] = [];
      for (const [n, f] of features.entries()) featureHashes.push(await copyContext(f.dir, join(scratch, 'features', String(n)), this.#o.maxContextBytes ?? DEFAULT_MAX_CONTEXT_BYTES));

      // Base images, resolved in the org the way --image would be.
      const bases = new Map<string, ImageRecord>();
      const args = spec.args ?? {};
      const resolveBase = async (ref: string) => {
        if (!bases.has(ref)) {
          log(`resolving base image ${ref}`);
          bases.set(ref, await this.#store.resolve(ref, { org: req.org, onProgress: (e) => e.bytes === undefined && log(e.message) }));
        }
        return bases.get(ref)!;
      };
      let rewritten: string | undefined;
      if (dockerfile) {
        const { froms } = rewriteFroms(dockerfile.text, args, (ref) => ref, dockerfile.file);
        for (const f of froms) if (!f.internal) await resolveBase(f.ref);
        rewritten = rewriteFroms(dockerfile.text, args, (ref) => `localhost/berth-base:${bases.get(ref)!.digest.slice(7)}`, dockerfile.file).text;
      } else {
        await resolveBase(spec.image ?? 'default');
      }

      const key = sha256(
        JSON.stringify({
          recipe: RECIPE,
          dockerfile: dockerfile && { text: dockerfile.text, context: dockerfile.contextHash, args, target: spec.target ?? null },
          image: dockerfile ? null : (spec.image ?? 'default'),
          bases: Object.fromEntries([...bases].map(([ref, r]) => [ref, r.digest])),
          features: features.map((f, n) => ({ key: f.key, files: featureHashes[n], env: f.env, containerEnv: f.containerEnv })),
          users: [spec.remoteUser ?? null, spec.containerUser ?? null],
        }),
      ).slice(7);
      const name = `build/${slugOf(req.project)}:${key.slice(0, 20)}`;
      const existing = await this.#store.get(name, { org: req.org });
      if (existing) {
        log(`image ${name} is up to date: nothing changed since it was built`);
        return { image: existing, reused: true };
      }

      return await withFileLock(join(this.#o.dir, 'locks', `${key}.lock`), async () => {
        const again = await this.#store.get(name, { org: req.org });
        if (again) return { image: again, reused: true };
        for (const r of bases.values()) await ensureBase(this.#buildah, r, log);
        // buildah runs as BUILD_UID: what it reads is given to it.
        await chownTree(scratch, BUILD_UID);
        return await this.#withProxy(req, key, log, async (proxySocket) => {
          const run = async (what: string, argv: string[]) => {
            const r = await this.#buildah.run(argv, { proxySocket, onLine: log, signal: req.signal });
            if (r.code !== 0) throw invalid(`${what} failed (buildah exited with ${r.code}): ${r.tail.slice(-3).join(' / ')}`);
            return r;
          };
          const common = ['--isolation', 'oci', '--network', 'host', '--pull=never', '--layers', '--signature-policy', this.#buildah.policyPath];
          let image = dockerfile ? `localhost/berth-build:${key}-dockerfile` : `localhost/berth-base:${[...bases.values()][0]!.digest.slice(7)}`;
          if (dockerfile) {
            await writeFile(join(scratch, 'Dockerfile'), rewritten!);
            log(`building ${dockerfile.file}`);
            const buildArgs = Object.entries(args).flatMap(([k, v]) => ['--build-arg', `${k}=${v}`]);
            await run(`building ${dockerfile.file}`, ['bud', ...common, ...buildArgs, ...(spec.target ? ['--target', spec.target] : []), '-f', join(scratch, 'Dockerfile'), '-t', image, join(scratch, 'context')]);
          }
          if (features.length) {
            const user = (await this.#buildah.run(['inspect', '--type', 'image', '--format', '{{.OCIv1.Config.User}}', image])).stdout.trim();
            await writeFile(join(scratch, 'features', 'Dockerfile'), featuresDockerfile(image, features, spec, user));
            log(`installing ${features.length} feature(s): ${features.map((f) => f.id).join(', ')}`);
            const withFeatures = `localhost/berth-build:${key}-features`;
            await run('installing the features', ['bud', ...common, '-f', join(scratch, 'features', 'Dockerfile'), '-t', withFeatures, join(scratch, 'features')]);
            image = withFeatures;
          }
          const layout = join(scratch, 'out');
          await run('exporting the image', ['push', '--signature-policy', this.#buildah.policyPath, '--format', 'oci', image, `oci:${layout}:latest`]);
          log(`storing the image as ${name}`);
          const record = await this.#store.importArchive(layout, { name, org: req.org }, (e) => log(e.message));
          log(`built ${name} (${record.digest.slice(0, 19)})`);
          return { image: record, reused: false };
        });
      });
    } finally {
      await rm(scratch, { recursive: true, force: true }).catch(() => {});
    }
  }

  /** Runs `fn` with a unix socket (BUILD_UID's) that leads to an egress proxy with the project's policy. */
  async #withProxy<T>(req: BuildRequest, key: string, log: (line: string) => void, fn: (socket: string) => Promise<T>): Promise<T> {
    const proxy = new EgressProxy({
      environmentId: `build-${key.slice(0, 12)}`,
      policies: { policyFor: () => req.policy },
      events: { record: (e: NetworkEvent) => log(`network: ${e.method ?? e.kind} ${e.host}:${e.port}${e.path ?? ''} ${e.allowed ? 'allowed' : `refused (${e.rule})`}`) },
      usage: { bytesUp: 0, bytesDown: 0, connections: 0, open: 0, refused: 0, peak: 0 },
      resolver: this.#o.resolver,
      allowPrivate: this.#o.allowPrivate,
      egressNetwork: this.#o.egressNetwork,
    });
    await proxy.listen(0, '127.0.0.1');
    const socket = join(this.#o.dir, 'run', `proxy-${key.slice(0, 12)}-${process.pid}.sock`);
    await mkdir(join(this.#o.dir, 'run'), { recursive: true });
    await rm(socket, { force: true });
    const relay: Server = createServer((client) => {
      const upstream = connect(proxy.address().port, '127.0.0.1');
      client.pipe(upstream).pipe(client);
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
    });
    await new Promise<void>((resolve, reject) => relay.once('error', reject).listen(socket, resolve));
    try {
      await chown(socket, BUILD_UID, BUILD_UID);
      return await fn(socket);
    } finally {
      await new Promise((resolve) => relay.close(resolve));
      await proxy.close();
      await rm(socket, { force: true });
    }
  }
}

/** A project name as an image name's path component. */
function slugOf(project: string): string {
  return project.toLowerCase().replace(/[^a-z0-9._-]+/g, '-').replace(/^[^a-z0-9]+/, '').slice(0, 64) || 'project';
}

const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

/**
 * The spec's install step for each feature, in order: its folder copied in, its options and
 * the _REMOTE_USER/_CONTAINER_USER variables in the environment, install.sh run as root; its
 * containerEnv in the image; the image's own user restored at the end.
 */
export function featuresDockerfile(base: string, features: ResolvedFeature[], spec: BuildSpec, imageUser: string): string {
  if (imageUser && !/^[\w.:-]+$/.test(imageUser)) throw invalid(`the image's USER '${imageUser}' is not a user name or id`);
  const containerUser = spec.containerUser ?? (imageUser || 'root');
  const remoteUser = spec.remoteUser ?? containerUser;
  const lines = [`FROM ${base}`, 'USER root'];
  for (const [n, f] of features.entries()) {
    const dir = `${FEATURES_DIR}/${n}`;
    const env = Object.entries(f.env).map(([k, v]) => `export ${k}=${quote(v)}`);
    const users = [
      `export _REMOTE_USER=${quote(remoteUser)} _CONTAINER_USER=${quote(containerUser)}`,
      `export _REMOTE_USER_HOME="$(getent passwd "$_REMOTE_USER" | cut -d: -f6)" _CONTAINER_USER_HOME="$(getent passwd "$_CONTAINER_USER" | cut -d: -f6)"`,
    ];
    lines.push(`COPY ${n}/ ${dir}/`);
    const script = [...env, ...users, `cd ${dir}`, 'chmod +x ./install.sh', './install.sh'].join('\n');
    // The script as one JSON-quoted argument: nothing in an option's value can end the RUN line.
    lines.push(`RUN ${JSON.stringify(['/bin/sh', '-ec', script])}`);
    for (const [k, v] of Object.entries(f.containerEnv)) lines.push(`ENV ${k}=${JSON.stringify(v)}`);
  }
  lines.push(`RUN ["rm", "-rf", "${FEATURES_DIR}"]`);
  if (imageUser) lines.push(`USER ${imageUser}`);
  return `${lines.join('\n')}\n`;
}

