// `berth env export ID FILE` and `berth env import FILE`: an environment's files as one
// archive (src/shared/api-environment-archive.ts), and a new environment from one.
import { createReadStream, createWriteStream, statSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Environment } from '../../shared/api.ts';
import { formatSize } from '../../shared/units.ts';
import type { ApiClient } from '../client.ts';
import { CliError, emit } from '../output.ts';
import { envPath } from './env.ts';

/** Counts bytes to standard error (a line that rewrites itself on a terminal), so standard output keeps what a script reads. */
function progress(verb: string): Transform & { done(): number } {
  let bytes = 0;
  let told = 0;
  const tty = process.stderr.isTTY;
  const say = () => process.stderr.write(tty ? `\r${verb} ${formatSize(bytes)}   ` : `${verb} ${formatSize(bytes)}\n`);
  const t = new Transform({
    transform(chunk: Buffer, _enc, done) {
      bytes += chunk.length;
      // Every 64 MiB when piped, every 4 MiB on a terminal.
      if (bytes - told >= (tty ? 4 : 64) * 1024 * 1024) {
        told = bytes;
        say();
      }
      done(null, chunk);
    },
  });
  return Object.assign(t, {
    /** Says the total and returns it. */
    done() {
      say();
      if (tty) process.stderr.write('\n');
      return bytes;
    },
  });
}

export async function exportEnvironment(client: ApiClient, id: string, file: string, o: { json?: boolean } = {}): Promise<void> {
  const res = await client.fetch(envPath(client, id, '/export'));
  if (!res.body) throw new CliError('the server sent no archive');
  // Written beside FILE, then renamed: a failed export leaves no half archive under its name.
  const partial = join(dirname(file), `.${basename(file)}.partial`);
  const count = progress('exported');
  try {
    await pipeline(Readable.fromWeb(res.body as never), count, createWriteStream(partial, { mode: 0o600 }));
    await rename(partial, file);
  } catch (err) {
    await rm(partial, { force: true });
    throw new CliError(`the export of ${id} did not finish (${(err as Error).message}): nothing was written to ${file}`);
  }
  const bytes = count.done();
  if (o.json) emit(o, { environment: id, file, bytes }, '');
}

export async function importEnvironment(client: ApiClient, file: string, o: { name?: string; runnerLabel?: Record<string, string>; json?: boolean }): Promise<void> {
  try {
    if (!statSync(file).isFile()) throw new Error('not a file');
  } catch {
    throw new CliError(`${file}: no such file (give the archive \`berth env export\` wrote)`);
  }
  const query = new URLSearchParams();
  if (o.name) query.set('name', o.name);
  if (o.runnerLabel && Object.keys(o.runnerLabel).length) query.set('runnerLabels', JSON.stringify(o.runnerLabel));
  const count = progress('sent');
  const body = createReadStream(file).pipe(count);
  const res = await client.fetch(client.orgPath(`environments/import${query.size ? `?${query}` : ''}`), {
    method: 'POST',
    headers: { 'content-type': 'application/x-tar' },
    body: Readable.toWeb(body) as ReadableStream,
    duplex: 'half',
  });
  count.done();
  const env = (await res.json()) as Environment;
  emit(o, env, env.id);
}
