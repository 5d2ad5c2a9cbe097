// Reads a plain (already decompressed) tar stream entry by entry, so the caller can
// await file-system work per entry while node-tar's parser waits on backpressure.
import type { Readable } from 'node:stream';
import { Parser, type ReadEntry } from 'tar';
import { invalid } from '../../shared/errors.ts';

/**
 * Yields each entry of the tar stream in order. Read an entry's body before asking for
 * the next one (whatever is left unread is drained). Throws on a corrupt or truncated
 * archive: the parser runs in strict mode, so its warnings are errors.
 */
export async function* tarEntries(input: Readable): AsyncGenerator<ReadEntry, void, undefined> {
  // Decompression is the caller's job (it also hashes the decompressed bytes), so the
  // parser must not sniff for a compressed format itself.
  const parser = new Parser({ strict: true, zstd: false, brotli: false });
  const ready: ReadEntry[] = [];
  let current: ReadEntry | undefined;
  let failure: Error | undefined;
  let ended = false;
  let wake = () => {};

  const fail = (error: Error) => {
    failure ??= error;
    // An entry cut off mid-body would otherwise never end, and a reader awaiting it would hang.
    current?.end();
    wake();
  };
  parser.on('entry', (entry: ReadEntry) => {
    ready.push(entry);
    wake();
  });
  // The parser only complains about its input: a bad checksum, a truncated archive, not a tar at all.
  parser.on('error', (error: Error) => fail(invalid(`not a valid tar archive (${error.message})`)));
  parser.on('end', () => {
    ended = true;
    wake();
  });
  input.on('error', fail);
  input.pipe(parser);

  try {
    for (;;) {
      if (failure) throw failure;
      current = ready.shift();
      if (current) {
        yield current;
        current.resume();
        continue;
      }
      if (ended) return;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
  } finally {
    input.unpipe(parser);
    input.destroy();
  }
}
