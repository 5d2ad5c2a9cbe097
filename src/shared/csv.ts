// CSV that a spreadsheet reads as data, never as formulas (CSV injection). Every CSV Berth
// writes goes through here: its cells hold text from hostile sources (repository names, failure
// messages, a forge's answers), and whoever opens the file runs what a formula says.
//
// The file is comma-separated and quoted as RFC 4180 says, but a spreadsheet may split it
// otherwise: on semicolons (Excel in many locales) or tabs (an import dialog), where the
// quotes no longer hold and a cell can start right after any semicolon, tab or line break
// inside a value. So the guard goes at the start of a value and after each of those.

/** Where a spreadsheet may start a cell inside a value, when it splits on something other than commas. */
const SPLIT = /[;\t\r\n]/;

/**
 * What may not follow a cell's start unguarded: a formula sign (= + - @, or their full-width
 * forms); white space (some spreadsheets trim it first); a quote (a cell that opens with one
 * where the quoting no longer lines up reads on past its close); and ' itself, so that every
 * ' at a cell's start is a guard and taking the guards off gives the value back exactly.
 */
const RISKY = /[=+\-@＝＋－＠'"\s]/u;

/**
 * The value with a ' before each place a spreadsheet's cell could start with something risky.
 * (Inside a value, a run of line breaks and tabs takes one guard, before what follows it.)
 */
function guard(s: string): string {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (RISKY.test(c) && (i === 0 || (SPLIT.test(s[i - 1]!) && !SPLIT.test(c)))) out += "'";
    out += c;
  }
  return out;
}

/** One cell: guarded, then quoted if it holds a quote, a comma, a semicolon, a tab or a line break. */
function csvCell(value: string | number | boolean | null | undefined): string {
  const s = guard(value === null || value === undefined ? '' : String(value));
  return /[",;\t\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

/** A whole CSV document: a header line, one line per row, each line ended by \n. */
export function csvTable(header: readonly string[], rows: Iterable<readonly (string | number | boolean | null | undefined)[]>): string {
  const lines = [header.map(csvCell).join(',')];
  for (const row of rows) lines.push(row.map(csvCell).join(','));
  return `${lines.join('\n')}\n`;
}
