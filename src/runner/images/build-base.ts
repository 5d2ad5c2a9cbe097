// A FROM image comes from Berth's own store, never from a registry buildah picks: the store
// resolves it under the org's rules (its names, the instance's, pulls through the pull
// proxy) and this module hands its tree to buildah as a one-layer OCI image, owners shifted
// back from the environments' id range. Exported once per digest and kept in the build
// storage under localhost/berth-base:<hex>.
import { createHash, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, lstat, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { unavailable } from '../../shared/errors.ts';
import { ID_BASE, ID_COUNT } from '../idmap.ts';
import { hexOf, sha256 } from './blobs.ts';
import { BUILD_UID, chownTree, type Buildah } from './buildah.ts';
import { HOST_PLATFORM } from './oci.ts';
import type { ImageRecord } from './types.ts';

export const baseTag = (image: ImageRecord) => `localhost/berth-base:${hexOf(image.digest)}`;

/** Makes sure `image` is in buildah's storage as baseTag(image); returns that tag. */
export async function ensureBase(buildah: Buildah, image: ImageRecord, log: (line: string) => void): Promise<string> {
  const tag = baseTag(image);
  if (await buildah.hasImage(tag)) return tag;
  log(`exporting base image ${image.name} (${image.digest.slice(0, 19)}) to the build storage`);
  const scratch = join(buildah.dir, 'tmp', `base-${randomBytes(8).toString('hex')}`);
  await mkdir(scratch, { recursive: true, mode: 0o700 });
  try {
    const layout = join(scratch, 'oci');
    await writeLayout(image, layout, scratch);
    await chownTree(scratch, BUILD_UID);
    const stored = await buildah.storeLayout(layout, tag);
    if (stored.code !== 0) throw unavailable(`the build storage could not take base image ${image.name}: ${stored.tail.slice(-3).join(' / ')}`);
    return tag;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

async function writeLayout(image: ImageRecord, layout: string, scratch: string): Promise<void> {
  const blobs = join(layout, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const layer = join(scratch, 'layer.tar');
  await tarUnshifted(image.rootfs, layer, scratch);
  const hash = createHash('sha256');
  await pipeline(createReadStream(layer), hash);
  const layerHex = hash.digest('hex');
  const layerSize = (await stat(layer)).size;
  await rename(layer, join(blobs, layerHex));
  const c = image.config;
  const config = Buffer.from(
    JSON.stringify({
      ...HOST_PLATFORM,
      config: { Env: c.env, ...(c.workingDir && { WorkingDir: c.workingDir }), ...(c.user && { User: c.user }), ...(c.entrypoint && { Entrypoint: c.entrypoint }), ...(c.cmd && { Cmd: c.cmd }) },
      rootfs: { type: 'layers', diff_ids: [`sha256:${layerHex}`] },
      // buildah checks that history and layers agree.
      history: [{ created: image.createdAt, created_by: `berth: image ${image.name} (${image.digest})` }],
    }),
  );
  const configDigest = sha256(config);
  await writeFile(join(blobs, hexOf(configDigest)), config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${layerHex}`, size: layerSize }],
    }),
  );
  const manifestDigest = sha256(manifest);
  await writeFile(join(blobs, hexOf(manifestDigest)), manifest);
  await writeFile(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: manifestDigest, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }],
    }),
  );
}

/** GNU tar of `rootfs` with every owner moved back from ID_BASE+n to n (the maps list each id the tree uses). */
async function tarUnshifted(rootfs: string, out: string, scratch: string): Promise<void> {
  const uids = new Set<number>();
  const gids = new Set<number>();
  // With file types, a recursive readdir does not follow symlinked directories (/dev/fd).
  for (const entry of await readdir(rootfs, { recursive: true, withFileTypes: true })) {
    const s = await lstat(join(entry.parentPath, entry.name));
    uids.add(s.uid);
    gids.add(s.gid);
  }
  const map = (ids: Set<number>) =>
    [...ids].filter((id) => id >= ID_BASE && id < ID_BASE + ID_COUNT).map((id) => `+${id} +${id - ID_BASE}\n`).join('');
  await writeFile(join(scratch, 'owners'), map(uids));
  await writeFile(join(scratch, 'groups'), map(gids));
  const args = ['--create', '--file', out, '--numeric-owner', '--xattrs', '--acls', `--owner-map=${join(scratch, 'owners')}`, `--group-map=${join(scratch, 'groups')}`, '-C', rootfs, '.'];
  const code = await new Promise<number>((resolve, reject) => {
    const child = spawn('tar', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('close', (c) => (c === 0 ? resolve(0) : reject(new Error(`tar of the base image failed: ${err.trim()}`))));
  });
  void code;
}
