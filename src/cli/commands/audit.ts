import { createWriteStream, readFileSync, writeFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import type { AuditCheckpoint, AuditEntry } from '../../shared/api.ts';
import { parseDuration } from '../../shared/units.ts';
import type { ApiClient } from '../client.ts';
import { CliError, emit, printJson, printTable, usageError } from '../output.ts';

type Client = () => ApiClient;


/** --since takes an ISO time or a duration back from now ("1h", "7d"). */
function since(value: string): string {
  const ms = parseDuration(value);
  // A duration longer than the log can be old means "from the start" (and keeps the Date valid).
  if (ms !== undefined) return new Date(Math.max(0, Date.now() - ms)).toISOString();
  if (!Number.isNaN(Date.parse(value))) return new Date(value).toISOString();
  throw usageError(`--since takes a time (2026-11-24T10:00:00Z) or a duration (1h, 7d), got '${value}'`);
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
    .description("the org's audit log, newest first: who did what, to what, when")
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
    .description('check the hash chain and its signed head: an edited or deleted entry is found')
    .option('--since-checkpoint <file>', 'also check the log still holds what a checkpoint taken earlier recorded (finds a cut back to an older head)')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const q = new URLSearchParams();
      if (o.sinceCheckpoint) q.set('checkpoint', readCheckpoint(o.sinceCheckpoint));
      const r = await client().request<{ ok: boolean; entries: number; firstBadSeq?: number; reason?: string }>('GET', client().orgPath(`audit/verify${q.size ? `?${q}` : ''}`));
      if (o.json) printJson(r);
      else if (r.ok) process.stdout.write(`ok: ${r.entries} entries, chain intact\n`);
      else process.stdout.write(`BROKEN at entry ${r.firstBadSeq}: ${r.reason}\n`);
      if (!r.ok) process.exitCode = 1;
    });

  audit
    .command('checkpoint')
    .description('the chain head, signed: keep it outside Berth; `verify --since-checkpoint` later finds entries deleted or rewritten since')
    .option('--output <file>', 'write to a file instead of standard output')
    .action(async (o) => {
      const r = await client().request<{ checkpoint: AuditCheckpoint }>('GET', client().orgPath('audit/checkpoint'));
      writeOut(o.output, `${JSON.stringify(r)}\n`);
    });

  audit
    .command('reseal')
    .description('sign the chain head as it stands (owner): after an upgrade, a key change or a break you have looked into')
    .option('--json', 'print JSON: { seq }')
    .action(async (o) => {
      const r = await client().request<{ seq: number }>('POST', client().orgPath('audit/reseal'));
      emit(o, r, `signed the head at entry ${r.seq}; the reseal is on record as the next entry`);
    });

  audit
    .command('export')
    .description('the log as JSON Lines, oldest first')
    .option('--since <when>', 'entries since a time or a duration ago')
    .option('--output <file>', 'write to a file instead of standard output')
    .option('--checkpoint <file>', 'also write a signed checkpoint of the chain as the export began')
    .action(async (o) => {
      const res = await client().fetch(client().orgPath(`audit/export?${filters(o)}`));
      if (o.checkpoint) {
        const header = res.headers.get('x-berth-audit-checkpoint');
        if (!header) throw new CliError('the server gave no checkpoint: the chain head is not signed (`berth audit verify` says why)');
        writeOut(o.checkpoint, `${JSON.stringify({ checkpoint: JSON.parse(header) })}\n`);
      }
      await pipeline(Readable.fromWeb(res.body as never), o.output ? createWriteStream(o.output) : process.stdout);
    });
}

/** The checkpoint file's JSON, passed to the server as it is (the server checks it). */
function readCheckpoint(file: string): string {
  try {
    return JSON.stringify(JSON.parse(readFileSync(file, 'utf8')));
  } catch (err) {
    throw new CliError(`cannot read the checkpoint ${file}: ${(err as Error).message}`);
  }
}

function writeOut(file: string | undefined, text: string): void {
  if (file) writeFileSync(file, text, { mode: 0o600 });
  else process.stdout.write(text);
}
