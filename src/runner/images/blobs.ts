// Content checks for image blobs: a blob is trusted only after its sha256 matches the
// digest its manifest names, and a layer's decompressed bytes must match the diff_id its
// config names.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createZstdDecompress } from 'node:zlib';
import { BerthError, invalid } from '../../shared/errors.ts';
import { formatSize } from '../../shared/units.ts';

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

/**
 * How many more decompressed bytes an import may read: one budget for the whole image, so a
 * small compressed file (a gzip bomb) cannot fill the host's disk while it is unpacked.
 */
export class ByteBudget {
  readonly limit: number;
  #left: number;

  constructor(limit: number) {
    this.limit = limit;
    this.#left = limit;
  }

  /** Throws `invalid` once more than the limit has been taken. */
  take(bytes: number): void {
    this.#left -= bytes;
    if (this.#left < 0) {
      throw invalid(`it unpacks to more than ${formatSize(this.limit)}, the largest image this runner takes (an instance administrator sets BERTH_MAX_IMAGE_SIZE)`);
    }
  }

  /** A stream stage that passes bytes through while the budget lasts. */
  meter(): Transform {
    return new Transform({
      transform: (chunk: Buffer, _encoding, callback) => {
        try {
          this.take(chunk.length);
          callback(null, chunk);
        } catch (error) {
          callback(error as Error);
        }
      },
    });
  }
}

/** A stream of `path`'s bytes decompressed as `compression` says. Errors reach the last stage. */
export function decompressed(path: string, compression: Compression, budget: ByteBudget, onRead?: (bytes: number) => void): Readable {
  const file = createReadStream(path);
  if (onRead) file.on('data', (chunk) => onRead(chunk.length));
  const stages: (Readable | Transform)[] = [file];
  if (compression === 'gzip') stages.push(createGunzip());
  if (compression === 'zstd') stages.push(createZstdDecompress());
  stages.push(budget.meter());
  return chain(stages, compression);
}

/**
 * Pipes `stages` into each other and returns the last. Plain pipe() does not forward
 * errors: a read or decompression failure is sent to the end of the chain, where the
 * reader listens (bad compressed data is a bad image), and closing the end (a reader that
 * stops early) releases the file and the decompressor too.
 */
function chain(stages: (Readable | Transform)[], compression: Compression): Readable {
  const last = stages.at(-1) as Transform;
  for (let i = 0; i < stages.length - 1; i++) {
    const from = stages[i]!;
    from.on('error', (error) => last.destroy(i === 0 || error instanceof BerthError ? error : invalid(`cannot decompress a ${compression} layer (${error.message})`)));
    from.pipe(stages[i + 1] as Transform);
  }
  last.on('close', () => stages.forEach((stage) => stage.destroy()));
  return last;
}

export interface OpenedLayer {
  /** The plain tar stream. */
  tar: Readable;
  /** The digest of everything read from `tar` so far: the layer's diff_id once it has been read to the end. */
  diffId(): Digest;
}

/** Opens a layer for reading, decompressed, within `budget` (shared by the image's layers). */
export function openLayer(path: string, compression: Compression, budget: ByteBudget, onRead?: (bytes: number) => void): OpenedLayer {
  const hash = createHash('sha256');
  const tee = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      callback(null, chunk);
    },
  });
  const file = createReadStream(path);
  if (onRead) file.on('data', (chunk) => onRead(chunk.length));
  const stages: (Readable | Transform)[] = [file];
  if (compression === 'gzip') stages.push(createGunzip());
  if (compression === 'zstd') stages.push(createZstdDecompress());
  stages.push(budget.meter(), tee);
  return { tar: chain(stages, compression), diffId: () => `sha256:${hash.copy().digest('hex')}` };
}
