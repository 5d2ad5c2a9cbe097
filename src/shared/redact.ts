// Redaction of secret values from recorded output (command output, logs, error messages,
// event payloads, diffs), and detection of them in what leaves Berth (a change before it is
// pushed, files copied out). Each occurrence becomes `[secret:NAME]`; detection says which
// NAMEs were seen. Both use the same forms, listed in `formsOf`:
//
// - the value itself; from MIN_ENCODED_LENGTH characters on also in any letter case,
//   reversed, as hex (either case), fully percent-encoded and fully \u-escaped (up to
//   MAX_SPELLED_LENGTH characters);
// - its base64, standard and URL-safe alphabets, padded or not, and (from MIN_ENCODED_LENGTH)
//   also where it sits inside a longer base64 stream at any of the three byte offsets
//   (`base64` of `user:$S`, of `$S` followed by a newline): all but the one or two characters
//   at its edges, which mix in the neighbours' bits, are replaced;
// - its URL encoding (encodeURIComponent's) and its JSON string escaping (also with
//   everything past ASCII as \uXXXX).
//
// The text is matched through "lenses": CSI and OSC escape sequences (colours, cursor moves,
// titles, links) and the short ESC sequences are not seen, so colour codes between characters
// hide nothing (text with escapes is read a second time with them as text, so an escape can
// never swallow a character of a value). The lenses for the encodings and the long values do
// not see a line break after a run of at least MIN_WRAP_WIDTH base64/hex characters, so
// base64 wrapped at 76 (`base64`) or 64 (PEM) columns and hex wrapped by `xxd -p` are found,
// and read CRLF as LF. What is replaced is the stretch of the original text that the match
// covers, escapes and line breaks inside it included.
//
// This is a safety net, not a guarantee: anything else the holder of a value can do with it
// (encrypt it, compress it, split it across files or lines with other text between, another
// encoding, arbitrary arithmetic) passes. Values are only as safe as the code that sees them.
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

/**
 * Values shorter than this are found only as themselves (case as given), their plain base64
 * and their URL and JSON escapings. The looser forms (other letter case, reversed, hex, base64
 * at an offset) of a short value turn up by chance: "Test" in any case, "tset", 74657374 in a hash.
 */
export const MIN_ENCODED_LENGTH = 8;

/** Longest value whose spelled-out forms (%XX and \u00XX for every character) are searched: they are 3–6 times as long. */
export const MAX_SPELLED_LENGTH = 512;

export const redactionLabel = (name: string): string => `[secret:${name}]`;

export interface RedactStream {
  /** The redacted text that is final now; only a tail that could start a secret is held back. */
  push(chunk: Buffer | string): string;
  /** Everything held back, redacted; call once at the end of the output. */
  flush(): string;
}

export interface DetectStream {
  /** Looks at the next piece of the input; a secret split across pieces is found too. */
  push(chunk: Buffer | string): void;
  /** The names of the secrets found in the whole input, first seen first; call once at the end. */
  end(): string[];
}

/** Names of the secrets found in `input` in any form the Redactor knows, first seen first. */
export function detectSecrets(input: string | Uint8Array, secrets: readonly RedactSecret[]): string[] {
  return new Redactor(secrets).detect(input);
}

/** How a lens sees text: never ANSI escapes; `unwrap`: no line breaks; `fold`: ASCII upper case as lower. */
interface Lens {
  unwrap: boolean;
  fold: boolean;
}

type LensName = 'exact' | 'loose' | 'base64';
const LENSES: Record<LensName, Lens> = {
  /** The short values' forms: as given. */
  exact: { unwrap: false, fold: false },
  /** The long values' textual forms: any case, across line breaks. */
  loose: { unwrap: true, fold: true },
  /** base64 is case-sensitive; it is wrapped. */
  base64: { unwrap: true, fold: false },
};

/** A stretch of text to replace; `name` null: a stream already emitted its label. */
interface Span {
  start: number;
  end: number;
  name: string | null;
}

/** Proper prefixes of every pattern, one character per level. */
type Trie = Map<string, Trie>;

/** The patterns seen through one lens. */
interface Matcher {
  lens: Lens;
  /** All patterns, longest first, so that at one position the longest match wins. */
  pattern: RegExp;
  names: Map<string, string>;
  prefixes: Trie;
  /** The most a stream holds back in this lens: the longest pattern less one character. */
  maxHold: number;
}

export class Redactor {
  readonly #matchers: Matcher[] = [];

  constructor(secrets: readonly RedactSecret[]) {
    const names = new Map<LensName, Map<string, string>>();
    for (const { name, value } of secrets) {
      for (const { lens, form } of formsOf(value)) {
        const seen = look(form, LENSES[lens], form.length, { open: false, line: 0, escapes: true }).text;
        if (seen.length < MIN_SECRET_LENGTH) continue;
        const map = names.get(lens) ?? names.set(lens, new Map()).get(lens)!;
        if (!map.has(seen)) map.set(seen, name);
      }
    }
    for (const [lens, map] of names) {
      const patterns = [...map.keys()].sort((a, b) => b.length - a.length);
      const prefixes: Trie = new Map();
      for (const pattern of patterns) {
        let node = prefixes;
        // By UTF-16 unit, as #holdFrom walks it: a tail may end inside a surrogate pair.
        for (let i = 0; i < pattern.length - 1; i++) {
          let next = node.get(pattern.charAt(i));
          if (!next) node.set(pattern.charAt(i), (next = new Map()));
          node = next;
        }
      }
      this.#matchers.push({
        lens: LENSES[lens],
        pattern: new RegExp(patterns.map(escapeRegExp).join('|'), 'g'),
        names: map,
        prefixes,
        maxHold: patterns[0]!.length - 1,
      });
    }
  }

  redact(text: string): string {
    if (this.#matchers.length === 0) return text;
    return this.#render(text, this.#scan(text, 0, true, START_OF_LINE).spans, text.length).out;
  }

  /** Redacts output that arrives in chunks, catching secrets split across them. */
  stream(): RedactStream {
    const decoder = new StringDecoder('utf8');
    // Text not emitted yet, and how many of its first characters an emitted label already covers.
    let pending = '';
    let covered = 0;
    // What the lenses need to know of the line the emitted text ended in.
    let line = START_OF_LINE;
    const emit = (text: string, final: boolean): string => {
      const { spans, hold } = this.#scan(text, covered, final, line);
      const { out, carry } = this.#render(text, spans, hold);
      line = linesAfter(line, text.slice(0, hold));
      pending = text.slice(hold);
      covered = carry;
      return out;
    };
    return {
      push: (chunk) => {
        const text = pending + (typeof chunk === 'string' ? chunk : decoder.write(chunk));
        return this.#matchers.length === 0 ? text : emit(text, false);
      },
      flush: () => {
        const text = pending + decoder.end();
        return this.#matchers.length === 0 ? text : emit(text, true);
      },
    };
  }

  /** The names of the secrets in `input`, first seen first. Bytes are read as UTF-8, a piece at a time. */
  detect(input: string | Uint8Array): string[] {
    const detector = this.detector();
    if (typeof input === 'string') detector.push(input);
    else for (let at = 0; at < input.length; at += DETECT_PIECE) detector.push(Buffer.from(input.buffer, input.byteOffset + at, Math.min(DETECT_PIECE, input.length - at)));
    return detector.end();
  }

  /** Detection over input that arrives in pieces (a stream being copied out), holding back no more than redaction does. */
  detector(): DetectStream {
    const decoder = new StringDecoder('utf8');
    const found = new Set<string>();
    let pending = '';
    let line = START_OF_LINE;
    const scan = (text: string, final: boolean) => {
      if (this.#matchers.length === 0) return;
      const { hold } = this.#scan(text, 0, final, line, found);
      // A match that reaches into the held tail is seen again, whole, with the next piece.
      line = linesAfter(line, text.slice(0, hold));
      pending = text.slice(hold);
    };
    return {
      push: (chunk) => scan(pending + (typeof chunk === 'string' ? chunk : decoder.write(chunk)), false),
      end: () => {
        scan(pending + decoder.end(), true);
        pending = '';
        return [...found];
      },
    };
  }

  /** `value` with every string in it (object keys too) redacted: for structured payloads, where escaping would hide a value from `redact`. */
  redactValue<T>(value: T): T {
    if (this.#matchers.length === 0) return value;
    const walk = (v: unknown): unknown => {
      if (typeof v === 'string') return this.redact(v);
      if (Array.isArray(v)) return v.map(walk);
      if (v === null || typeof v !== 'object') return v;
      const proto: unknown = Object.getPrototypeOf(v);
      // Anything else (a Date, an Error, a class) as the JSON it is stored as.
      if (proto !== Object.prototype && proto !== null) return walk(JSON.parse(JSON.stringify(v) ?? 'null'));
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [this.redact(k), walk(x)]));
    };
    return walk(value) as T;
  }

  /**
   * Matches in `text` through every lens, overlapping ones merged; a span of `covered`
   * characters at the start continues one whose label was already emitted. Unless `final`,
   * also where the tail that could still become (part of) a match starts: `hold`. `line`:
   * linesAfter the text before this one.
   */
  #scan(text: string, covered: number, final: boolean, line: Lines, found?: Set<string>): { spans: Span[]; hold: number } {
    // An escape sequence cut off at the end is not text yet: it is held, and unseen meanwhile.
    const end = final ? text.length : partialEscapeAt(text);
    // Text with escapes is also read with them as text: an escape can swallow a character
    // of a value written right after it ("\x1b" + "abc…" reads as the escape "\x1ba"), and
    // the value is there all the same.
    const literal = text.lastIndexOf('\x1b', end - 1) >= 0;
    let hold = end;
    const matches: Span[] = [];
    for (const m of this.#matchers) for (const escapes of literal ? [true, false] : [true]) {
      const view = look(text, m.lens, end, { open: !final, line: line[escapes ? 0 : 1], escapes });
      const { pattern } = m;
      // Sharing one RegExp (and its lastIndex) is safe: this loop never yields.
      pattern.lastIndex = 0;
      for (let r = pattern.exec(view.text); r !== null; r = pattern.exec(view.text)) {
        const name = m.names.get(r[0]) ?? '';
        found?.add(name);
        matches.push({ start: view.origin(r.index), end: view.origin(r.index + r[0].length - 1) + 1, name });
        // Resume one character on, not after the match, so that a secret overlapping it is found too.
        pattern.lastIndex = r.index + 1;
      }
      if (!final) {
        const from = holdFrom(view.text, m);
        if (from < view.text.length) hold = Math.min(hold, view.origin(from));
      }
    }
    if (literal) hold = escapeStart(text, hold);
    matches.sort((a, b) => a.start - b.start || b.end - a.end);
    const spans: Span[] = covered > 0 ? [{ start: 0, end: covered, name: null }] : [];
    for (const match of matches) {
      const last = spans.at(-1);
      if (last && match.start < last.end) last.end = Math.max(last.end, match.end);
      else spans.push(match);
    }
    return { spans, hold };
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
}

/** How much of a Buffer detect() decodes and scans at once. */
const DETECT_PIECE = 1 << 20;

/**
 * Where the earliest tail of `seen` that is a proper prefix of one of the matcher's patterns
 * starts: no match can start before it in future, so all before it is final. `seen.length`
 * when there is none.
 */
function holdFrom(seen: string, m: Matcher): number {
  for (let start = Math.max(0, seen.length - m.maxHold); start < seen.length; start++) {
    let node: Trie | undefined = m.prefixes;
    for (let i = start; node && i < seen.length; i++) node = node.get(seen.charAt(i));
    if (node) return start;
  }
  return seen.length;
}

/** Every form of `value` that is searched, with the lens it is searched through. */
function formsOf(value: string): { lens: LensName; form: string }[] {
  const chars = [...value].length;
  if (chars < MIN_SECRET_LENGTH) return [];
  const bytes = Buffer.from(value, 'utf8');
  const base64 = bytes.toString('base64');
  const json = JSON.stringify(value).slice(1, -1);
  if (chars < MIN_ENCODED_LENGTH) {
    return [
      { lens: 'exact', form: value },
      { lens: 'exact', form: json },
      { lens: 'exact', form: encodeURIComponent(value) },
      { lens: 'base64', form: base64 },
      { lens: 'base64', form: base64.replace(/=+$/, '') },
    ];
  }
  const loose = [
    value,
    [...value].reverse().join(''),
    json,
    // Python's json.dumps (ensure_ascii): everything past ASCII as \uXXXX.
    json.replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`),
    bytes.toString('hex'),
    encodeURIComponent(value),
  ];
  if (chars <= MAX_SPELLED_LENGTH) {
    loose.push([...bytes].map((b) => `%${b.toString(16).padStart(2, '0')}`).join(''));
    loose.push(Array.from(value, (_, i) => `\\u${value.charCodeAt(i).toString(16).padStart(4, '0')}`).join(''));
  }
  const base64s = [base64, base64.replace(/=+$/, '')];
  // Inside a longer stream the value starts 0, 1 or 2 bytes into a 3-byte group: only the
  // characters made of its bits alone are fixed, those at the edges mix in the neighbours'.
  for (let offset = 0; offset < 3; offset++) {
    const encoded = Buffer.concat([Buffer.alloc(offset), bytes]).toString('base64');
    base64s.push(encoded.slice(Math.ceil((8 * offset) / 6), Math.floor((8 * (offset + bytes.length)) / 6)));
  }
  for (const b of [...base64s]) base64s.push(b.replace(/\+/g, '-').replace(/\//g, '_'));
  return [...loose.map((form) => ({ lens: 'loose' as const, form })), ...base64s.map((form) => ({ lens: 'base64' as const, form }))];
}

/** What a lens sees of text, and where each character it sees came from. */
interface View {
  text: string;
  /** The index in the original text of the character at `i` of the view. */
  origin(i: number): number;
}

/** A longer run of unseen escapes and line breaks than this separates: a match never spans it (and a stream never waits across it). */
const MAX_GAP = 256;
/** Stands for such a run in a view; no pattern contains it. */
const BARRIER = '\uffff';
/**
 * A line break is unseen (by the lenses that unwrap) only right after at least this many
 * base64 or hex characters: wrapped encodings (76, 64, 60 columns) are, and ordinary output
 * that ends a line is never held back waiting for the next one.
 */
export const MIN_WRAP_WIDTH = 16;

// CSI (colours, cursor), OSC (titles, hyperlinks; ended by BEL or ST), and the two-character
// escapes (charset selection, keypad modes). Parameters are bounded, so is what a stream holds.
const ESCAPE = '\\x1b(?:\\[[0-?]{0,64}[ -/]{0,16}[@-~]|\\][^\\x07\\x1b]{0,1024}(?:\\x07|\\x1b\\\\)|[ -/]{0,16}[0-Z\\\\^-~])';
const UNSEEN: Record<'wrapped' | 'escapes' | 'breaks', RegExp> = {
  escapes: new RegExp(ESCAPE, 'g'),
  wrapped: new RegExp(`${ESCAPE}|\\r\\n|\\r|\\n`, 'g'),
  breaks: /\r\n|\r|\n/g,
};
/** An escape sequence begun at the very end of the text, not finished yet. */
const PARTIAL_ESCAPE = /\x1b(?:\[[0-?]{0,64}[ -/]{0,16}|\][^\x07\x1b]{0,1024}\x1b?|[ -/]{0,16})$/;

const ESCAPE_AT = new RegExp(ESCAPE, 'y');

/** `at`, or the start of the escape sequence it falls inside: a stream never cuts one in two. */
function escapeStart(text: string, at: number): number {
  const e = text.lastIndexOf('\x1b', at - 1);
  if (e < 0 || at - e > 1100) return at;
  ESCAPE_AT.lastIndex = e;
  const m = ESCAPE_AT.exec(text);
  return m && e + m[0].length > at ? e : at;
}

function partialEscapeAt(text: string): number {
  const from = Math.max(0, text.length - 1100);
  if (text.lastIndexOf('\x1b') < from) return text.length;
  const m = PARTIAL_ESCAPE.exec(text.slice(from));
  return m ? from + m.index : text.length;
}

/** A base64 (either alphabet) or hex character. */
function wrappable(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x2b || c === 0x2f || c === 0x3d || c === 0x5f || c === 0x2d;
}

/** The run of wrappable characters at the end of text[from, to), continuing `before` when all are. */
function wrappableRun(text: string, from: number, to: number, before: number): number {
  let i = to;
  while (i > from && wrappable(text.charCodeAt(i - 1))) i--;
  return i === from ? before + (to - from) : to - i;
}

/** The run of wrappable characters the text so far ends with: escapes unseen, and escapes as text. */
type Lines = readonly [number, number];
const START_OF_LINE: Lines = [0, 0];

/** What `look` starts from for the text after `text`, given the same for the text before it. */
function linesAfter(line: Lines, text: string): Lines {
  const after = (before: number, seen: string) => {
    const lastBreak = Math.max(seen.lastIndexOf('\n'), seen.lastIndexOf('\r'));
    return lastBreak < 0 ? wrappableRun(seen, 0, seen.length, before) : wrappableRun(seen, lastBreak + 1, seen.length, 0);
  };
  return [after(line[0], text.replace(UNSEEN.escapes, '')), after(line[1], text)];
}

/** Case folded, character for character (a letter whose lower case is longer keeps its case). */
function fold(s: string): string {
  const lower = s.toLowerCase();
  return lower.length === s.length ? lower : s.replace(/[A-Z]+/g, (c) => c.toLowerCase());
}

/**
 * `text` up to `end` as `lens` sees it. `open`: the text goes on after `end`, so a run of
 * unseen characters at the end may still grow; past MAX_GAP it is a barrier already.
 * `line`: what linesAfter says of the text before this one. `escapes`: unseen (else text).
 */
function look(text: string, lens: Lens, end: number, o: { open: boolean; line: number; escapes: boolean }): View {
  const unseen = lens.unwrap ? (o.escapes ? UNSEEN.wrapped : UNSEEN.breaks) : o.escapes ? UNSEEN.escapes : null;
  if (!unseen) {
    const view = text.slice(0, end);
    return { text: lens.fold ? fold(view) : view, origin: (i) => i };
  }
  let line = o.line;
  // Stretches: the view's characters from segView[k] on came from text at segText[k] on.
  const parts: string[] = [];
  const segView: number[] = [];
  const segText: number[] = [];
  let seen = 0;
  const stretch = (a: number, b: number) => {
    if (b <= a) return;
    parts.push(text.slice(a, b));
    segView.push(seen);
    segText.push(a);
    seen += b - a;
  };
  /** Where the current stretch of seen text starts, and the run of unseen text after it. */
  let from = 0;
  let runStart = 0;
  let run = 0;
  const endRun = (next: number) => {
    stretch(from, runStart);
    if (run > MAX_GAP) {
      parts.push(BARRIER);
      segView.push(seen++);
      segText.push(runStart);
    }
    from = next;
    run = 0;
  };
  let pos = 0;
  unseen.lastIndex = 0;
  for (let m = unseen.exec(text); m !== null && m.index + m[0].length <= end; m = unseen.exec(text)) {
    if (m.index > pos) {
      if (lens.unwrap) line = wrappableRun(text, pos, m.index, line);
      if (run > 0) endRun(pos);
    }
    pos = m.index + m[0].length;
    if (m[0].charCodeAt(0) !== 0x1b) {
      const wrapped = line >= MIN_WRAP_WIDTH;
      line = 0;
      if (!wrapped) {
        // A break after ordinary text is seen, as text; CRLF as LF.
        if (m[0] === '\r\n') {
          if (run === 0) runStart = m.index;
          run += 1;
          endRun(m.index + 1);
        } else if (run > 0) endRun(m.index);
        continue;
      }
    }
    if (run === 0) runStart = m.index;
    run += m[0].length;
  }
  if (end > pos && run > 0) endRun(pos);
  if (run === 0) stretch(from, end);
  else if (o.open) endRun(end);
  else stretch(from, runStart);
  const joined = parts.length === 1 ? parts[0]! : parts.join('');
  const view = lens.fold ? fold(joined) : joined;
  if (segView.length === 1 && segText[0] === 0) return { text: view, origin: (i) => i };
  return {
    text: view,
    origin: (i) => {
      let lo = 0;
      let hi = segView.length - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (segView[mid]! <= i) lo = mid;
        else hi = mid - 1;
      }
      return segText[lo]! + (i - segView[lo]!);
    },
  };
}

const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
