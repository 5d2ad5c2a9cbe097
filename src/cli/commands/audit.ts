import { createWriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import type { AuditEntry } from '../../shared/api.ts';
import { parseDuration } from '../../shared/units.ts';
import type { ApiClient } from '../client.ts';
import { CliError, printJson, printTable } from '../output.ts';

type Client = () => ApiClient;


/** --since takes an ISO time or a duration back from now ("1h", "7d"). */
function since(value: string): string {
  const ms = parseDuration(value);
  if (ms !== undefined) return new Date(Date.now() - ms).toISOString();
  if (!Number.isNaN(Date.parse(value))) return new Date(value).toISOString();
  throw new CliError(`--since takes a time (2026-11-24T10:00:00Z) or a duration (1h, 7d), got '${value}'`);
}

export function auditCommands(program: Command, client: Client): void {
  const audit = program.command('audit').description("the org's audit log");
  const filters = (o: { since?: string; actor?: string; action?: string; environment?: string }) => {
    const q = new URLSearchParams();
    if (o.since) q.set('since', since(o.since));
    if (o.actor) q.set('actor', o.actor);
    if (o.action) q.set('action', o.action);
    if (o.environment) q.set('environment', o.environment);
    return q;
  };

  audit
    .command('list')
    .alias('ls')
    .option('--since <when>', 'entries since a time or a duration ago (1h, 7d)')
    .option('--actor <actor>', 'only this actor (user:ID, token:ID, environment:ID)')
    .option('--action <action>', 'only this action (command.run, secret.set, ...)')
    .option('--environment <id>', 'only entries about this environment')
    .option('--limit <n>', 'at most this many entries', (v) => Number.parseInt(v, 10), 100)
    .option('--json', 'print JSON')
    .action(async (o) => {
      const items: AuditEntry[] = [];
      let cursor: string | null = null;
      do {
        const q = filters(o);
        q.set('limit', String(Math.min(1000, o.limit - items.length)));
        if (cursor) q.set('cursor', cursor);
        const page: { items: AuditEntry[]; nextCursor: string | null } = await client().request('GET', client().orgPath(`audit?${q}`));
        items.push(...page.items);
        cursor = page.nextCursor;
      } while (cursor && items.length < o.limit);
      if (o.json) return printJson(items);
      printTable(
        ['SEQ', 'TIME', 'ACTOR', 'ACTION', 'TARGET', 'DETAILS'],
        items.map((e) => [String(e.seq), e.at, e.actor, e.action, e.target ?? '-', JSON.stringify(e.details).slice(0, 80)]),
      );
    });

  audit
    .command('verify')
    .description('check the hash chain: an edited or deleted entry is found')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const r = await client().request<{ ok: boolean; entries: number; firstBadSeq?: number; reason?: string }>('GET', client().orgPath('audit/verify'));
      if (o.json) printJson(r);
      else if (r.ok) process.stdout.write(`ok: ${r.entries} entries, chain intact\n`);
      else process.stdout.write(`BROKEN at entry ${r.firstBadSeq}: ${r.reason}\n`);
      if (!r.ok) process.exitCode = 1;
    });

  audit
    .command('export')
    .description('the log as JSON Lines, oldest first')
    .option('--since <when>', 'entries since a time or a duration ago')
    .option('--output <file>', 'write to a file instead of standard output')
    .action(async (o) => {
      const res = await client().fetch(client().orgPath(`audit/export?${filters(o)}`));
      await pipeline(Readable.fromWeb(res.body as never), o.output ? createWriteStream(o.output) : process.stdout);
    });
}
