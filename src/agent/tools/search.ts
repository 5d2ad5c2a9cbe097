// list_files and search_files: git's view of the repository when there is one (so
// ignored files such as node_modules stay out), find and grep otherwise.
import { z } from 'zod';
import { clipLine } from './text.ts';
import { displayPath, fail, ok, resolvePath, script, type Tool } from './tool.ts';

const MAX_FILES = 500;
const MAX_MATCHES = 200;
const MAX_MATCH_CHARS = 300;

const listSchema = z.object({
  path: z.string().optional().describe('Directory to list, relative to the repository root. Default: the root.'),
});

export const listFiles: Tool<typeof listSchema> = {
  name: 'list_files',
  description: `List the files under a directory, recursively (git-ignored files left out). At most ${MAX_FILES} are shown; list a subdirectory for more.`,
  schema: listSchema,
  async run({ path }, { workspace }) {
    const abs = resolvePath(workspace.root, path ?? '.');
    const shown = displayPath(workspace.root, abs);
    const res = await workspace.exec(
      script(
        `cd "$1" 2>/dev/null || { echo "$2 is not a directory" >&2; exit 2; }
{ git -c core.quotePath=false ls-files --cached --others --exclude-standard 2>/dev/null ||
  find . -type f ! -path '*/.git/*' ! -path '*/node_modules/*' | sed 's|^\\./||' | sort; } | head -n ${MAX_FILES + 1}`,
        abs,
        shown,
      ),
    );
    if (res.exitCode !== 0) return fail(res.stderr.toString('utf8').trim() || `could not list ${shown} (exit code ${res.exitCode})`);
    const files = res.stdout.toString('utf8').split('\n').filter(Boolean);
    if (files.length === 0) return ok(`${shown} has no files`);
    const more = files.length > MAX_FILES ? `\n[more than ${MAX_FILES} files; list a subdirectory to see the rest]` : '';
    const where = shown === '.' ? '' : `(relative to ${shown})\n`;
    return ok(`${where}${files.slice(0, MAX_FILES).join('\n')}${more}`);
  },
};

const searchSchema = z.object({
  pattern: z.string().min(1).describe('Extended regular expression (grep -E), case-sensitive unless ignore_case.'),
  path: z.string().optional().describe('File or directory to search, relative to the repository root. Default: the whole repository.'),
  ignore_case: z.boolean().optional(),
});

export const searchFiles: Tool<typeof searchSchema> = {
  name: 'search_files',
  description: `Search file contents for a regular expression; prints path:line:text for each match (binary and git-ignored files left out). At most ${MAX_MATCHES} matches are shown.`,
  schema: searchSchema,
  async run({ pattern, path, ignore_case }, { workspace }) {
    const abs = resolvePath(workspace.root, path ?? '.');
    const res = await workspace.exec(
      script(
        `if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git -c core.quotePath=false grep -n -I --untracked $3 -E -e "$1" -- "$2"
else
  grep -rnI $3 --exclude-dir=.git --exclude-dir=node_modules -E -e "$1" -- "$2"
fi | head -n ${MAX_MATCHES + 1}`,
        pattern,
        abs,
        ignore_case ? '-i' : '',
      ),
    );
    const stderr = res.stderr.toString('utf8').trim();
    const lines = res.stdout.toString('utf8').split('\n').filter(Boolean);
    // The pipe's exit code is head's: an error shows as output on stderr and none on stdout.
    if (lines.length === 0) return stderr ? fail(stderr) : ok(`no matches for ${JSON.stringify(pattern)}`);
    const root = `${workspace.root}/`;
    const shown = lines.slice(0, MAX_MATCHES).map((l) => clipLine(l.startsWith(root) ? l.slice(root.length) : l, MAX_MATCH_CHARS));
    const more = lines.length > MAX_MATCHES ? `\n[more than ${MAX_MATCHES} matches; narrow the pattern or the path]` : '';
    return ok(`${shown.join('\n')}${more}`);
  },
};
