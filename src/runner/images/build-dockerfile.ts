// The one thing Berth reads in a Dockerfile: its FROM lines, so that every base image comes
// from Berth's store under the org's rules (build-base.ts) instead of from wherever buildah
// would pull it. Each FROM that names an image is rewritten to the store's export; stage
// names and `scratch` stay as they are. Global ARGs (before the first FROM) and --build-arg
// values are substituted the way buildah would, so `FROM base:${VARIANT}` works.
import { invalid } from '../../shared/errors.ts';

export interface FromLine {
  /** The image reference after ARG substitution, or a stage name, or `scratch`. */
  ref: string;
  /** Whether `ref` is an earlier stage or scratch (not an image to resolve). */
  internal: boolean;
}

interface Instruction {
  keyword: string;
  args: string;
  first: number;
  last: number;
}

/** Splits a Dockerfile into instructions, joining `\` continuations and dropping comments. */
function instructions(text: string): Instruction[] {
  const lines = text.split(/\r?\n/);
  const out: Instruction[] = [];
  let escape = '\\';
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    // The escape directive is honoured only at the very top, before any instruction.
    const directive = /^#\s*escape\s*=\s*(\S)\s*$/i.exec(line);
    if (directive && out.length === 0) escape = directive[1]!;
    if (/^\s*(#|$)/.test(line)) continue;
    const first = i;
    let joined = line;
    while (joined.trimEnd().endsWith(escape) && i + 1 < lines.length) {
      joined = joined.trimEnd().slice(0, -1);
      i++;
      while (i < lines.length && /^\s*#/.test(lines[i]!)) i++;
      joined += lines[i] ?? '';
    }
    const m = /^\s*(\S+)\s*(.*)$/.exec(joined);
    if (m) out.push({ keyword: m[1]!.toUpperCase(), args: m[2]!.trim(), first, last: i });
  }
  return out;
}

function substitute(text: string, vars: Record<string, string>, what: string): string {
  return text.replace(/\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))/g, (_all, braced: string | undefined, op: string | undefined, word: string | undefined, bare: string | undefined) => {
    const name = (braced ?? bare)!;
    const value = vars[name];
    if (op === '-') return value ? value : (word ?? '');
    if (op === '+') return value ? (word ?? '') : '';
    if (value === undefined) throw invalid(`${what}: \`${text}\` uses \${${name}}, which no ARG before the first FROM and no build.args entry sets`);
    return value;
  });
}

/**
 * The Dockerfile's FROM images, and the Dockerfile with each FROM image replaced by
 * `rewrite(ref)`. Line numbers stay the same, so buildah's errors still point at the user's lines.
 */
export function rewriteFroms(text: string, buildArgs: Record<string, string>, rewrite: (ref: string) => string, file = 'Dockerfile'): { froms: FromLine[]; text: string } {
  const list = instructions(text);
  if (!list.some((i) => i.keyword === 'FROM')) throw invalid(`${file} has no FROM line: a Dockerfile starts from an image (or FROM scratch)`);
  const globals: Record<string, string> = {};
  const stages = new Set<string>();
  const froms: FromLine[] = [];
  const lines = text.split(/\r?\n/);
  let seenFrom = false;
  for (const ins of list) {
    if (ins.keyword === 'ARG' && !seenFrom) {
      for (const part of ins.args.split(/\s+/)) {
        const [name, ...rest] = part.split('=');
        if (!name) continue;
        const dflt = rest.length ? rest.join('=').replace(/^"(.*)"$/, '$1') : undefined;
        const v = buildArgs[name] ?? dflt;
        if (v !== undefined) globals[name] = v;
      }
      continue;
    }
    if (ins.keyword !== 'FROM') continue;
    seenFrom = true;
    const words = ins.args.split(/\s+/).filter((w) => !w.startsWith('--'));
    const image = words[0];
    if (!image) throw invalid(`${file} line ${ins.first + 1}: FROM names no image`);
    const alias = words.length >= 3 && words[1]!.toUpperCase() === 'AS' ? words[2] : undefined;
    const ref = substitute(image, globals, `${file} line ${ins.first + 1}`);
    const internal = ref === 'scratch' || stages.has(ref.toLowerCase());
    froms.push({ ref, internal });
    if (alias) stages.add(alias.toLowerCase());
    if (!internal) {
      lines[ins.first] = `FROM ${rewrite(ref)}${alias ? ` AS ${alias}` : ''}`;
      for (let i = ins.first + 1; i <= ins.last; i++) lines[i] = '';
    }
  }
  return { froms, text: lines.join('\n') };
}
