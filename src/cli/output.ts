// What the CLI prints: tables for people, JSON for scripts, a spinner for waits, colour on a terminal.
import { stripVTControlCharacters, styleText } from 'node:util';

/**
 * The CLI's exit statuses, in one place (the README lists them; scripts rely on them):
 * 0 done, 1 any other failure, 2 a usage error (an unknown command or flag, a flag value the
 * CLI or the API refused), 3 not found, 4 not signed in or not allowed.
 */
export const EXIT = { ok: 0, error: 1, usage: 2, notFound: 3, denied: 4 } as const;

/** An error the CLI reports as one line and a non-zero exit, never a stack trace. */
export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number = EXIT.error) {
    super(message);
    this.exitCode = exitCode;
  }
}

/** A flag or argument the CLI itself refuses (exit status 2): say what it takes. */
export const usageError = (message: string) => new CliError(message, EXIT.usage);

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** `--json` prints `value`, otherwise `text` (a line, newline added) goes to standard output. */
export function emit(o: { json?: boolean }, value: unknown, text: string | (() => string)): void {
  if (o.json) return printJson(value);
  const line = typeof text === 'function' ? text() : text;
  process.stdout.write(line.endsWith('\n') ? line : `${line}\n`);
}

type Style = Parameters<typeof styleText>[0];
/**
 * `text` styled when `stream` is a terminal; plain when piped, with NO_COLOR or TERM=dumb;
 * styled anyway with FORCE_COLOR (node's styleText decides, the same rules as node's own output).
 */
export const paint = (style: Style, text: string, stream: NodeJS.WriteStream = process.stdout): string => styleText(style, text, { stream });

const STATE_STYLE: Record<string, Style> = {
  running: 'green',
  succeeded: 'green',
  ok: 'green',
  active: 'green',
  creating: 'cyan',
  queued: 'cyan',
  provisioning: 'cyan',
  stopped: 'yellow',
  cancelled: 'yellow',
  degraded: 'yellow',
  expired: 'yellow',
  failed: 'red',
  timed_out: 'red',
  offline: 'red',
  revoked: 'red',
  deleted: 'gray',
};
/** A state word (running, failed, …) in its colour on a terminal. */
export const stateWord = (state: string, stream: NodeJS.WriteStream = process.stdout): string => {
  const style = STATE_STYLE[state];
  return style ? paint(style, state, stream) : state;
};

/** A unified diff with added lines green, removed red and hunk headers cyan on a terminal. */
export function paintDiff(diff: string): string {
  return diff
    .split('\n')
    .map((l) =>
      l.startsWith('+++') || l.startsWith('---') || l.startsWith('diff ') ? paint('bold', l)
      : l.startsWith('+') ? paint('green', l)
      : l.startsWith('-') ? paint('red', l)
      : l.startsWith('@@') ? paint('cyan', l)
      : l,
    )
    .join('\n');
}

export function printTable(headers: string[], rows: string[][]): void {
  // Widths from what shows: a coloured cell carries escape codes that take no room.
  const shown = (c: string) => stripVTControlCharacters(c).length;
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => shown(r[i] ?? ''))));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c + ' '.repeat(Math.max(0, widths[i]! - shown(c))))).join('  ');
  process.stdout.write(`${[line(headers), ...rows.map(line)].join('\n')}\n`);
}

export function age(iso: string | null, now = Date.now()): string {
  if (!iso) return '-';
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/** A spinner on stderr when it is a terminal; plain progress lines otherwise. */
export class Spinner {
  #text: string;
  #frame = 0;
  #timer: NodeJS.Timeout | undefined;
  readonly #started = performance.now();
  readonly #tty = Boolean(process.stderr.isTTY);

  constructor(text: string) {
    this.#text = text;
    if (this.#tty) {
      this.#timer = setInterval(() => this.#render(), 80);
      this.#render();
    } else {
      process.stderr.write(`${text}\n`);
    }
  }

  update(text: string): void {
    if (text === this.#text) return;
    this.#text = text;
    if (!this.#tty) process.stderr.write(`${text}\n`);
  }

  #render(): void {
    // The time so far, so a long import or pull shows it is still moving.
    const s = Math.floor((performance.now() - this.#started) / 1000);
    const elapsed = s < 1 ? '' : paint('gray', ` ${s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`}`, process.stderr);
    process.stderr.write(`\r\x1b[2K${paint('cyan', FRAMES[this.#frame++ % FRAMES.length]!, process.stderr)} ${this.#text}${elapsed}`);
  }

  done(text?: string, mark = '✔'): void {
    if (this.#timer) clearInterval(this.#timer);
    const painted = paint(mark === '✔' ? 'green' : 'red', mark, process.stderr);
    if (this.#tty) process.stderr.write(`\r\x1b[2K${text ? `${painted} ${text}\n` : ''}`);
    else if (text) process.stderr.write(`${text}\n`);
  }

  fail(text: string): void {
    this.done(text, '✖');
  }
}

/** Runs `work` behind a spinner that is cleared whatever happens. */
export async function withSpinner<T>(text: string, work: (s: Spinner) => Promise<T>, doneText?: (v: T) => string): Promise<T> {
  const spinner = new Spinner(text);
  try {
    const value = await work(spinner);
    spinner.done(doneText?.(value));
    return value;
  } catch (err) {
    spinner.done();
    throw err;
  }
}
