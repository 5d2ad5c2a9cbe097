// A devcontainer build's checkout on its way to the runner that builds it: packed by the
// control plane, unpacked by the runner into a private folder. The checkout is hostile
// both ways: packing stores symlinks as symlinks (never what they point at on the control
// plane's host); unpacking keeps files, folders and symlinks only, owners not kept, and
// node-tar refuses absolute paths, `..` and writing through a symlink; the bytes are capped.
import { readlinkSync, type Stats } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { create, extract, type ReadEntry } from 'tar';
import { invalid } from '../../shared/errors.ts';
import { formatSize } from '../../shared/units.ts';

/** The most bytes of checkout a build takes: its context is capped again when copied (build-context.ts). */
export const MAX_CHECKOUT_BYTES = 2 * 2 ** 30;

/**
 * The checkout in `dir` as a tar stream, without `.git` (a build never reads it: build-context.ts)
 * and without absolute symlinks: they lead out of the checkout on any host, so a build refuses
 * them anyway, and node-tar would not unpack them as they are.
 */
export function packCheckout(dir: string): Readable {
  const filter = (path: string, stat: Stats | ReadEntry) =>
    !/^(\.\/)?\.git(\/|$)/.test(path) && !('isSymbolicLink' in stat && stat.isSymbolicLink() && isAbsolute(readlinkSync(join(dir, path))));
  return create({ cwd: dir, portable: true, follow: false, filter }, ['.']) as unknown as Readable;
}

/** Unpacks a checkout's tar stream into `dir` (an empty folder of the caller's). */
export async function unpackCheckout(source: Readable, dir: string, maxBytes = MAX_CHECKOUT_BYTES): Promise<void> {
  let bytes = 0;
  const cap = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      bytes += chunk.length;
      if (bytes > maxBytes) return cb(invalid(`the checkout is larger than ${formatSize(maxBytes)}: too large to build from`));
      cb(null, chunk);
    },
  });
  const types = new Set(['File', 'OldFile', 'ContiguousFile', 'Directory', 'SymbolicLink']);
  await pipeline(source, cap, extract({ cwd: dir, strict: true, preserveOwner: false, noMtime: true, filter: (_path, entry) => 'type' in entry && types.has(entry.type) }));
}
