// How a failure reaches the person at the terminal: one line that speaks in the command's own
// flags and arguments (never the API's `body.memory`), and an exit status a script can test.
import type { Command } from 'commander';
import type { ErrorKind } from '../shared/errors.ts';
import { CliError, EXIT } from './output.ts';

/** An error body from the control plane: its kind decides the exit status, its field the flag named. */
export class ApiError extends CliError {
  readonly kind: ErrorKind | undefined;
  /** The request field it is about, as the API names it: `body.memory`, `params.id`, `querystring.state`. */
  readonly field: string | undefined;

  constructor(message: string, status: number, kind?: ErrorKind, field?: string) {
    // `body` alone is the request as a whole (an upload tar cannot unpack): no flag to name.
    const named = field && !/^(body|querystring|params|headers)$/.test(field) ? field : undefined;
    super(message, exitCodeFor(kind, status, named));
    this.kind = kind;
    this.field = named;
  }
}

/** invalid with a field → usage (2); not_found → 3; unauthorized, forbidden → 4; anything else → 1. */
function exitCodeFor(kind: ErrorKind | undefined, status: number, field: string | undefined): number {
  if (kind === 'not_found' || (!kind && status === 404)) return EXIT.notFound;
  if (kind === 'unauthorized' || kind === 'forbidden' || (!kind && (status === 401 || status === 403))) return EXIT.denied;
  // A refused value the person typed is a usage error; a refusal about the state of things is not.
  if (kind === 'invalid' && field) return EXIT.usage;
  return EXIT.error;
}

const kebab = (s: string) => s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/**
 * The flag or argument of `command` an API field stands for: `body.idleTimeout` → `--idle-timeout`,
 * `body.work.limits.memory` → `--memory`, `body.allowDomains.0` → `--allow-domain`,
 * `querystring.state` → `--state`, `params.id` → `<id>`. A command may name its own with
 * `fieldFlags(cmd, { 'body.value': 'the value on standard input' })`. Undefined when the command has none.
 */
export function flagFor(field: string, command: Command | undefined): string | undefined {
  if (!command) return undefined;
  const own = FIELD_FLAGS.get(command)?.[field];
  if (own) return own;
  // Fields the route's schema checked come framed (`body.memory`); a service's own are bare (`memory`).
  const parts = field.split('.');
  const framed = ['body', 'querystring', 'params', 'headers'].includes(parts[0]!);
  const where = framed ? parts[0] : 'body';
  const path = framed ? parts.slice(1) : parts;
  const names = path.filter((p) => !/^\d+$/.test(p)).reverse();
  if (where === 'params') {
    const args = command.registeredArguments;
    const arg = args.find((a) => names.includes(a.name())) ?? (args.length === 1 ? args[0] : undefined);
    return arg ? `<${arg.name()}>` : undefined;
  }
  const longs = new Set(command.options.map((o) => o.long).filter(Boolean));
  for (const name of names) {
    for (const flag of [`--${kebab(name)}`, `--${kebab(name).replace(/s$/, '')}`]) if (longs.has(flag)) return flag;
  }
  return undefined;
}

const FIELD_FLAGS = new WeakMap<Command, Record<string, string>>();
/** Names, for this command, what an API field is when the general rule would not find it. */
export function fieldFlags(command: Command, map: Record<string, string>): Command {
  FIELD_FLAGS.set(command, { ...FIELD_FLAGS.get(command), ...map });
  return command;
}

/** The one line printed for an error, in the words of the command that was run. */
export function errorLine(err: unknown, command: Command | undefined): string {
  if (!(err instanceof Error)) return String(err);
  if (!(err instanceof ApiError) || !err.field) return err.message;
  let name = flagFor(err.field, command);
  if (name?.startsWith('<') && command) {
    const value = command.processedArgs[command.registeredArguments.findIndex((a) => `<${a.name()}>` === name)];
    if (typeof value === 'string') name = `${name} '${value}'`;
  }
  // No flag of this command: the field without the request's framing (body., querystring.).
  name ??= err.field.replace(/^(body|querystring|params|headers)\.?/, '') || 'the request';
  // The API says `body.memory: expected a size…` or `memory must be between…`: keep its words, not its path.
  const last = err.field.split('.').filter((p) => !/^\d+$/.test(p)).at(-1) ?? err.field;
  for (const prefix of [`${err.field}: `, `${last}: `]) {
    if (err.message.startsWith(prefix)) return `${name}: ${lowerFirst(err.message.slice(prefix.length))}`;
  }
  for (const prefix of [`${err.field} `, `${last} `]) {
    if (err.message.startsWith(prefix)) return `${name} ${err.message.slice(prefix.length)}`;
  }
  return `${name}: ${err.message}`;
}

const lowerFirst = (s: string) => s.replace(/^[A-Z](?=[a-z])/, (c) => c.toLowerCase());
