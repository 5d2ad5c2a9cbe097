// What the CLI prints: tables for people, JSON for scripts, a spinner for waits.

/** An error the CLI reports as one line and a non-zero exit, never a stack trace. */
export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.exitCode = exitCode;
  }
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function printTable(headers: string[], rows: string[][]): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
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
    process.stderr.write(`\r\x1b[2K${FRAMES[this.#frame++ % FRAMES.length]} ${this.#text}`);
  }

  done(text?: string, mark = '✔'): void {
    if (this.#timer) clearInterval(this.#timer);
    if (this.#tty) process.stderr.write(`\r\x1b[2K${text ? `${mark} ${text}\n` : ''}`);
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
