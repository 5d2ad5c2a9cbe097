import { randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';
import { formatSize } from '../../shared/units.ts';
import type { ApiClient } from '../client.ts';
import { age, printJson, printTable, withSpinner } from '../output.ts';
import { ByteRate, transferText } from '../transfer.ts';

interface ImageView {
  name: string;
  org: string | null;
  digest: string;
  sizeBytes: number;
  createdAt: string;
  source: string;
}

export function imageCommands(program: Command, client: () => ApiClient): void {
  const image = program.command('image').description('images environments start from');

  image
    .command('list')
    .alias('ls')
    .option('--json', 'print JSON')
    .description("list the images you may use: the instance's, and those your orgs pulled")
    .action(async (o) => {
      const { items } = await client().request<{ items: ImageView[] }>('GET', '/api/images');
      if (o.json) return printJson(items);
      printTable(
        ['NAME', 'ORG', 'DIGEST', 'SIZE', 'SOURCE', 'AGE'],
        items.map((i) => [i.name, i.org ?? '(instance)', i.digest.slice(0, 19), formatSize(i.sizeBytes), i.source, age(i.createdAt)]),
      );
    });

  image
    .command('pull <ref>')
    .description("pull an image from a registry into your org's images, like docker.io/library/alpine:3.20")
    .option('--auth-secret <name>', 'the org secret holding the registry login as USER:PASSWORD (or USER:TOKEN); used on the server, never shown')
    .option('--json', 'print JSON')
    .action(async (ref: string, o) => {
      const pulled = await followed(client(), `pulling ${ref}`, o, (progress) =>
        client().request<ImageView>('POST', client().orgPath('images/pull'), { ref, authSecret: o.authSecret, progress }),
      );
      if (o.json) printJson(pulled);
      else process.stdout.write(`${pulled.name} ${pulled.digest}\n`);
    });

  image
    .command('import <path>')
    .description('import an OCI image layout (folder or tar) or a docker/podman save tarball')
    .option('--name <name>', 'name to give the image')
    .option('--json', 'print JSON')
    .action(async (path: string, o) => {
      const imported = await followed(client(), `importing ${path}`, o, (progress) =>
        client().request<ImageView>('POST', '/api/images/import', { path: resolve(path), name: o.name, progress }),
      );
      if (o.json) printJson(imported);
      else process.stdout.write(`${imported.name} ${imported.digest}\n`);
    });
}

interface ProgressView {
  phase: string;
  message: string;
  bytes?: { done: number; total?: number };
}

/**
 * Runs `start` behind a spinner; on a terminal (and without --json) the spinner also shows the
 * bytes the server reports for the request's progress id (GET /api/images/progress/ID), with
 * the total when it is known and the rate. Piped or --json output gets no progress.
 */
async function followed<T>(api: ApiClient, text: string, o: { json?: boolean }, start: (progress: string | undefined) => Promise<T>): Promise<T> {
  const id = process.stderr.isTTY && !o.json ? randomUUID() : undefined;
  return withSpinner(text, async (spinner) => {
    const work = start(id);
    if (id === undefined) return work;
    const finished = new AbortController();
    const poll = async () => {
      const rate = new ByteRate();
      let step = '';
      while (!finished.signal.aborted) {
        await sleep(250, undefined, { signal: finished.signal }).catch(() => {});
        if (finished.signal.aborted) return;
        // A failed look (the request not yet registered, a blip) just leaves the line as it was.
        const { progress } = await api.request<{ progress: ProgressView | null }>('GET', `/api/images/progress/${id}`).catch(() => ({ progress: null }));
        if (finished.signal.aborted || !progress) continue;
        if (progress.message !== step) rate.reset();
        step = progress.message;
        // A step without a byte count (reading the manifest, say) shows as itself.
        spinner.update(`${text}: ${progress.message}${progress.bytes ? ` ${transferText(progress.bytes, rate.sample(progress.bytes.done))}` : ''}`);
      }
    };
    const polling = poll();
    try {
      return await work;
    } finally {
      finished.abort();
      await polling;
    }
  });
}
