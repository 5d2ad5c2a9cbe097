import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { ApiClient } from '../client.ts';
import { age, emit, printJson, printTable, usageError } from '../output.ts';

type Client = () => ApiClient;

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export function secretCommands(program: Command, client: Client): void {
  const secret = program.command('secret').description('secrets for environments (values are write-only)');
  secret
    .command('set <name>')
    .description('set a secret from standard input or a file, never from the command line')
    .option('--project <project>', 'only for this project (default: the whole org)')
    .option('--from-file <path>', 'read the value from this file')
    .option('--egress-only', 'never give it to environments: the egress proxy adds it to requests to --host')
    .option('--host <host>', 'with --egress-only: the one host it is sent to')
    .option('--path-prefix <prefix>', 'with --egress-only: only for paths under this prefix, e.g. /v1')
    .option('--header <name>', 'with --egress-only: the header it goes in (default Authorization)')
    .option('--format <format>', "with --egress-only: the header value, {value} standing for the secret (default 'Bearer {value}')")
    .option('--json', "print the secret's record as JSON (never its value)")
    .action(async (name: string, o) => {
      if (Boolean(o.egressOnly) !== Boolean(o.host)) throw usageError('--egress-only and --host go together: berth secret set NAME --egress-only --host api.example.com');
      if (!o.egressOnly && (o.pathPrefix || o.header || o.format)) throw usageError('--path-prefix, --header and --format are for --egress-only secrets');
      if (!o.fromFile && process.stdin.isTTY) {
        throw usageError(`pipe the value in (printf %s "$VALUE" | berth secret set ${name}) or use --from-file PATH: values never go on the command line`);
      }
      let value = o.fromFile ? readFileSync(o.fromFile, 'utf8') : await readStdin();
      // A trailing newline from echo or a file is almost never part of a token.
      value = value.replace(/\r?\n$/, '');
      // Caught here, before the API's `body.value: Too small`: what to do, in the CLI's words.
      if (value === '') throw usageError(`the value is empty: pipe the value on standard input (printf %s "$VALUE" | berth secret set ${name}) or use --from-file PATH`);
      const meta = await client().request<unknown>('PUT', client().orgPath(`secrets/${encodeURIComponent(name)}`), {
        value,
        project: o.project,
        egress: o.egressOnly ? { host: o.host, pathPrefix: o.pathPrefix, header: o.header, format: o.format } : undefined,
      });
      emit(
        o,
        meta,
        `${name} set${o.project ? ` for project ${o.project}` : ''}${o.egressOnly ? ` (egress-only, for ${o.host})` : ''}`,
      );
    });
  secret
    .command('list')
    .alias('ls')
    .description("the org's and its projects' secrets: names and who set them, never values")
    .option('--json', 'print JSON')
    .action(async (o) => {
      const { items } = await client().request<{ items: { name: string; project: string | null; updatedAt: string; updatedBy: string }[] }>('GET', client().orgPath('secrets'));
      if (o.json) return printJson(items);
      printTable(['NAME', 'PROJECT', 'UPDATED', 'BY'], items.map((s) => [s.name, s.project ?? '(org)', `${age(s.updatedAt)} ago`, s.updatedBy]));
    });
  secret
    .command('rm <name>')
    .description('remove a secret; environments started later no longer receive it')
    .option('--project <project>', 'the project the secret belongs to')
    .option('--json', 'print JSON: { name, project, removed }')
    .action(async (name: string, o) => {
      const q = o.project ? `?project=${encodeURIComponent(o.project)}` : '';
      await client().request('DELETE', client().orgPath(`secrets/${encodeURIComponent(name)}${q}`));
      emit(o, { name, project: o.project ?? null, removed: true }, `${name} removed`);
    });
}
