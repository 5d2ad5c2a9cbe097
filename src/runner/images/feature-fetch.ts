// A devcontainer feature from a registry (`ghcr.io/devcontainers/features/node:1`) is an OCI
// artifact: a manifest whose one layer (application/vnd.devcontainers.layer.v1+tar) holds
// the feature's folder. It is copied under the store's registry rules (ImageStore.copyArtifact)
// and unpacked here, files and folders only, into a folder of the build's own.
import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { extract } from 'tar';
import { invalid } from '../../shared/errors.ts';
import { formatSize } from '../../shared/units.ts';
import { hexOf } from './blobs.ts';
import { indexSchema, manifestSchema } from './oci.ts';
import type { ImageStore } from './store.ts';

const FEATURE_LAYER = 'application/vnd.devcontainers.layer.v1+tar';

/** Fetches `ref` into `work` and returns the folder its files are in. */
export async function fetchFeature(store: ImageStore, ref: string, work: string, maxBytes: number, log: (line: string) => void): Promise<string> {
  const layout = join(work, 'oci');
  log(`fetching feature ${ref}`);
  await mkdir(work, { recursive: true });
  await store.copyArtifact(ref, layout, (e) => log(e.message));
  const blob = (digest: `sha256:${string}`) => join(layout, 'blobs', 'sha256', hexOf(digest));
  const index = indexSchema.safeParse(JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')));
  const first = index.success ? index.data.manifests[0] : undefined;
  if (!first) throw invalid(`feature '${ref}' is not an OCI artifact with a manifest: is it a devcontainer feature?`);
  const manifest = manifestSchema.safeParse(JSON.parse(await readFile(blob(first.digest), 'utf8')));
  const layer = manifest.success ? (manifest.data.layers.find((l) => l.mediaType === FEATURE_LAYER) ?? manifest.data.layers[0]) : undefined;
  if (!layer) throw invalid(`feature '${ref}' has no layer with its files: is it a devcontainer feature?`);
  if ((await stat(blob(layer.digest))).size > maxBytes) throw invalid(`feature '${ref}' is larger than ${formatSize(maxBytes)}`);
  const dir = join(work, 'files');
  await mkdir(dir, { recursive: true });
  // Files and folders only, owners not kept; node-tar refuses paths that leave `dir`.
  await extract({ file: blob(layer.digest), cwd: dir, strict: true, preserveOwner: false, filter: (_path, entry) => 'type' in entry && (entry.type === 'File' || entry.type === 'Directory') });
  return dir;
}
