// What the audit log keeps of a command, decided before the command runs. Argv the log
// cannot store (a NUL character, a lone UTF-16 surrogate) is refused: the command does not
// run. Argv too big for one entry is kept cut short, with the size and sha256 of the whole,
// so that a long command still runs and is on record.
import { createHash } from 'node:crypto';
import { invalid } from '../../shared/errors.ts';
import { storable } from '../audit/chain.ts';
import type { CommandIntent } from '../../shared/audit-words.ts';

/** Most bytes of JSON the recorded argv takes (an entry's details hold at most 64 KiB). */
export const MAX_RECORDED_ARGV = 32 * 1024;
/** Most bytes of JSON the recorded working directory takes (PATH_MAX is 4096). */
const MAX_RECORDED_CWD = 4096;

/** The details of a command's `command.start` entry, repeated in its `command.run` entry. */
export interface CommandRecord {
  /** The argv, redacted of the project's secrets; cut short when cmdTruncated. */
  cmd: string[];
  cwd: string | null;
  tty: boolean;
  /** Set when cmd is cut short; cmdArgs, cmdBytes and cmdSha256 then describe the whole. */
  cmdTruncated?: true;
  cmdArgs?: number;
  /** Bytes of JSON.stringify(redacted argv). */
  cmdBytes?: number;
  /** sha256 hex of JSON.stringify(redacted argv). */
  cmdSha256?: string;
}

/**
 * The audit record of a command, or an `invalid` error naming the argument the log could
 * not store. `redact` replaces secret values; the hash is of the redacted argv, so it never
 * lets anyone test guesses of a secret.
 */
export function commandRecord(opts: { cmd: string[]; cwd?: string | undefined; tty?: unknown }, redact: (s: string) => string): CommandRecord {
  opts.cmd.forEach((arg, i) => refuseUnstorable(arg, `argument ${i + 1} of the command`, 'cmd'));
  if (opts.cwd !== undefined) refuseUnstorable(opts.cwd, 'the working directory', 'cwd');

  const cmd = opts.cmd.map(redact);
  const cwd = opts.cwd === undefined ? null : cut(opts.cwd, MAX_RECORDED_CWD).text;
  const record: CommandRecord = { cmd, cwd, tty: Boolean(opts.tty) };
  const whole = JSON.stringify(cmd);
  const bytes = Buffer.byteLength(whole);
  if (bytes <= MAX_RECORDED_ARGV) return record;

  // Arguments are kept from the first, whole while they fit: the program and the start of
  // its script say most; the last one kept is cut and says how much of it is missing.
  const kept: string[] = [];
  let budget = MAX_RECORDED_ARGV;
  for (const arg of cmd) {
    const c = cut(arg, budget - 64);
    if (!c.cut) {
      kept.push(arg);
      budget -= c.bytes + 3;
      continue;
    }
    kept.push(`${c.text}…[${Buffer.byteLength(arg) - Buffer.byteLength(c.text)} more bytes not recorded]`);
    break;
  }
  return { ...record, cmd: kept, cmdTruncated: true, cmdArgs: cmd.length, cmdBytes: bytes, cmdSha256: createHash('sha256').update(whole).digest('hex') };
}

function refuseUnstorable(value: string, what: string, field: string): void {
  if (storable(value)) return;
  const why = value.includes('\0') ? 'a NUL character' : 'invalid UTF-16 (a lone surrogate)';
  throw invalid(`${what} contains ${why}, which the audit log cannot record, so the command was not run: pass it as valid text (UTF-8) without NUL`, field);
}

/** The longest prefix of s whose JSON takes at most `budget` bytes, on a code point boundary. */
function cut(s: string, budget: number): { text: string; bytes: number; cut: boolean } {
  let used = 0;
  let end = 0;
  for (const ch of s) {
    const n = Buffer.byteLength(JSON.stringify(ch)) - 2;
    if (used + n > budget) return { text: s.slice(0, end), bytes: used, cut: true };
    used += n;
    end += ch.length;
  }
  return { text: s, bytes: used, cut: false };
}

/**
 * The intent a command is recorded under, checked as its argv is: a path the log cannot
 * store refuses the command, a long one is cut, and a secret in it is redacted.
 */
export function intentRecord(intent: CommandIntent, redact: (s: string) => string): CommandIntent {
  if (!['file.read', 'file.written', 'folder.listed'].includes(intent.action)) throw invalid(`unknown command intent '${String(intent.action)}'`, 'intent');
  refuseUnstorable(intent.path, 'the path', 'path');
  const c = cut(redact(intent.path), MAX_RECORDED_CWD);
  return { action: intent.action, path: c.cut ? `${c.text}…` : c.text };
}
