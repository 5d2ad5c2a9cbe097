// `berth completion bash|zsh|fish`: completion scripts generated from the command tree itself, so
// a new command or flag completes without anyone editing a script. Each script holds, for every
// command path ("", "env", "env create"), its subcommands, its flags, and which flags take a value
// (so the walk over the words typed so far skips those values).
import type { Command } from 'commander';

interface Node {
  path: string;
  subcommands: { name: string; description: string }[];
  flags: { flag: string; description: string; takesValue: boolean }[];
}

function walk(command: Command, globals: Node['flags'], path = '', out: Node[] = []): Node[] {
  const own = command.options
    .filter((o) => !o.hidden)
    .flatMap((o) => [o.long, o.short].filter((f): f is string => Boolean(f)).map((flag) => ({ flag, description: o.description, takesValue: o.required || o.optional })));
  const flags = [...own, ...(path ? globals : []), { flag: '--help', description: 'show help', takesValue: false }];
  const visible = command.commands.filter((c) => !(c as Command & { _hidden?: boolean })._hidden);
  out.push({
    path,
    subcommands: visible.flatMap((c) => [c.name(), ...c.aliases()].map((name) => ({ name, description: c.description() }))),
    flags,
  });
  for (const c of visible) walk(c, globals, path ? `${path} ${c.name()}` : c.name(), out);
  // An alias walks like its command: `env ls` completes as `env list` does.
  for (const c of visible) for (const alias of c.aliases()) out.push({ ...out.find((n) => n.path === (path ? `${path} ${c.name()}` : c.name()))!, path: path ? `${path} ${alias}` : alias });
  return out;
}

function nodes(program: Command): Node[] {
  const globals = program.options.filter((o) => o.long && o.long !== '--version').map((o) => ({ flag: o.long!, description: o.description, takesValue: o.required || o.optional }));
  return walk(program, globals);
}

const oneLine = (s: string) => s.replace(/\s+/g, ' ').trim();
const sq = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

/** A shell `case` over command paths, one branch per path, printing `pick(node)`. */
function cases(all: Node[], pick: (n: Node) => string): string {
  return all.map((n) => `    ${sq(n.path)}) printf '%s\\n' ${pick(n)} ;;`).join('\n');
}

function bash(all: Node[]): string {
  return `# berth completion for bash: source <(berth completion bash)
_berth_subcommands() {
  case "$1" in
${cases(all, (n) => n.subcommands.map((s) => sq(s.name)).join(' ') || "''")}
  esac
}
_berth_flags() {
  case "$1" in
${cases(all, (n) => n.flags.map((f) => sq(f.flag)).join(' ') || "''")}
  esac
}
_berth_valued() {
  case "$1" in
${cases(all, (n) => n.flags.filter((f) => f.takesValue).map((f) => sq(f.flag)).join(' ') || "''")}
  esac
}
# The command path typed so far ("env create"), from the words before the cursor.
_berth_path() {
  local cmdpath="" i w
  for ((i = 1; i < COMP_CWORD; i++)); do
    w=\${COMP_WORDS[i]}
    if [[ $w == -* ]]; then
      [[ $w != *=* ]] && [[ " $(_berth_valued "$cmdpath" | tr '\\n' ' ') " == *" $w "* ]] && ((i++))
    elif [[ " $(_berth_subcommands "$cmdpath" | tr '\\n' ' ') " == *" $w "* ]]; then
      cmdpath=\${cmdpath:+$cmdpath }$w
    fi
  done
  printf '%s' "$cmdpath"
}
_berth() {
  local cur=\${COMP_WORDS[COMP_CWORD]} cmdpath
  cmdpath=$(_berth_path)
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$(_berth_flags "$cmdpath")" -- "$cur"))
  else
    COMPREPLY=($(compgen -W "$(_berth_subcommands "$cmdpath")" -- "$cur"))
  fi
}
complete -o default -F _berth berth
`;
}

function zsh(all: Node[]): string {
  const described = (items: { name: string; description: string }[]) => items.map((i) => sq(`${i.name.replaceAll(':', '\\:')}:${oneLine(i.description)}`)).join(' ') || "''";
  return `#compdef berth
# berth completion for zsh: source <(berth completion zsh), or save it as _berth on $fpath
_berth_subcommands() {
  case "$1" in
${cases(all, (n) => described(n.subcommands))}
  esac
}
_berth_flags() {
  case "$1" in
${cases(all, (n) => described(n.flags.map((f) => ({ name: f.flag, description: f.description }))))}
  esac
}
_berth_valued() {
  case "$1" in
${cases(all, (n) => n.flags.filter((f) => f.takesValue).map((f) => sq(f.flag)).join(' ') || "''")}
  esac
}
_berth() {
  local cmdpath="" i w
  local -a items names valued
  for ((i = 2; i < CURRENT; i++)); do
    w=\${words[i]}
    if [[ $w == -* ]]; then
      valued=(\${(f)"$(_berth_valued "$cmdpath")"})
      [[ $w != *=* ]] && (( \${valued[(Ie)$w]} )) && ((i++))
    else
      names=(\${\${(f)"$(_berth_subcommands "$cmdpath")"}%%:*})
      (( \${names[(Ie)$w]} )) && cmdpath=\${cmdpath:+$cmdpath }$w
    fi
  done
  if [[ \${words[CURRENT]} == -* ]]; then
    items=(\${(f)"$(_berth_flags "$cmdpath")"})
    _describe -t flags 'flag' items
  else
    items=(\${(f)"$(_berth_subcommands "$cmdpath")"})
    (( \${#items} )) && _describe -t commands 'command' items || _files
  fi
}
if [[ $funcstack[1] == _berth ]]; then _berth "$@"; else compdef _berth berth; fi
`;
}

function fish(all: Node[]): string {
  const lines = ['# berth completion for fish: berth completion fish | source', 'complete -c berth -f'];
  // fish's own helpers see the words typed so far; a path is "these subcommands seen, in order".
  lines.push(
    'function __berth_path --description "the berth command path typed so far"',
    '  set -l words (commandline -opc)',
    '  set -l cmdpath',
    '  for w in $words[2..-1]',
    '    string match -q -- "-*" $w; and continue',
    '    set -a cmdpath $w',
    '  end',
    '  string join " " -- $cmdpath',
    'end',
    'function __berth_path_is --description "whether the berth command path typed so far is $argv[1]"',
    '  set -l cmdpath (__berth_path)',
    '  test "$cmdpath" = "$argv[1]"',
    'end',
  );
  for (const n of all) {
    const when = `-n ${sq(`__berth_path_is ${sq(n.path)}`)}`;
    for (const s of n.subcommands) lines.push(`complete -c berth ${when} -a ${sq(s.name)} -d ${sq(oneLine(s.description))}`);
    for (const f of n.flags) {
      const name = f.flag.startsWith('--') ? `-l ${f.flag.slice(2)}` : `-s ${f.flag.slice(1)}`;
      lines.push(`complete -c berth ${when} ${name}${f.takesValue ? ' -r -F' : ''} -d ${sq(oneLine(f.description))}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

export function completionScript(program: Command, shell: 'bash' | 'zsh' | 'fish'): string {
  const all = nodes(program);
  return shell === 'bash' ? bash(all) : shell === 'zsh' ? zsh(all) : fish(all);
}
