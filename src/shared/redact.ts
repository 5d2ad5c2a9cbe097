// Redaction of secret values from recorded output: command output, logs, error messages and
// event payloads. Each occurrence becomes `[secret:NAME]`.
//
// Besides the value itself we catch the encodings tools print most: standard base64 (what
// `echo -n "$S" | base64` prints, read unwrapped; also without its `=` padding, as JWT-style
// and unpadded printers emit it) and URL encoding (encodeURIComponent's, upper-case hex).
// A value inside a larger encoded blob (base64 of `user:$S`) cannot be found this way.
//
// Where matches overlap, the whole overlapping region is redacted, so no fragment of either
// secret shows, under one label: that of the match that starts first and, at equal starts, the
// longer one. So a secret that contains another wins over it.
import { StringDecoder } from 'node:string_decoder';

export interface RedactSecret {
  name: string;
  value: string;
}

/**
 * Values shorter than this are not redacted: replacing every "a" or "on" would destroy the
 * output while hiding nothing that could not be guessed anyway.
 */
export const MIN_SECRET_LENGTH = 4;

export const redactionLabel = (name: string): string => `[secret:${name}]`;

export interface RedactStream {
  /** The redacted text that is final now; only a tail that could start a secret is held back. */
  push(chunk: Buffer | string): string;
  /** Everything held back, redacted; call once at the end of the output. */
  flush(): string;
}

/** A stretch of text to replace; `name` null: a stream already emitted its label. */
interface Span {
  start: number;
  end: number;
  name: string | null;
}

/** Proper prefixes of every pattern, one character per level. */
type Trie = Map<string, Trie>;

export class Redactor {
  /** All patterns, longest first, so that at one position the longest match wins. */
  readonly #pattern: RegExp | null;
  readonly #names = new Map<string, string>();
  readonly #prefixes: Trie = new Map();
  /** The most a stream holds back: the longest pattern less one character. */
  readonly #maxHold: number;

  constructor(secrets: readonly RedactSecret[]) {
    for (const { name, value } of secrets) {
      if ([...value].length < MIN_SECRET_LENGTH) continue;
      for (const form of encodings(value)) if (!this.#names.has(form)) this.#names.set(form, name);
    }
    const patterns = [...this.#names.keys()].sort((a, b) => b.length - a.length);
    this.#pattern = patterns.length > 0 ? new RegExp(patterns.map(escapeRegExp).join('|'), 'g') : null;
    for (const pattern of patterns) {
      let node = this.#prefixes;
      // By UTF-16 unit, as #holdFrom walks it: a tail may end inside a surrogate pair.
      for (let i = 0; i < pattern.length - 1; i++) {
        let next = node.get(pattern.charAt(i));
        if (!next) node.set(pattern.charAt(i), (next = new Map()));
        node = next;
      }
    }
    this.#maxHold = Math.max(0, (patterns[0]?.length ?? 0) - 1);
  }

  redact(text: string): string {
    if (!this.#pattern) return text;
    return this.#render(text, this.#spans(text, 0), text.length).out;
  }

  /** Redacts output that arrives in chunks, catching secrets split across them. */
  stream(): RedactStream {
    const decoder = new StringDecoder('utf8');
    // Text not emitted yet, and how many of its first characters an emitted label already covers.
    let pending = '';
    let covered = 0;
    const emit = (text: string, cut: number): string => {
      const { out, carry } = this.#render(text, this.#spans(text, covered), cut);
      pending = text.slice(cut);
      covered = carry;
      return out;
    };
    return {
      push: (chunk) => {
        const text = pending + (typeof chunk === 'string' ? chunk : decoder.write(chunk));
        return emit(text, this.#holdFrom(text));
      },
      flush: () => {
        const text = pending + decoder.end();
        return emit(text, text.length);
      },
    };
  }

  /**
   * Matches in `text`, overlapping ones merged; a span of `covered` characters at the start
   * continues one whose label was already emitted.
   */
  #spans(text: string, covered: number): Span[] {
    const spans: Span[] = covered > 0 ? [{ start: 0, end: covered, name: null }] : [];
    const pattern = this.#pattern;
    if (!pattern) return spans;
    // Sharing one RegExp (and its lastIndex) is safe: this loop never yields.
    pattern.lastIndex = 0;
    for (let m = pattern.exec(text); m !== null; m = pattern.exec(text)) {
      const start = m.index;
      const end = start + m[0].length;
      const last = spans.at(-1);
      if (last && start < last.end) last.end = Math.max(last.end, end);
      else spans.push({ start, end, name: this.#names.get(m[0]) ?? '' });
      // Resume one character on, not after the match, so that a secret overlapping it is found too.
      pattern.lastIndex = start + 1;
    }
    return spans;
  }

  /** `text` up to `cut` with spans replaced, and how far past `cut` the last span reaches. */
  #render(text: string, spans: Span[], cut: number): { out: string; carry: number } {
    let out = '';
    let pos = 0;
    for (const span of spans) {
      // A continued span (name null, at 0) is entered even when cut is 0, so its coverage carries on.
      if (span.start >= cut && span.name !== null) break;
      out += text.slice(pos, span.start) + (span.name === null ? '' : redactionLabel(span.name));
      pos = span.end;
    }
    // A span reaching past `cut` is emitted whole now; the stream remembers its remainder as covered.
    return { out: out + text.slice(pos, cut), carry: Math.max(0, pos - cut) };
  }

  /**
   * Where the earliest tail of `text` that is a proper prefix of a pattern starts: no match can
   * start before it in future, so all before it is final. `text.length` when there is none.
   */
  #holdFrom(text: string): number {
    for (let start = Math.max(0, text.length - this.#maxHold); start < text.length; start++) {
      let node: Trie | undefined = this.#prefixes;
      for (let i = start; node && i < text.length; i++) node = node.get(text.charAt(i));
      if (node) return start;
    }
    return text.length;
  }
}

function encodings(value: string): string[] {
  const base64 = Buffer.from(value, 'utf8').toString('base64');
  return [value, base64, base64.replace(/=+$/, ''), encodeURIComponent(value)];
}

const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
