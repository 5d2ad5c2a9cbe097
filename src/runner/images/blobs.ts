// Content checks for image blobs: a blob is trusted only after its sha256 matches the
// digest its manifest names, and a layer's decompressed bytes must match the diff_id its
// config names.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createZstdDecompress } from 'node:zlib';
import { invalid } from '../../shared/errors.ts';

/** `sha256:` followed by 64 lowercase hex digits: the only digest algorithm the store accepts. */
export type Digest = `sha256:${string}`;
export type Compression = 'none' | 'gzip' | 'zstd';

const DIGEST = /^sha256:[a-f0-9]{64}$/;

export const isDigest = (value: string): value is Digest => DIGEST.test(value);
export const hexOf = (digest: Digest) => digest.slice('sha256:'.length);
export const sha256 = (data: Buffer | string): Digest => `sha256:${createHash('sha256').update(data).digest('hex')}`;

export async function hashFile(path: string): Promise<Digest> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(path), hash);
  return `sha256:${hash.digest('hex')}`;
}

/** Throws `invalid` unless the file at `path` has the digest (and size, when known) a manifest promised. */
export async function verifyBlob(path: string, expected: Digest, what: string, size?: number): Promise<void> {
  if (size !== undefined) {
    const actual = (await stat(path)).size;
    if (actual !== size) throw invalid(`${what} is ${actual} bytes but its manifest says ${size}: the image is corrupt`);
  }
  const actual = await hashFile(path);
  if (actual !== expected) throw invalid(`${what} has digest ${actual} but its manifest says ${expected}: the image is corrupt`);
}

/** Reads the magic bytes, for formats (docker save) that do not say how a layer is compressed. */
export async function sniffCompression(path: string): Promise<Compression> {
  const file = await open(path, 'r');
  try {
    const { buffer, bytesRead } = await file.read(Buffer.alloc(4), 0, 4, 0);
    const head = buffer.subarray(0, bytesRead);
    if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
    if (head.equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) return 'zstd';
    return 'none';
  } finally {
    await file.close();
  }
}

export interface OpenedLayer {
  /** The plain tar stream. */
  tar: Readable;
  /** The digest of everything read from `tar` so far: the layer's diff_id once it has been read to the end. */
  diffId(): Digest;
}

export function openLayer(path: string, compression: Compression): OpenedLayer {
  const hash = createHash('sha256');
  const tee = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      callback(null, chunk);
    },
  });
  const raw = createReadStream(path);
  const stages: (Readable | Transform)[] = [raw];
  if (compression === 'gzip') stages.push(createGunzip());
  if (compression === 'zstd') stages.push(createZstdDecompress());
  stages.push(tee);
  // Plain pipe() does not forward errors: send a read or decompression failure to the end
  // of the chain, where the tar reader listens. Bad compressed data is a bad image.
  for (let i = 0; i < stages.length - 1; i++) {
    const from = stages[i]!;
    from.on('error', (error) => tee.destroy(i === 0 ? error : invalid(`cannot decompress a ${compression} layer (${error.message})`)));
    from.pipe(stages[i + 1] as Transform);
  }
  // The reader may stop early (a bad entry): release the file and the decompressor too.
  tee.on('close', () => stages.forEach((stage) => stage.destroy()));
  return { tar: tee, diffId: () => `sha256:${hash.copy().digest('hex')}` };
}
