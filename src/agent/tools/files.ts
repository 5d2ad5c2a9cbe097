// read_file, write_file and edit_file, over exec: cat, sed and a shell redirect.
import { z } from 'zod';
import { clipLine, looksBinary, numberLines } from './text.ts';
import { displayPath, fail, ok, resolvePath, script, type Tool, type ToolContext } from './tool.ts';

const MAX_READ_LINES = 2000;
const MAX_READ_BYTES = 64 * 1024;
const MAX_LINE_CHARS = 1000;
/** edit_file holds the whole file in memory and sends it back. */
const MAX_EDIT_BYTES = 2 * 1024 * 1024;
/** Lines of context shown around an edit, so the model can check it. */
const EDIT_CONTEXT = 3;

const lineNumber = z.coerce.number().int().min(1);

const readSchema = z.object({
  path: z.string().min(1).describe('File path, relative to the repository root or absolute.'),
  start_line: lineNumber.optional().describe('First line to show (1-based). Default 1.'),
  end_line: lineNumber.optional().describe(`Last line to show. At most ${MAX_READ_LINES} lines are shown at once.`),
});

export const readFile: Tool<typeof readSchema> = {
  name: 'read_file',
  description: `Read a text file, with line numbers. Shows at most ${MAX_READ_LINES} lines or ${MAX_READ_BYTES / 1024} KB at once; use start_line and end_line for more.`,
  schema: readSchema,
  async run({ path, start_line, end_line }, { workspace }) {
    const abs = resolvePath(workspace.root, path);
    const shown = displayPath(workspace.root, abs);
    const start = start_line ?? 1;
    const end = Math.min(end_line ?? Infinity, start + MAX_READ_LINES - 1);
    if (end < start) return fail(`end_line (${end_line}) is before start_line (${start})`);
    // First line of output: the file's line count; then the lines asked for, capped.
    const res = await workspace.exec(
      script(
        `if [ -d "$1" ]; then echo "$4 is a directory: use list_files" >&2; exit 2; fi
if [ ! -f "$1" ]; then echo "$4 does not exist" >&2; exit 2; fi
awk 'END { print NR }' "$1" && sed -n "$2,$3p" "$1" | head -c ${MAX_READ_BYTES + 1}`,
        abs,
        String(start),
        String(end),
        shown,
      ),
      { intent: { action: 'file.read', path: shown } },
    );
    if (res.exitCode !== 0) return fail(res.stderr.toString('utf8').trim() || `could not read ${shown} (exit code ${res.exitCode})`);
    const newline = res.stdout.indexOf(10);
    const total = Number(res.stdout.subarray(0, newline).toString('utf8').trim());
    const body = res.stdout.subarray(newline + 1);
    if (looksBinary(body)) return fail(`${shown} looks like a binary file; inspect it with run_command (file, xxd | head) instead`);
    if (body.length === 0) return ok(total === 0 ? `${shown} is empty` : `${shown} has only ${total} lines`);

    let text = body.toString('utf8');
    let cutByBytes = false;
    if (body.length > MAX_READ_BYTES) {
      cutByBytes = true;
      // Drop the partial last line.
      text = text.slice(0, text.lastIndexOf('\n', MAX_READ_BYTES) + 1);
    }
    const lines = text.replace(/\n$/, '').split('\n').map((l) => clipLine(l, MAX_LINE_CHARS));
    const last = start + lines.length - 1;
    // Tell where the file goes on; suggest reading on only when the caps cut short what was asked.
    const capped = last < Math.min(total, end_line ?? Infinity);
    const more = capped ? `${cutByBytes ? `, cut at ${MAX_READ_BYTES / 1024} KB` : ''}; read on with start_line=${last + 1}` : '';
    const note = last < total ? `\n[lines ${start}-${last} of ${total}${more}]` : '';
    return ok(`${numberLines(lines, start)}${note}`);
  },
};

const writeSchema = z.object({
  path: z.string().min(1).describe('File path, relative to the repository root or absolute.'),
  content: z.string().describe('The whole new content of the file.'),
});

export const writeFile: Tool<typeof writeSchema> = {
  name: 'write_file',
  description: 'Create a file or replace all of its content; missing directories are created. To change part of a file, use edit_file.',
  schema: writeSchema,
  async run({ path, content }, { workspace }) {
    const abs = resolvePath(workspace.root, path);
    const shown = displayPath(workspace.root, abs);
    const err = await write(workspace, abs, shown, content);
    if (err) return fail(`could not write ${shown}: ${err}`);
    const lines = content === '' ? 0 : content.split('\n').length - (content.endsWith('\n') ? 1 : 0);
    return ok(`wrote ${shown} (${Buffer.byteLength(content)} bytes, ${lines} lines)`);
  },
};

const editSchema = z.object({
  path: z.string().min(1).describe('File path, relative to the repository root or absolute.'),
  old_text: z.string().min(1).describe('Text to replace: copied exactly from the file, whitespace included, and long enough to occur only once.'),
  new_text: z.string().describe('The text to put in its place.'),
});

export const editFile: Tool<typeof editSchema> = {
  name: 'edit_file',
  description: 'Replace one exact occurrence of old_text in a file with new_text. Fails if old_text occurs zero or several times; then read the file and include more context.',
  schema: editSchema,
  async run({ path, old_text, new_text }, { workspace }) {
    const abs = resolvePath(workspace.root, path);
    const shown = displayPath(workspace.root, abs);
    const res = await workspace.exec(
      script(
        `if [ ! -f "$1" ]; then echo "$2 does not exist (create it with write_file)" >&2; exit 2; fi
if [ "$(wc -c < "$1")" -gt ${MAX_EDIT_BYTES} ]; then echo "$2 is larger than ${MAX_EDIT_BYTES / 1024 / 1024} MB: change it with run_command (sed, patch)" >&2; exit 2; fi
cat "$1"`,
        abs,
        shown,
      ),
      { intent: { action: 'file.read', path: shown } },
    );
    if (res.exitCode !== 0) return fail(res.stderr.toString('utf8').trim() || `could not read ${shown} (exit code ${res.exitCode})`);
    if (looksBinary(res.stdout)) return fail(`${shown} looks like a binary file`);
    const content = res.stdout.toString('utf8');

    // Models write \n; a file with Windows line endings should still match.
    const oldText = !content.includes(old_text) && content.includes('\r\n') ? old_text.replaceAll(/\r?\n/g, '\r\n') : old_text;
    const newText = oldText === old_text ? new_text : new_text.replaceAll(/\r?\n/g, '\r\n');
    const count = occurrences(content, oldText);
    if (count === 0) {
      const squash = (s: string) => s.replaceAll(/\s+/g, ' ').trim();
      const hint = squash(content).includes(squash(old_text)) ? ' It does match if whitespace is ignored: copy the indentation exactly (read_file shows it after the tab that follows each line number).' : ' Read the file again and copy the text exactly.';
      return fail(`old_text was not found in ${shown}.${hint}`);
    }
    if (count > 1) return fail(`old_text occurs ${count} times in ${shown}; include more surrounding lines so that it occurs once.`);
    if (oldText === newText) return fail('old_text and new_text are the same: nothing to change');

    const at = content.indexOf(oldText);
    const updated = content.slice(0, at) + newText + content.slice(at + oldText.length);
    const err = await write(workspace, abs, shown, updated);
    if (err) return fail(`could not write ${shown}: ${err}`);

    const firstLine = content.slice(0, at).split('\n').length;
    const lines = updated.split('\n');
    const from = Math.max(1, firstLine - EDIT_CONTEXT);
    const to = Math.min(lines.length, firstLine + newText.split('\n').length - 1 + EDIT_CONTEXT);
    const excerpt = numberLines(lines.slice(from - 1, to).map((l) => clipLine(l, MAX_LINE_CHARS)), from);
    return ok(`edited ${shown}; lines ${from}-${to} now read:\n${excerpt}`);
  },
};

function occurrences(haystack: string, needle: string): number {
  let n = 0;
  for (let i = haystack.indexOf(needle); i !== -1; i = haystack.indexOf(needle, i + 1)) n++;
  return n;
}

/** Writes a file through the shell (on record as `file.written`, not the script); returns what went wrong, or null. */
async function write(workspace: ToolContext['workspace'], abs: string, shown: string, content: string): Promise<string | null> {
  const res = await workspace.exec(script('mkdir -p "$(dirname "$1")" && cat > "$1"', abs), { stdin: content, intent: { action: 'file.written', path: shown } });
  return res.exitCode === 0 ? null : res.stderr.toString('utf8').trim() || `exit code ${res.exitCode}`;
}
