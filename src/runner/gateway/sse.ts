// An incremental reader of server-sent events (text/event-stream), enough to find the
// usage a provider reports in its stream. The bytes themselves pass through untouched.

export interface SseEvent {
  event: string;
  data: string;
}

/** A line longer than this is skipped: usage events are small, and memory is not free. */
const MAX_LINE = 4 * 1024 * 1024;

export class SseReader {
  readonly #onEvent: (event: SseEvent) => void;
  #buf = '';
  /** Inside an over-long line: drop text until its end. */
  #skipping = false;
  #event = '';
  #data: string[] = [];

  constructor(onEvent: (event: SseEvent) => void) {
    this.#onEvent = onEvent;
  }

  push(text: string): void {
    this.#buf += text;
    let start = 0;
    for (;;) {
      const m = /\r\n|\r|\n/g;
      m.lastIndex = start;
      const found = m.exec(this.#buf);
      // A '\r' at the very end may be the first half of a '\r\n' still to come.
      if (!found || (found[0] === '\r' && found.index === this.#buf.length - 1)) break;
      const line = this.#buf.slice(start, found.index);
      start = found.index + found[0].length;
      if (this.#skipping) this.#skipping = false;
      else this.#line(line);
    }
    this.#buf = this.#buf.slice(start);
    if (this.#buf.length > MAX_LINE) {
      this.#buf = '';
      this.#skipping = true;
    }
  }

  /** The stream has ended: an event without its closing blank line still counts. */
  end(): void {
    if (this.#buf && !this.#skipping) this.#line(this.#buf);
    this.#buf = '';
    this.#line('');
  }

  #line(line: string): void {
    if (line === '') {
      if (this.#data.length > 0) this.#onEvent({ event: this.#event || 'message', data: this.#data.join('\n') });
      this.#event = '';
      this.#data = [];
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.#data.push(value);
    else if (field === 'event') this.#event = value;
  }
}
