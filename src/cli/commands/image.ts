import { resolve } from 'node:path';
import type { Command } from 'commander';
import { formatSize } from '../../shared/units.ts';
import type { ApiClient } from '../client.ts';
import { age, printJson, printTable, withSpinner } from '../output.ts';

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
      const pulled = await withSpinner(`pulling ${ref}`, () =>
        client().request<ImageView>('POST', client().orgPath('images/pull'), { ref, authSecret: o.authSecret }),
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
      const imported = await withSpinner(`importing ${path}`, () =>
        client().request<ImageView>('POST', '/api/images/import', { path: resolve(path), name: o.name }),
      );
      if (o.json) printJson(imported);
      else process.stdout.write(`${imported.name} ${imported.digest}\n`);
    });
}
