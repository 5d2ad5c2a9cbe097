import { taskModelText } from './model.ts';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import type { CreateTaskBody, Task } from '../../shared/api-tasks.ts';
import { FINAL_TASK_STATES, type TaskEvent, type TaskEventData } from '../../shared/tasks.ts';
import type { ApiClient } from '../client.ts';
import { age, CliError, emit, paint, paintDiff, printJson, printTable, Spinner, stateWord, usageError } from '../output.ts';
import { labelsText, runnerLabel } from '../labels.ts';

type Client = () => ApiClient;

const positiveInt = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('a whole number');
  return n;
};
const positive = (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('a positive number');
  return n;
};

/** One line per event for the terminal; null for events that only move the spinner. */
export function describeEvent(d: TaskEventData): string | null {
  const one = (s: string, max = 160) => {
    const line = s.replace(/\s+/g, ' ').trim();
    return line.length > max ? `${line.slice(0, max - 1)}…` : line;
  };
  switch (d.type) {
    case 'state':
      return `state: ${d.state}${d.reason ? ` (${d.reason})` : ''}`;
    case 'step':
      return `▸ ${d.message}`;
    case 'log':
      return `${d.level === 'info' ? ' ' : d.level === 'warn' ? '!' : '✖'} ${d.message}`;
    case 'model':
      return `  model ${d.model}: ${d.usage.inputTokens}+${d.usage.outputTokens} tokens${d.text ? ` — ${one(d.text, 100)}` : ''}${d.toolCalls.length ? ` → ${d.toolCalls.map((t) => t.name).join(', ')}` : ''}`;
    case 'tool': {
      const args = d.args && typeof d.args === 'object' ? (d.args as Record<string, unknown>) : {};
      const what = typeof args.command === 'string' ? args.command : typeof args.path === 'string' ? args.path : typeof args.pattern === 'string' ? args.pattern : '';
      return `  ${d.error ? '✖' : '·'} ${d.tool}${what ? ` ${one(what, 80)}` : ''}${d.exitCode !== null ? ` → exit ${d.exitCode}` : ''}`;
    }
    case 'command':
      return `  $ ${one(d.cmd, 100)} → exit ${d.exitCode}${d.timedOut ? ' (timed out)' : ''} in ${(d.durationMs / 1000).toFixed(1)}s`;
    case 'check':
      return `  checks ${d.passed ? 'passed' : `failed (${d.summary})`} on attempt ${d.attempt}`;
    case 'result':
      return `summary: ${d.summary}`;
    case 'network':
      return `! network: ${d.allowed ? 'allowed' : 'denied'} ${d.method ?? 'CONNECT'} ${d.host}:${d.port}${d.path ?? ''} (${d.rule})${d.repeated ? `, ${d.repeated} more times within a minute` : ''}`;
    case 'denials':
      return `‼ ${d.message}`;
  }
}

/** An event's line, the denial hints in bold yellow on a terminal: they are what the user has to act on. */
function paintLine(line: string, d: TaskEventData, stream: NodeJS.WriteStream): string {
  return d.type === 'denials' ? paint(['bold', 'yellow'], line, stream) : line;
}

/** How much of a command's or tool's output `task logs` shows unless --full. */
const OUTPUT_LINES = 20;

/**
 * The output a command or tool event carries, indented under its line: its last
 * OUTPUT_LINES lines (saying how many were left out), or all of it with `full`.
 */
export function outputOf(d: TaskEventData, full: boolean): string | null {
  const text = d.type === 'command' ? d.output : d.type === 'tool' && d.tool !== 'finish' ? d.output : null;
  if (!text?.trim()) return null;
  let lines = text.replace(/\s+$/, '').split('\n');
  let note = '';
  if (!full && lines.length > OUTPUT_LINES) {
    note = `           … ${lines.length - OUTPUT_LINES} earlier line(s); --full shows them\n`;
    lines = lines.slice(-OUTPUT_LINES);
  }
  // Long lines cut too (minified files, progress bars), unless --full.
  const cut = (l: string) => (full || l.length <= 400 ? l : `${l.slice(0, 399)}…`);
  return note + lines.map((l) => `           │ ${cut(l)}\n`).join('');
}

/**
 * Follows a task's events as server-sent events, reconnecting with the last seq seen so
 * nothing is lost or shown twice. Resolves when the task has ended.
 */
export async function followTask(client: ApiClient, id: string, onEvent: (e: TaskEvent) => void, after = 0): Promise<void> {
  let last = after;
  for (let attempt = 0; ; attempt++) {
    let ended = false;
    try {
      const res = await client.fetch(`${client.orgPath(`tasks/${id}/events`)}?after=${last}`, { headers: { accept: 'text/event-stream' } });
      // Loaded here, not at the top: only following a task needs it.
      const { createParser } = await import('eventsource-parser');
      const parser = createParser({
        onEvent: (m) => {
          if (m.event === 'end') ended = true;
          if (m.event !== 'task') return;
          const e = JSON.parse(m.data) as TaskEvent;
          if (e.seq <= last) return;
          last = e.seq;
          attempt = 0;
          onEvent(e);
        },
      });
      const decoder = new TextDecoder();
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) parser.feed(decoder.decode(chunk, { stream: true }));
    } catch (err) {
      if (err instanceof CliError && attempt > 5) throw err;
    }
    if (ended) return;
    // The connection dropped: come back for what was missed.
    await new Promise((r) => setTimeout(r, Math.min(5_000, 250 * 2 ** attempt)));
  }
}

function oneOffText(o: NonNullable<Task['oneOff']>): string {
  const forge = o.forge && `forge ${[o.forge.kind, o.forge.apiUrl].filter(Boolean).join(' ') || 'from the URL'}${o.forge.tokenSecret ? `, token from secret ${o.forge.tokenSecret}` : ''}`;
  return [o.image && `image ${o.image}`, o.allowDomains?.length && `also reaches ${o.allowDomains.join(', ')}`, forge].filter(Boolean).join('; ');
}

function printTask(t: Task): void {
  const rows: [string, string][] = [
    ['id', t.id],
    ['goal', t.goal.split('\n')[0]!],
    ['state', `${stateWord(t.state)}${t.stateReason ? ` (${t.stateReason})` : ''}`],
    ['step', t.step ?? '-'],
    ['repository', `${t.repo}${t.baseBranch ? ` @ ${t.baseBranch}` : ''}${t.project ? ` (project ${t.project})` : ''}`],
    ['agent', taskModelText(t)],
    ['environment', t.environmentId ?? '-'],
    // A one-off task's transient project (older servers leave it out).
    ...(t.oneOff ? [['one-off', oneOffText(t.oneOff)] as [string, string]] : []),
    // Where it runs, and whether it had to start over elsewhere (older servers leave these out).
    ...(t.runnerId !== undefined ? [['runner', `${t.runnerId ?? '-'}${Object.keys(t.runnerLabels ?? {}).length ? ` (asks for ${labelsText(t.runnerLabels)})` : ''}${t.attempts ? `, started over ${t.attempts} time(s) after a runner went offline` : ''}`] as [string, string]] : []),
    ['branch', t.branch ?? '-'],
    ['change', t.changeRequest ? `${t.changeRequest.draft ? 'draft ' : ''}${t.changeRequest.url ?? `kept in Berth${t.changeRequest.mergedSha ? ` (merged ${t.changeRequest.mergedSha.slice(0, 12)})` : ': berth task approve ' + t.id}`}` : '-'],
    ['checks', t.checksPassed === null ? '-' : t.checksPassed ? 'passed' : 'failing'],
    ['usage', `${t.usage.inputTokens + t.usage.outputTokens} tokens, $${t.usage.costUsd.toFixed(4)}`],
    ['created', `${age(t.createdAt)} ago by ${t.createdBy}`],
  ];
  for (const [k, v] of rows) process.stdout.write(`${k.padEnd(12)} ${v}\n`);
  if (t.summary) process.stdout.write(`\n${t.summary}\n`);
}

/** Prints events live under a spinner that names the current step; Ctrl-C detaches. */
async function watch(client: ApiClient, id: string): Promise<Task> {
  // Without a terminal the step lines say it all; a spinner would repeat each of them.
  const spinner = process.stderr.isTTY ? new Spinner(`${id}: queued`) : { done() {}, update(_: string) {} };
  let step = 'queued';
  const onSigint = () => {
    spinner.done();
    process.stderr.write(`detached: task ${id} keeps running. \`berth task logs ${id} -f\` follows it, \`berth task cancel ${id}\` stops it.\n`);
    process.exit(130);
  };
  process.once('SIGINT', onSigint);
  try {
    await followTask(client, id, (e) => {
      const line = describeEvent(e.data);
      if (e.data.type === 'step') step = e.data.message;
      if (e.data.type === 'state' && !FINAL_TASK_STATES.has(e.data.state)) step = e.data.state === 'queued' ? 'queued' : step;
      if (line && e.data.type !== 'state') {
        spinner.done();
        process.stderr.write(`${paintLine(line, e.data, process.stderr)}\n`);
      }
      spinner.update(`${id}: ${step}`);
    });
  } finally {
    process.off('SIGINT', onSigint);
    spinner.done();
  }
  return client.request<Task>('GET', client.orgPath(`tasks/${id}`));
}

function reportEnd(t: Task): void {
  const mark = t.state === 'succeeded' ? '✔' : '✖';
  const where = t.changeRequest?.url ?? (t.changeRequest ? `branch ${t.branch} (kept in Berth: \`berth task approve ${t.id}\` merges it)` : null);
  process.stderr.write(`${paint(t.state === 'succeeded' ? 'green' : 'red', mark, process.stderr)} ${t.id} ${stateWord(t.state, process.stderr)}${t.stateReason ? `: ${t.stateReason}` : ''}\n`);
  if (where) process.stdout.write(`${t.changeRequest?.draft ? 'draft ' : ''}${where}\n`);
  if (t.state !== 'succeeded') process.exitCode = 1;
}

/** --forge, --forge-url and --token-secret: a one-off repository's forge (a campaign's too), or undefined. */
export function forgeFlags(o: { forge?: string; forgeUrl?: string; tokenSecret?: string }): CreateTaskBody['forge'] {
  if (o.forge === undefined && o.forgeUrl === undefined && o.tokenSecret === undefined) return undefined;
  if (o.forge !== undefined && !['github', 'gitlab', 'git'].includes(o.forge)) throw usageError(`--forge is github, gitlab or git, not '${o.forge}'`);
  return { ...(o.forge && { kind: o.forge as 'github' | 'gitlab' | 'git' }), ...(o.forgeUrl && { apiUrl: o.forgeUrl }), ...(o.tokenSecret && { tokenSecret: o.tokenSecret }) };
}

export function taskCommands(program: Command, client: Client): void {
  program
    .command('run <goal>')
    .description('hand a goal and a repository to an agent and follow it to a pull request (Ctrl-C detaches)')
    .option('--project <project>', 'the project whose repository to work on')
    .option('--repo <url|path>', 'a repository URL or local path, for a one-off task')
    .option('--base <branch>', 'branch to start from and target (default: the project\'s, else the remote\'s default)')
    .option('--agent <agent>', 'builtin (Berth\'s tool-calling loop) or command')
    .option('--command <cmd>', 'with --agent command: what to run inside the environment')
    .option('--model <model>', 'model for the built-in agent (default $BERTH_MODEL on the server)')
    .option('--check <cmd>', 'the command that says whether the work is done (overrides the repository\'s)')
    .option('--setup <cmd>', 'a setup command run after the repository\'s and project\'s setup (repeat for several, run in order)', (v: string, all: string[] = []) => [...all, v])
    .option('--runner-label <key=value>', "a label the runner that runs it must carry (gpu=true), repeatable; added to its project's", runnerLabel)
    .option('--image <image>', "with --repo: the environment's image, over the repository's own")
    .option('--allow-domain <domain>', "with --repo (admins): a domain the environment may reach besides the org's policy (repeatable)", (v: string, all: string[] = []) => [...all, v])
    .option('--forge <kind>', 'with --repo (admins): github, gitlab or git (default: from the URL)')
    .option('--forge-url <url>', 'with --repo (admins): API URL of GitHub Enterprise or a self-hosted GitLab')
    .option('--token-secret <name>', 'with --repo (admins): the org secret holding the forge token to clone, push and open the pull request with')
    .option('--max-steps <n>', 'model round trips', positiveInt)
    .option('--max-tokens <n>', 'input + output tokens', positiveInt)
    .option('--max-cost <usd>', 'dollars', positive)
    .option('--timeout <duration>', 'wall time for the whole task, e.g. 30m')
    .option('--max-check-retries <n>', 'times failing checks send the agent back', positiveInt)
    .option('-d, --detach', 'print the task id and return at once')
    .option('--json', 'print the task as JSON when it ends (or at once with --detach)')
    .action(async (goal: string, o) => {
      if (Boolean(o.project) === Boolean(o.repo)) throw usageError('say where to work: --project NAME or --repo URL|PATH');
      if (o.agent && o.agent !== 'builtin' && o.agent !== 'command') throw usageError('--agent is builtin or command');
      if (o.command && !o.agent) o.agent = 'command';
      const forge = forgeFlags(o);
      if (o.project && (o.image !== undefined || o.allowDomain || forge)) throw usageError("--image, --allow-domain, --forge, --forge-url and --token-secret are a one-off task's (--repo): a project's tasks take them from its settings (berth project update)");
      let repo: string | undefined = o.repo;
      // A local path is sent absolute: the server resolves nothing against the caller's directory.
      if (repo && !/^[a-z][a-z0-9+.-]*:\/\//i.test(repo)) {
        repo = resolve(repo);
        if (!existsSync(repo)) throw usageError(`no repository at ${repo}`);
      }
      const budget = {
        ...(o.maxSteps !== undefined && { maxSteps: o.maxSteps }),
        ...(o.maxTokens !== undefined && { maxTokens: o.maxTokens }),
        ...(o.maxCost !== undefined && { maxCostUsd: o.maxCost }),
        ...(o.timeout !== undefined && { timeout: o.timeout }),
        ...(o.maxCheckRetries !== undefined && { maxCheckRetries: o.maxCheckRetries }),
      };
      const body: CreateTaskBody = {
        goal,
        project: o.project,
        repo,
        baseBranch: o.base,
        agent: o.agent,
        command: o.command,
        model: o.model,
        check: o.check,
        setup: o.setup,
        runnerLabels: o.runnerLabel,
        image: o.image,
        allowDomains: o.allowDomain,
        forge,
        budget: Object.keys(budget).length ? budget : undefined,
        trigger: 'cli',
      };
      const task = await client().request<Task>('POST', client().orgPath('tasks'), body);
      if (o.detach) {
        if (o.json) printJson(task);
        else process.stdout.write(`${task.id}\n`);
        return;
      }
      process.stderr.write(`task ${task.id}: ${task.repo}\n`);
      const ended = await watch(client(), task.id);
      if (o.json) printJson(ended);
      reportEnd(ended);
    });

  const task = program.command('task').description('agent tasks: list, follow, cancel, approve');
  task
    .command('list')
    .alias('ls')
    .description('tasks, newest first; a page at a time (the next page: --cursor, printed at the end)')
    .option('--state <state>', 'only tasks in this state')
    .option('--project <project>', 'only this project\'s tasks')
    .option('--trigger <trigger>', 'only tasks started from here: cli, web, api, github, gitlab, slack, schedule or webhook')
    .option('--mine', 'only the tasks you started')
    .option('--limit <n>', 'how many', positiveInt, 50)
    .option('--cursor <cursor>', 'the page after the one that printed this cursor')
    .option('--json', 'print JSON: { items, nextCursor }')
    .action(async (o) => {
      const q = new URLSearchParams({ limit: String(o.limit) });
      if (o.state) q.set('state', o.state);
      if (o.project) q.set('project', o.project);
      if (o.trigger) q.set('trigger', o.trigger);
      if (o.mine) q.set('mine', '1');
      if (o.cursor) q.set('cursor', o.cursor);
      const page = await client().request<{ items: Task[]; nextCursor: string | null; counts: Record<string, number> }>('GET', `${client().orgPath('tasks')}?${q}`);
      if (o.json) return printJson({ items: page.items, nextCursor: page.nextCursor });
      printTable(
        ['ID', 'STATE', 'STEP', 'PROJECT/REPO', 'GOAL', 'CHANGE', 'AGE'],
        page.items.map((t) => [t.id, stateWord(t.state), t.step ?? '-', t.project ?? t.repo, t.goal.split('\n')[0]!.slice(0, 50), t.changeRequest?.url ?? (t.changeRequest ? 'in berth' : '-'), age(t.createdAt)]),
      );
      process.stderr.write(`${page.counts.running ?? 0} running, ${page.counts.provisioning ?? 0} provisioning, ${page.counts.queued ?? 0} queued\n`);
      if (page.nextCursor) {
        // The same filters again, with the cursor: a command to paste for the next page.
        const again = process.argv.slice(2).filter((a, i, all) => a !== '--cursor' && all[i - 1] !== '--cursor' && !a.startsWith('--cursor='));
        process.stderr.write(`more: berth ${again.join(' ')} --cursor ${page.nextCursor}\n`);
      }
    });
  task
    .command('show <id>')
    .description('a task: its state, step, repository, agent, change, checks and cost')
    .option('--json', 'print JSON')
    .action(async (id: string, o) => {
      const t = await client().request<Task>('GET', client().orgPath(`tasks/${id}`));
      if (o.json) printJson(t);
      else printTask(t);
    });
  task
    .command('logs <id>')
    .description('the task\'s transcript: steps, model calls, tool calls, commands and their output')
    .option('-f, --follow', 'keep printing new events until the task ends')
    .option('--full', `each command's and tool's whole output (default: its last ${OUTPUT_LINES} lines)`)
    .option('--json', 'one JSON event per line')
    .action(async (id: string, o) => {
      const print = (e: TaskEvent) => {
        if (o.json) return void process.stdout.write(`${JSON.stringify(e)}\n`);
        const line = describeEvent(e.data);
        if (line) process.stdout.write(`${e.at.slice(11, 19)} ${paintLine(line, e.data, process.stdout)}\n`);
        const output = outputOf(e.data, Boolean(o.full));
        if (output) process.stdout.write(output);
      };
      if (o.follow) return followTask(client(), id, print);
      const { items } = await client().request<{ items: TaskEvent[] }>('GET', client().orgPath(`tasks/${id}/events`));
      items.forEach(print);
    });
  task
    .command('diff <id>')
    .description('the change the task made, as a unified diff (coloured on a terminal)')
    .option('--json', 'print JSON: { diff } (null when it has none yet)')
    .action(async (id: string, o) => {
      const { diff } = await client().request<{ diff: string | null }>('GET', client().orgPath(`tasks/${id}/diff`));
      if (o.json) return printJson({ diff });
      if (diff === null) throw new CliError(`task ${id} has no change (yet)`);
      process.stdout.write(paintDiff(diff));
    });
  task
    .command('cancel <id>')
    .description('stop a queued or running task; its environment stays for a look')
    .option('--json', 'print the task as JSON')
    .action(async (id: string, o) => {
      const t = await client().request<Task>('POST', client().orgPath(`tasks/${id}/cancel`));
      emit(o, t, () => `${t.id} ${stateWord(t.state)}`);
    });
  task
    .command('retry <id>')
    .description('run the task again as a new task')
    .option('-d, --detach', 'return at once')
    .option('--json', 'print the new task as JSON when it ends (or at once with --detach)')
    .action(async (id: string, o) => {
      const t = await client().request<Task>('POST', client().orgPath(`tasks/${id}/retry`));
      if (o.detach) return emit(o, t, t.id);
      const ended = await watch(client(), t.id);
      if (o.json) printJson(ended);
      reportEnd(ended);
    });
  task
    .command('approve <id>')
    .description('merge a plain-git task\'s branch into its base branch: only when its checks passed, unless --force')
    .option('--force', 'merge although its checks failed or did not run (on record in the audit log as task.approve_forced)')
    .option('--json', 'print the task as JSON')
    .action(async (id: string, o) => {
      const t = await client().request<Task>('POST', client().orgPath(`tasks/${id}/approve`), o.force ? { force: true } : undefined);
      if (o.json) return printJson(t);
      process.stdout.write(`merged ${t.branch} into ${t.baseBranch} (${t.changeRequest?.mergedSha?.slice(0, 12)})${o.force && t.checksPassed !== true ? ', forced' : ''}\n`);
    });
  task
    .command('continue <id> <instruction>')
    .description('a follow-up: a new task with this task\'s goal and your instruction, from its branch, with its agent, check and setup')
    .option('-d, --detach', 'print the new task\'s id and return at once')
    .option('--json', 'print the new task as JSON when it ends (or at once with --detach)')
    .action(async (id: string, instruction: string, o) => {
      if (!instruction.trim()) throw new CliError(`say what the agent should do next: berth task continue ${id} "also update the README"`, 2);
      const t = await client().request<Task>('POST', client().orgPath(`tasks/${id}/continue`), { instruction, trigger: 'cli' });
      if (o.detach) {
        if (o.json) printJson(t);
        else process.stdout.write(`${t.id}\n`);
        return;
      }
      process.stderr.write(`task ${t.id}: follow-up to ${id}${t.baseBranch ? ` from ${t.baseBranch}` : ''}\n`);
      const ended = await watch(client(), t.id);
      if (o.json) printJson(ended);
      reportEnd(ended);
    });
}
