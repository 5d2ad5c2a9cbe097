// What an audit entry says, in the words a reviewer reads: "file written: src/a.ts", not
// `command.run {"cmd":["sh","-c","mkdir -p \"$(dirname \"$1\")\" && cat > \"$1\"",…]}`.
// One place for every action, used by the web UI's audit page (and open to the CLI); the
// entry itself, details and all, stays as recorded and is shown on request.

/**
 * What a command Berth runs for a known purpose does, given to the environment service by
 * whoever runs it (the built-in agent's file tools): the command is recorded under this
 * action with the path, rather than as the shell script that does it. Callers of the API
 * cannot set it: it comes from the server's own code only.
 */
export interface CommandIntent {
  action: 'file.read' | 'file.written' | 'folder.listed';
  /** As the caller named it (the agent: relative to the repository when it is inside it). */
  path: string;
}

/** The parts of an audit entry its words come from. */
export interface AuditFacts {
  action: string;
  target: string | null;
  environmentId?: string | null;
  details: Record<string, unknown>;
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const num = (v: unknown): number | undefined => (typeof v === 'number' ? v : undefined);

/** A command as one short line: a shell script's first line, or the argv as typed. */
export function commandText(cmd: unknown, max = 120): string {
  if (!Array.isArray(cmd) || cmd.length === 0) return '(no command recorded)';
  const argv = cmd.map(String);
  const shell = /^(\/bin\/|\/usr\/bin\/)?(sh|bash|dash|zsh)$/.test(argv[0]!) && argv[1] === '-c' && argv[2] !== undefined;
  const text = shell ? argv[2]!.trim() : argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", "'\\''")}'`)).join(' ');
  const first = text.split('\n')[0]!;
  const cut = first.length > max ? `${first.slice(0, max - 1)}…` : first;
  return cut + (text.includes('\n') && cut === first ? ' …' : '');
}

function outcome(d: Record<string, unknown>): string {
  if (d.timedOut === true) return 'timed out';
  const code = num(d.exitCode);
  if (code === undefined) return str(d.error) ?? 'outcome not recorded';
  return `exit ${code}`;
}

const named = (noun: string, verb: string, t: string | null) => `${noun} ${verb}${t ? `: ${t}` : ''}`;

/** What happened, in one line. Unknown actions read as their name and target. */
export function auditWords(e: AuditFacts): string {
  const d = e.details ?? {};
  const t = e.target;
  const path = str(d.path);
  switch (e.action) {
    case 'command.start': {
      const intent = d.intent as Partial<CommandIntent> | undefined;
      if (intent?.action === 'file.written') return `writing file: ${intent.path}`;
      if (intent?.action === 'file.read') return `reading file: ${intent.path}`;
      if (intent?.action === 'folder.listed') return `listing folder: ${intent.path}`;
      return `command started: ${commandText(d.cmd)}`;
    }
    case 'command.run':
      return `command ran: ${commandText(d.cmd)} (${outcome(d)})`;
    case 'file.written':
      return d.exitCode === 0 ? `file written: ${path}` : `file not written: ${path} (${outcome(d)})`;
    case 'file.read':
      return d.exitCode === 0 ? `file read: ${path}` : `file not read: ${path} (${outcome(d)})`;
    case 'folder.listed':
      return d.exitCode === 0 ? `folder listed: ${path}` : `folder not listed: ${path} (${outcome(d)})`;
    case 'file.copy_refused':
      return `copy out refused: ${path ?? '?'}${d.reason === 'secret' ? ` (holds a secret${Array.isArray(d.secrets) && d.secrets.length ? `: ${d.secrets.join(', ')}` : ''})` : str(d.reason) ? ` (${d.reason})` : ''}`;
    case 'secret.read':
      return `secrets given to a command: ${Array.isArray(d.names) ? d.names.join(', ') : '?'}`;
    case 'network.denied':
      return `network request denied: ${str(d.method) ? `${d.method} ` : ''}${t ?? '?'}${num(d.repeated) ? ` (and ${d.repeated} more like it)` : ''}`;
    case 'task.files_changed':
      return `task changed ${num(d.count) ?? '?'} file${d.count === 1 ? '' : 's'}${str(d.branch) ? ` on ${d.branch}` : ''}`;
    case 'repository.refused':
      return `repository refused: ${t ?? '?'}${str(d.reason) ? ` (${d.reason})` : ''}`;
    case 'auth.sign_in':
      return `signed in${str(d.email) ? `: ${d.email}` : ''}${str(d.via) ? ` with ${d.via === 'oidc' ? 'the identity provider' : d.via}` : ''}`;
    case 'audit.reseal':
      return 'audit chain resealed';
    case 'environment.claim':
      return `environment taken from a warm pool${str(d.taskId) ? ` by task ${d.taskId}` : ''}${t ? `: ${t}` : ''}`;
    case 'task.trigger':
      return `task started by ${str(d.trigger) ?? 'a trigger'}${str(d.triggeredBy) ? ` (${d.triggeredBy})` : ''}: ${t ?? '?'}${str(d.project) ? ` on ${d.project}` : ''}`;
    case 'trigger.refused':
      return `trigger refused${str(d.reason) ? `: ${d.reason}` : ''}`;
  }
  // noun.verb: "environment.create" reads "environment created: env_…".
  const [noun, verb] = e.action.split('.', 2) as [string, string | undefined];
  const PAST: Record<string, string> = { create: 'created', delete: 'deleted', start: 'started', stop: 'stopped', set: 'set', clear: 'cleared', remove: 'removed', revoke: 'revoked', cancel: 'cancelled', retry: 'retried', approve: 'approved', import: 'imported', export: 'exported', update: 'updated', share: 'shared', continue: 'continued', pause: 'paused', resume: 'resumed', rotate: 'rotated' };
  if (verb && PAST[verb]) return named(noun.replaceAll('_', ' '), PAST[verb]!, t);
  return `${e.action.replaceAll('_', ' ')}${t ? `: ${t}` : ''}`;
}
