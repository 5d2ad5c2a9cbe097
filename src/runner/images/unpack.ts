// Turns an inspected archive into a root file system: every blob is checked against its
// digest before any of it is parsed, then the layers are applied lowest first.
import { stat } from 'node:fs/promises';
import type { Logger } from 'pino';
import { BerthError, invalid } from '../../shared/errors.ts';
import type { ImagePlan } from './archive.ts';
import { ByteBudget, openLayer, verifyBlob } from './blobs.ts';
import { countBytes } from './byte-progress.ts';
import { RootfsWriter } from './layers.ts';
import type { ImageConfig, ImageProgress } from './types.ts';

/** `maxBytes`: the most decompressed layer bytes the image may have, all layers together. */
export async function unpackPlan(plan: ImagePlan, rootfs: string, progress: ImageProgress, log: Logger, maxBytes: number): Promise<ImageConfig> {
  const count = plan.layers.length;
  for (const [i, layer] of plan.layers.entries()) {
    if (!layer.digest) continue;
    progress({ phase: 'verify', message: `checking layer ${i + 1} of ${count}`, fraction: i / count });
    await verifyBlob(layer.path, layer.digest, `layer ${i + 1}`, layer.size);
  }
  const writer = RootfsWriter.create(rootfs);
  const budget = new ByteBudget(maxBytes);
  for (const [i, layer] of plan.layers.entries()) {
    // Bytes of the layer as stored (compressed, when it is): its size is known, its unpacked size is not.
    const unpacked = countBytes(progress, 'unpack', `unpacking layer ${i + 1} of ${count}`, (await stat(layer.path)).size);
    const opened = openLayer(layer.path, layer.compression, budget, (n) => unpacked.add(n));
    try {
      await writer.applyLayer(opened.tar);
      unpacked.end();
    } catch (error) {
      if (error instanceof BerthError && error.kind === 'invalid') throw invalid(`layer ${i + 1}: ${error.message}`);
      throw error;
    }
    // Formats without blob digests (older docker save) are checked here, by what they unpack to.
    const diffId = opened.diffId();
    if (diffId !== layer.diffId) {
      throw invalid(`layer ${i + 1} unpacks to ${diffId} but the image config says ${layer.diffId}: the image is corrupt`);
    }
  }
  const stats = writer.finish();
  if (stats.clampedIds > 0) {
    log.warn({ digest: plan.digest, clampedIds: stats.clampedIds }, 'image has owners beyond uid/gid 65535; they are owned by nobody (65534) instead');
  }
  return plan.config;
}
