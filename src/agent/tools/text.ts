// Keeping what goes back to the model small enough to be useful and cheap.

/**
 * Keeps the head and the tail of an output and says how much was cut: the start of a
 * build log has the first error, the end of a test run has the summary.
 */
export function keepHeadAndTail(bytes: Buffer, headBytes: number, tailBytes: number): string {
  if (bytes.length <= headBytes + tailBytes) return bytes.toString('utf8');
  const cut = bytes.length - headBytes - tailBytes;
  return `${bytes.subarray(0, headBytes).toString('utf8')}\n[... ${cut} bytes cut ...]\n${bytes.subarray(bytes.length - tailBytes).toString('utf8')}`;
}

/** The same, for text already decoded (event payloads). */
export function clip(text: string, maxBytes: number): string {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= maxBytes) return text;
  const head = Math.floor(maxBytes / 4);
  return keepHeadAndTail(bytes, head, maxBytes - head);
}

/** One over-long line (minified code, a data blob) should not crowd out the rest. */
export function clipLine(line: string, max: number): string {
  return line.length <= max ? line : `${line.slice(0, max)} [... ${line.length - max} characters cut]`;
}

/** NUL bytes in the first few KB: what git and grep take as "binary". */
export function looksBinary(bytes: Buffer): boolean {
  return bytes.subarray(0, 8000).includes(0);
}

/** `cat -n` style, which models know. */
export function numberLines(lines: string[], first: number): string {
  return lines.map((line, i) => `${String(first + i).padStart(6)}\t${line}`).join('\n');
}
