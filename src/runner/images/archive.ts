// Reads an image handed over as files: an OCI image layout or a docker-save archive, as a
// directory (archive files are extracted to one first). Produces a plan: which blobs to
// check and which layers to apply. Manifests and configs are checked against their digests
// before they are parsed; only the entry points (index.json, manifest.json) cannot be.
import { createReadStream } from 'node:fs';
import { lstat, mkdir, readFile, realpath, stat } from 'node:fs/promises';
import { basename, join, posix } from 'node:path';
import { extract } from 'tar';
import type { z } from 'zod';
import { BerthError, invalid } from '../../shared/errors.ts';
import { ByteBudget, decompressed, hexOf, sha256, sniffCompression, type Compression, type Digest } from './blobs.ts';
import {
  dockerManifestSchema,
  HOST_PLATFORM,
  imageConfigSchema,
  indexSchema,
  layerCompression,
  manifestSchema,
  MEDIA_TYPES,
  REF_NAME_ANNOTATIONS,
  type Descriptor,
  type ImageConfigFile,
} from './oci.ts';
import { countBytes } from './byte-progress.ts';
import { tarEntries } from './tar-entries.ts';
import type { ImageConfig, ImageProgress } from './types.ts';

export type ArchiveFormat = 'oci-layout' | 'docker-archive';

export interface LayerPlan {
  path: string;
  /** The stored blob's digest, when the format records one: checked before the layer is read. */
  digest?: Digest;
  size?: number;
  /** The uncompressed tar's digest (the config's rootfs.diff_ids): checked while unpacking. */
  diffId: Digest;
  compression: Compression;
}

export interface ImagePlan {
  format: ArchiveFormat;
  /** The config blob's digest, i.e. the image id: the content address in the store. */
  digest: Digest;
  config: ImageConfig;
  /** Lowest first. */
  layers: LayerPlan[];
  /** The reference the archive gives the image (a RepoTag or ref-name annotation), if any. */
  tag?: string;
}

// Registries refuse manifests over 4 MiB; a bigger JSON file here is not an image.
const MAX_JSON_BYTES = 4 << 20;
const MAX_INDEX_DEPTH = 4;

// What an image archive holds: its files, their folders, and (older docker save) links between layers.
const ARCHIVE_ENTRY_TYPES = new Set(['File', 'OldFile', 'ContiguousFile', 'Directory', 'SymbolicLink', 'Link']);

/**
 * Extracts an archive file (plain, gzip or zstd tar) into `into`. Every entry is checked
 * first, in a pass that writes nothing: a name that climbs out or is absolute, a kind of
 * file an image archive never holds, or more than `maxBytes` of content is `invalid` before
 * anything exists on disk. (node-tar's own strict refusals came mid-extraction, while it was
 * still writing entries the caller was trying to delete.)
 */
export async function extractArchive(file: string, into: string, maxBytes: number, progress: ImageProgress = () => {}): Promise<void> {
  const { size } = await stat(file);
  const checked = countBytes(progress, 'extract', `checking ${basename(file)}`, size);
  await checkArchive(file, new ByteBudget(maxBytes), (n) => checked.add(n));
  checked.end();
  await mkdir(into, { recursive: true, mode: 0o700 });
  const extracted = countBytes(progress, 'extract', `extracting ${basename(file)}`, size);
  try {
    // strict: warnings (bad checksums, unsafe paths, truncation) are errors, not skipped entries.
    await new Promise<void>((resolve, reject) => {
      // node-tar's unpacker says 'finish' once every entry is on disk (what extract({ file }) waits for).
      const unpack = extract({ cwd: into, strict: true, preserveOwner: false }).on('finish', resolve).on('error', reject);
      createReadStream(file)
        .on('data', (chunk) => extracted.add(chunk.length))
        .on('error', reject)
        .pipe(unpack);
    });
    extracted.end();
  } catch (error) {
    throw invalid(`it is not a readable tar archive (${(error as Error).message})`);
  }
}

async function checkArchive(file: string, budget: ByteBudget, onRead: (bytes: number) => void): Promise<void> {
  try {
    for await (const entry of tarEntries(decompressed(file, await sniffCompression(file), budget, onRead))) {
      for (const name of entry.type === 'Link' ? [entry.path, entry.linkpath ?? ''] : [entry.path]) {
        const normalized = posix.normalize(name);
        if (posix.isAbsolute(name) || normalized === '..' || normalized.startsWith('../')) {
          throw invalid(`its entry '${entry.path}' names '${name}', outside the archive`);
        }
      }
      if (!ARCHIVE_ENTRY_TYPES.has(entry.type)) throw invalid(`its entry '${entry.path}' is a ${entry.type}, which image archives do not hold`);
    }
  } catch (error) {
    if (error instanceof BerthError && !error.message.startsWith('not a valid tar archive')) throw error;
    throw invalid(`it is not a readable tar archive (${(error as Error).message.replace(/^not a valid tar archive \((.*)\)$/s, '$1')})`);
  }
}

/**
 * Reads the image in `dir`. `select` picks one image when the archive holds several (by
 * its ref name or RepoTag). Throws `invalid` with a message that names what is wrong.
 */
export async function inspectImageDir(dir: string, select?: string): Promise<ImagePlan> {
  const root = await realpath(dir);
  if ((await isFile(root, 'oci-layout')) && (await isFile(root, 'index.json'))) return inspectOciLayout(root, select);
  if (await isFile(root, 'manifest.json')) return inspectDockerArchive(root, select);
  throw invalid('it is neither an OCI image layout (oci-layout and index.json) nor a docker-save archive (manifest.json)');
}

async function inspectOciLayout(root: string, select: string | undefined): Promise<ImagePlan> {
  const index = parse(await readSmall(root, 'index.json', 'index.json'), indexSchema, 'index.json');
  let descriptor = pickManifest(index.manifests, 'index.json', select);
  const tag = refName(descriptor);
  for (let depth = 0; isIndex(descriptor); depth++) {
    if (depth === MAX_INDEX_DEPTH) throw invalid(`image indexes are nested more than ${MAX_INDEX_DEPTH} deep`);
    const nested = parse(await readBlob(root, descriptor, 'image index'), indexSchema, `image index ${descriptor.digest}`);
    descriptor = pickManifest(nested.manifests, `image index ${descriptor.digest}`, undefined);
  }
  if (!isManifest(descriptor)) throw invalid(`unsupported manifest media type '${descriptor.mediaType}'`);

  const manifest = parse(await readBlob(root, descriptor, 'image manifest'), manifestSchema, 'the image manifest');
  const config = parse(await readBlob(root, manifest.config, 'image config'), imageConfigSchema, 'the image config');
  checkConfig(config, manifest.layers.length);
  const layers = await Promise.all(
    manifest.layers.map(async (layer, i): Promise<LayerPlan> => {
      const compression = layerCompression(layer.mediaType);
      if (!compression) throw invalid(`layer ${i + 1} has unsupported media type '${layer.mediaType}'`);
      return {
        path: await insideFile(root, blobPath(layer.digest), `layer ${i + 1} (${layer.digest})`),
        digest: layer.digest,
        size: layer.size,
        diffId: config.rootfs.diff_ids[i]!,
        compression,
      };
    }),
  );
  return { format: 'oci-layout', digest: manifest.config.digest, config: imageConfig(config), layers, ...(tag && { tag }) };
}

async function inspectDockerArchive(root: string, select: string | undefined): Promise<ImagePlan> {
  const entries = parse(await readSmall(root, 'manifest.json', 'manifest.json'), dockerManifestSchema, 'manifest.json');
  const entry = entries.length === 1 ? entries[0] : entries.find((e) => select !== undefined && e.RepoTags?.includes(select));
  if (!entry) {
    const tags = entries.flatMap((e) => e.RepoTags ?? []);
    throw invalid(`it holds ${entries.length} images${tags.length ? ` (${tags.join(', ')})` : ''}: pass the name of the one to import`);
  }
  const configBytes = await readSmall(root, entry.Config, 'the image config');
  const digest = sha256(configBytes);
  // Config files are named after their digest (`<hex>.json`, `blobs/sha256/<hex>`): check it.
  const named = /([a-f0-9]{64})(?:\.json)?$/.exec(entry.Config)?.[1];
  if (named && named !== hexOf(digest)) throw invalid(`image config ${entry.Config} has digest ${digest}: the archive is corrupt`);
  const config = parse(configBytes, imageConfigSchema, 'the image config');
  checkConfig(config, entry.Layers.length);
  const layers = await Promise.all(
    entry.Layers.map(async (layer, i): Promise<LayerPlan> => {
      const path = await insideFile(root, layer, `layer ${i + 1} (${layer})`);
      // Newer docker names layers blobs/sha256/<digest>; older formats only have the diff_id.
      const hex = /(?:^|\/)blobs\/sha256\/([a-f0-9]{64})$/.exec(layer)?.[1];
      return {
        path,
        ...(hex && { digest: `sha256:${hex}` as Digest }),
        diffId: config.rootfs.diff_ids[i]!,
        compression: await sniffCompression(path),
      };
    }),
  );
  const tag = entry.RepoTags?.[0];
  return { format: 'docker-archive', digest, config: imageConfig(config), layers, ...(tag && { tag }) };
}

/** Picks the one image in an index this runner can run. */
function pickManifest(descriptors: Descriptor[], where: string, select: string | undefined): Descriptor {
  let candidates = descriptors.filter((d) => isIndex(d) || isManifest(d));
  if (select !== undefined) {
    const named = candidates.filter((d) => REF_NAME_ANNOTATIONS.some((key) => d.annotations?.[key] === select));
    if (named.length > 0) candidates = named;
  }
  // Platform-less entries are single-platform images; the config check catches a wrong one.
  // This also drops attestation manifests, which buildx marks unknown/unknown.
  const runnable = candidates.filter(
    (d) => !d.platform || (d.platform.os === HOST_PLATFORM.os && d.platform.architecture === HOST_PLATFORM.architecture),
  );
  if (runnable.length === 1) return runnable[0]!;
  const host = `${HOST_PLATFORM.os}/${HOST_PLATFORM.architecture}`;
  if (runnable.length === 0) {
    if (candidates.length === 0) throw invalid(`${where} lists no image manifests`);
    const platforms = candidates.map((d) => `${d.platform?.os}/${d.platform?.architecture}`);
    throw invalid(`${where} has no image for ${host}, only for ${platforms.join(', ')}`);
  }
  const names = runnable.map(refName).filter((name) => name !== undefined);
  throw invalid(`${where} holds ${runnable.length} images${names.length ? ` (${names.join(', ')})` : ''}: pass the name of the one to import`);
}

function checkConfig(config: ImageConfigFile, layerCount: number): void {
  if (config.os !== HOST_PLATFORM.os || config.architecture !== HOST_PLATFORM.architecture) {
    throw invalid(`the image is for ${config.os}/${config.architecture}, but this runner runs ${HOST_PLATFORM.os}/${HOST_PLATFORM.architecture}`);
  }
  if (config.rootfs.diff_ids.length !== layerCount) {
    throw invalid(`the image config lists ${config.rootfs.diff_ids.length} layers but the manifest ${layerCount}`);
  }
}

function imageConfig(file: ImageConfigFile): ImageConfig {
  const c = file.config;
  return {
    env: c?.Env ?? [],
    ...(c?.WorkingDir && { workingDir: c.WorkingDir }),
    ...(c?.User && { user: c.User }),
    ...(c?.Entrypoint && { entrypoint: c.Entrypoint }),
    ...(c?.Cmd && { cmd: c.Cmd }),
  };
}

const isIndex = (d: Descriptor) => (MEDIA_TYPES.index as readonly string[]).includes(d.mediaType);
const isManifest = (d: Descriptor) => (MEDIA_TYPES.manifest as readonly string[]).includes(d.mediaType);
const refName = (d: Descriptor) => REF_NAME_ANNOTATIONS.map((key) => d.annotations?.[key]).find((name) => name !== undefined);
const blobPath = (digest: Digest) => `blobs/sha256/${hexOf(digest)}`;

/** Reads a small blob and checks it against its descriptor before anything parses it. */
async function readBlob(root: string, descriptor: Descriptor, what: string): Promise<Buffer> {
  if (descriptor.size > MAX_JSON_BYTES) throw invalid(`the ${what} is ${descriptor.size} bytes, more than an image's metadata can be`);
  const bytes = await readSmall(root, blobPath(descriptor.digest), `the ${what}`);
  if (bytes.length !== descriptor.size || sha256(bytes) !== descriptor.digest) {
    throw invalid(`the ${what} does not match its digest ${descriptor.digest}: the image is corrupt`);
  }
  return bytes;
}

async function readSmall(root: string, relative: string, what: string): Promise<Buffer> {
  const path = await insideFile(root, relative, what);
  if ((await stat(path)).size > MAX_JSON_BYTES) throw invalid(`${what} is larger than ${MAX_JSON_BYTES} bytes`);
  return readFile(path);
}

function parse<T extends z.ZodType>(bytes: Buffer, schema: T, what: string): z.infer<T> {
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw invalid(`${what} is not valid JSON`);
  }
  const result = schema.safeParse(json);
  if (!result.success) {
    const problems = result.error.issues.slice(0, 3).map((issue) => `${issue.path.join('.') || '(top)'}: ${issue.message}`);
    throw invalid(`${what} is malformed (${problems.join('; ')})`);
  }
  return result.data;
}

/**
 * The real path of the regular file `relative` names inside `root`. Archives name their
 * files themselves, so a name (or a symlink on the way) must not lead out of the archive.
 */
async function insideFile(root: string, relative: string, what: string): Promise<string> {
  const normalized = posix.normalize(relative);
  if (posix.isAbsolute(relative) || normalized === '..' || normalized.startsWith('../')) {
    throw invalid(`${what} is named '${relative}', outside the archive`);
  }
  let real: string;
  try {
    real = await realpath(join(root, normalized));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw invalid(`${what} is missing from the archive`);
    throw error;
  }
  if (!real.startsWith(`${root}/`)) throw invalid(`${what} is a link that leads outside the archive`);
  if (!(await stat(real)).isFile()) throw invalid(`${what} is not a regular file`);
  return real;
}

async function isFile(root: string, name: string): Promise<boolean> {
  try {
    return (await lstat(join(root, name))).isFile();
  } catch {
    return false;
  }
}
