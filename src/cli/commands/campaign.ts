// `berth campaign …`: one change across many repositories (issue #17). Make one from a list of
// repositories, follow it, steer it (pause, resume, cancel, retry the failed, run it again),
// export what became of each repository, read the diffs in bulk and approve the changes.
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { stripVTControlCharacters } from 'node:util';
import { InvalidArgumentError, Option, type Command } from 'commander';
import type { ApproveResult, Campaign, CampaignDetail, CampaignTarget, CreateCampaignBody, CreatedCampaign, TargetCounts } from '../../shared/api-campaigns.ts';
import type { ApiClient } from '../client.ts';
import { age, CliError, EXIT, emit, paint, paintDiff, printJson, printTable, stateWord, usageError } from '../output.ts';
import { forgeFlags } from './task.ts';

type Client = () => ApiClient;

/** The most lines the API takes in `repos` (MAX_CAMPAIGN_REPOS and room for comments, in api-campaigns.ts). */
const MAX_LINES = 11_000;
const FOLLOW_MS = 1000;
const PAGE = 1000;

const campaignPath = (c: ApiClient, rest = '') => c.orgPath(`campaigns${rest}`);
const one = (c: ApiClient, id: string, rest = '') => campaignPath(c, `/${encodeURIComponent(id)}${rest}`);

const wholeNumber = (min: number) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`a whole number from ${min}`);
  return n;
};

/** Targets finished, whatever the outcome. */
const finished = (c: TargetCounts) => c.succeeded + c.failed + c.cancelled;
const working = (c: TargetCounts) => c.starting + c.running;
const isOver = (c: Campaign) => c.state === 'done' || c.state === 'cancelled';

/** `1h05m`, `3m20s`, `45s`. */
export function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** `3 succeeded, 1 failed, 2 running, 4 pending`: the states it has, in their order. */
export function countsText(c: TargetCounts): string {
  const parts = (['succeeded', 'failed', 'cancelled', 'running', 'starting', 'pending'] as const).filter((s) => c[s]).map((s) => `${c[s]} ${s}`);
  return parts.join(', ') || 'none';
}

/** A repository's list: its lines, raw (the server skips blanks and comments and reports what names no repository). */
function repoLines(o: { repos?: string; repo?: string[] }): Promise<string[]> | string[] {
  if (o.repos !== undefined && o.repo?.length) throw usageError('give the repositories one way: --repos FILE (one a line, - for standard input) or --repo URL (repeatable), not both');
  if (o.repo?.length) {
    // A local path is sent absolute: the server resolves nothing against the caller's directory
    // (and reports one it cannot use as it reports a bad line of a list: a warning).
    return o.repo.map((r) => (/^[a-z][a-z0-9+.-]*:\/\//i.test(r) || /^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:/.test(r) ? r : resolve(r)));
  }
  if (o.repos === undefined) throw usageError('say which repositories: --repos FILE (one a line, - for standard input), --repo URL (repeatable) or --org-query "GitHub search"');
  const split = (text: string) => {
    const lines = text.split(/\r?\n/);
    if (lines.at(-1) === '') lines.pop();
    if (lines.length > MAX_LINES) throw usageError(`--repos ${o.repos}: ${lines.length.toLocaleString('en')} lines; a campaign takes at most 10,000 repositories (${MAX_LINES.toLocaleString('en')} lines with comments): split the list into several campaigns`);
    if (!lines.some((l) => l.trim() && !l.trim().startsWith('#'))) throw usageError(`--repos ${o.repos}: the list names no repository (one URL or absolute path a line)`);
    return lines;
  };
  if (o.repos === '-') {
    if (process.stdin.isTTY) throw usageError('--repos - reads the list from standard input: pipe it in (berth campaign create … --repos - < repos.txt)');
    return (async () => {
      const chunks: Buffer[] = [];
      for await (const c of process.stdin) chunks.push(c as Buffer);
      return split(Buffer.concat(chunks).toString('utf8'));
    })();
  }
  let text: string;
  try {
    text = readFileSync(o.repos, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw usageError(code === 'ENOENT' ? `--repos ${o.repos}: no such file; give a file of repository URLs, one a line (or - for standard input)` : `--repos ${o.repos}: cannot read it (${code})`);
  }
  return split(text);
}

function printCreated(made: CreatedCampaign): void {
  const c = made.campaign;
  process.stdout.write(`${c.id}\n${c.name}: ${c.total} repositor${c.total === 1 ? 'y' : 'ies'} taken, branch ${c.branch}, at most ${c.settings.concurrency} at once\n`);
  if (made.invalid.length) {
    const err = process.stderr;
    err.write(`${paint('yellow', 'warning:', err)} ${made.invalid.length} line${made.invalid.length === 1 ? '' : 's'} left out:\n`);
    for (const l of made.invalid) err.write(`  line ${l.line}: ${l.text} — ${l.reason}\n`);
  }
  process.stderr.write(`next:\n  berth campaign show ${c.name} -f    follow it\n  berth campaign pause ${c.name}      start no more of its tasks\n  berth campaign cancel ${c.name}     stop it\n`);
}

/** The lines `show` prints (and `show -f` redraws). */
export function showLines(d: CampaignDetail, out: NodeJS.WriteStream = process.stdout, max = { changes: Infinity, failures: Infinity }): string[] {
  const c = d.counts;
  const pace =
    d.throughputPerMin === null ? 'nothing finished yet'
    : `${d.throughputPerMin} repos/min${d.etaSeconds !== null ? `, about ${duration(d.etaSeconds)} left` : ''}`;
  const waiting: [string, string][] = d.waitingFor ? [['waiting', d.waitingFor]] : [];
  const s = d.settings;
  const oneOff = [s.image && `image ${s.image}`, s.allowDomains?.length && `also reach ${s.allowDomains.join(', ')}`, s.forge && `forge ${[s.forge.kind, s.forge.apiUrl].filter(Boolean).join(' ') || 'from the URL'}${s.forge.tokenSecret ? `, token from secret ${s.forge.tokenSecret}` : ''}`].filter(Boolean);
  // What repositories without a project run with (their transient project).
  const noProject: [string, string][] = oneOff.length ? [['no proj.', oneOff.join('; ')]] : [];
  const rows: [string, string][] = [
    ['id', d.id],
    ['name', d.name],
    ['goal', d.goal.split('\n')[0]!],
    ['state', `${stateWord(d.state, out)}${d.run > 1 ? ` (run ${d.run})` : ''}${d.finishedAt ? `, ended ${age(d.finishedAt)} ago` : ''}`],
    ['branch', d.branch],
    ['repos', `${finished(c)}/${d.total} done: ${countsText(c)}`],
    ['pace', pace],
    ...waiting,
    ['peak', `${d.peakRunning} running at once (concurrency ${d.settings.concurrency})`],
    ...noProject,
    ['created', `${age(d.createdAt)} ago by ${d.createdBy}`],
  ];
  const lines = rows.map(([k, v]) => `${k.padEnd(8)} ${v}`);
  if (d.changeRequests.length) {
    lines.push('', `CHANGES (${d.changeRequests.length})`);
    const shown = d.changeRequests.slice(0, max.changes);
    lines.push(...table(['REPO', 'STATE', 'CHECKS', 'REVIEW', 'URL'], shown.map((t) => changeRow(t, out))));
    if (shown.length < d.changeRequests.length) lines.push(`… ${d.changeRequests.length - shown.length} more: berth campaign targets ${d.name} --state succeeded`);
  }
  if (d.failures.length) {
    lines.push('', `FAILURES (${c.failed})`);
    for (const f of d.failures.slice(0, max.failures)) {
      lines.push(`${String(f.count).padStart(5)} × ${f.failure}: ${f.reason}`);
      lines.push(`        ${f.repos.join(', ')}${f.count > f.repos.length ? `, … ${f.count - f.repos.length} more (berth campaign targets ${d.name} --state failed)` : ''}`);
    }
    if (d.failures.length > max.failures) lines.push(`  … ${d.failures.length - max.failures} more reasons: berth campaign show ${d.name}`);
  }
  return lines;
}

function changeRow(t: CampaignTarget, out: NodeJS.WriteStream): string[] {
  const cr = t.changeRequest!;
  const where = cr.url ?? (cr.kind === 'berth' ? `kept in Berth: berth task approve ${t.taskId}` : '');
  return [t.repo, cr.state ? stateWord(cr.state, out) : cr.draft ? 'draft' : '-', cr.checks ?? '-', cr.review ?? '-', where];
}

/** printTable's layout, as lines (show -f redraws them as a block). */
function table(headers: string[], rows: string[][]): string[] {
  const shown = (s: string) => stripVTControlCharacters(s).length;
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => shown(r[i] ?? ''))));
  const line = (cells: string[]) => cells.map((x, i) => (i === cells.length - 1 ? x : x + ' '.repeat(Math.max(0, widths[i]! - shown(x))))).join('  ');
  return [line(headers), ...rows.map(line)];
}

/**
 * `show -f`: the campaign redrawn in place about every second on a terminal until it is done or
 * cancelled; through a pipe, a line for each change (its counts, a new change request, a new
 * kind of failure) instead, and with --json a JSON line each time it changes.
 */
async function follow(c: ApiClient, id: string, o: { json?: boolean }): Promise<void> {
  const tty = Boolean(process.stdout.isTTY) && !o.json;
  let drawn = 0;
  let last = '';
  const seenChanges = new Set<string>();
  const seenFailures = new Map<string, number>();
  let first = true;
  const onSigint = () => {
    process.stderr.write(`\nstopped following: campaign ${id} goes on. \`berth campaign show ${id}\` shows it, \`berth campaign pause ${id}\` holds it.\n`);
    process.exit(130);
  };
  process.once('SIGINT', onSigint);
  try {
    for (;;) {
      const d = await c.request<CampaignDetail>('GET', one(c, id));
      if (o.json) {
        const now = JSON.stringify(d);
        if (now !== last) process.stdout.write(`${now}\n`);
        last = now;
      } else if (tty) {
        // What fits the terminal: the cursor cannot go back above its top to redraw.
        const rows = process.stdout.rows || 24;
        const failures = 3;
        const lines = showLines(d, process.stdout, { changes: Math.max(3, rows - 16 - 2 * Math.min(d.failures.length, failures)), failures });
        // Up over what was drawn (a long line takes several rows), then clear to the end.
        const cols = process.stdout.columns || 80;
        const up = drawn ? `\x1b[${drawn}A\r\x1b[J` : '';
        process.stdout.write(`${up}${lines.join('\n')}\n`);
        drawn = lines.reduce((n, l) => n + Math.max(1, Math.ceil(stripVTControlCharacters(l).length / cols)), 0);
      } else {
        if (first) process.stdout.write(`${d.name} (${d.id}): ${d.total} repositories, branch ${d.branch}\n`);
        first = false;
        const at = new Date().toISOString().slice(11, 19);
        const summary = `${d.state} ${finished(d.counts)}/${d.total} done: ${countsText(d.counts)}`;
        if (summary !== last) process.stdout.write(`${at} ${summary}${d.throughputPerMin !== null ? `; ${d.throughputPerMin} repos/min` : ''}${d.etaSeconds !== null ? `, about ${duration(d.etaSeconds)} left` : ''}\n`);
        last = summary;
        for (const t of d.changeRequests) {
          const key = `${t.repo}\u0000${t.changeRequest?.url ?? ''}\u0000${t.changeRequest?.state ?? ''}\u0000${t.changeRequest?.checks ?? ''}\u0000${t.changeRequest?.review ?? ''}`;
          if (seenChanges.has(key)) continue;
          seenChanges.add(key);
          process.stdout.write(`${at}   change ${changeRow(t, process.stdout).join(' ')}\n`);
        }
        for (const f of d.failures) {
          const key = `${f.failure}\u0000${f.reason}`;
          if (seenFailures.get(key) === f.count) continue;
          seenFailures.set(key, f.count);
          process.stdout.write(`${at}   failed ${f.count} × ${f.failure}: ${f.reason} (${f.repos.join(', ')}${f.count > f.repos.length ? ', …' : ''})\n`);
        }
      }
      if (isOver(d)) {
        if (d.counts.failed) process.exitCode = EXIT.error;
        return;
      }
      await new Promise((r) => setTimeout(r, FOLLOW_MS));
    }
  } finally {
    process.off('SIGINT', onSigint);
  }
}

/** Every target, page after page (`after` the last one's seq, as `next` says). */
async function allTargets(c: ApiClient, id: string, state?: string): Promise<CampaignTarget[]> {
  const all: CampaignTarget[] = [];
  let after: number | null = null;
  do {
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (state) q.set('state', state);
    if (after !== null) q.set('after', String(after));
    const page: { items: CampaignTarget[]; next: number | null } = await c.request('GET', `${one(c, id, '/targets')}?${q}`);
    all.push(...page.items);
    after = page.next;
  } while (after !== null);
  return all;
}

/** `--repo R`: the repository as listed, or its path's end (`acme/shop`, `shop.git`). */
const repoMatches = (repo: string, r: string) => {
  const bare = (s: string) => s.replace(/\/+$/, '').replace(/\.git$/, '');
  return repo === r || bare(repo) === bare(r) || bare(repo).endsWith(`/${bare(r).replace(/^\/+/, '')}`);
};

export function campaignCommands(program: Command, client: Client): void {
  const campaign = program.command('campaign').description('one change across many repositories: a task each, a pull request each');

  campaign
    .command('create')
    .description('start a campaign over a list of repositories; prints its id and the lines left out')
    .requiredOption('--name <name>', 'its name (lower-case letters, digits, . _ -): its branch is PREFIX/NAME')
    .requiredOption('--goal <goal>', 'what each task should do')
    .option('--repos <file>', 'a file of repositories, one URL or absolute path a line (# comments and blank lines skipped); - reads standard input')
    .option('--repo <url>', 'a repository URL or local path (repeatable), instead of --repos', (v: string, all: string[] = []) => [...all, v])
    .option('--org-query <query>', 'instead of a list: a GitHub repository search (e.g. "org:acme language:go"), asked of the GitHub of the org\'s projects')
    .addOption(new Option('--agent <agent>', "builtin (Berth's tool-calling loop) or command").choices(['builtin', 'command']))
    .option('--command <cmd>', 'with --agent command: what to run in each repository')
    .option('--check <cmd>', 'the command that says whether the work is done')
    .option('--setup <cmd>', 'a setup command run before the agent (repeat for several, run in order)', (v: string, all: string[] = []) => [...all, v])
    .option('--model <model>', "the built-in agent's model")
    .option('--concurrency <n>', 'tasks at once, across all runners (default 20)', wholeNumber(1))
    .option('--max-open-prs <n>', 'never more open pull requests (or unapproved branches) than this (default 100)', wholeNumber(1))
    .option('--forge-rate <rate>', 'task starts per unit of time on a forge: 1/s, 30/m, 100/h (default 1/s)')
    .option('--branch-prefix <prefix>', 'the branch is PREFIX/NAME (default berth/campaign)')
    .option('--draft', 'open the pull requests as drafts')
    .option('--max-retries <n>', 'times a repository is tried again after an infrastructure failure (default 2)', wholeNumber(0))
    .option('--image <image>', 'for repositories without a project (admins): the environment image, over the repository\'s own')
    .option('--allow-domain <domain>', 'for repositories without a project (admins): a domain they may reach besides the org\'s policy (repeatable)', (v: string, all: string[] = []) => [...all, v])
    .option('--forge <kind>', 'for repositories without a project (admins): github, gitlab or git (default: from each URL)')
    .option('--forge-url <url>', 'for repositories without a project (admins): API URL of GitHub Enterprise or a self-hosted GitLab')
    .option('--token-secret <name>', 'for repositories without a project (admins): the org secret holding the forge token to push and open pull requests with')
    .option('--json', 'print JSON: { campaign, invalid }')
    .action(async (o) => {
      if (!o.goal.trim()) throw usageError('--goal is empty: say what each task should do');
      if (o.command && !o.agent) o.agent = 'command';
      if (o.agent === 'command' && !o.command) throw usageError('--agent command needs --command "…": what to run in each repository');
      if (o.orgQuery !== undefined && (o.repos !== undefined || o.repo?.length)) throw usageError('give the repositories one way: --repos, --repo or --org-query');
      const from = o.orgQuery !== undefined ? { orgQuery: String(o.orgQuery) } : { repos: await repoLines(o) };
      const body: CreateCampaignBody = {
        name: o.name,
        goal: o.goal,
        ...from,
        ...(o.agent && { agent: o.agent }),
        ...(o.command && { command: o.command }),
        ...(o.check && { check: o.check }),
        ...(o.setup && { setup: o.setup }),
        ...(o.model && { model: o.model }),
        ...(o.concurrency !== undefined && { concurrency: o.concurrency }),
        ...(o.maxOpenPrs !== undefined && { maxOpenPrs: o.maxOpenPrs }),
        ...(o.forgeRate !== undefined && { forgeRate: o.forgeRate }),
        ...(o.branchPrefix !== undefined && { branchPrefix: o.branchPrefix }),
        ...(o.draft && { draft: true }),
        ...(o.maxRetries !== undefined && { maxRetries: o.maxRetries }),
        ...(o.image !== undefined && { image: o.image }),
        ...(o.allowDomain?.length && { allowDomains: o.allowDomain }),
        forge: forgeFlags(o),
      };
      const made = await client().request<CreatedCampaign>('POST', campaignPath(client()), body);
      if (o.json) return printJson(made);
      printCreated(made);
    });

  campaign
    .command('list')
    .alias('ls')
    .description("the org's campaigns, newest first: state and progress")
    .option('--json', 'print JSON')
    .action(async (o) => {
      const { items } = await client().request<{ items: Campaign[] }>('GET', campaignPath(client()));
      if (o.json) return printJson(items);
      if (!items.length) return void process.stderr.write('no campaigns yet: `berth campaign create --name N --goal "…" --repos FILE` starts one\n');
      printTable(
        ['NAME', 'STATE', 'DONE', 'FAILED', 'RUNNING', 'CREATED'],
        items.map((c) => [c.name, stateWord(c.state), `${finished(c.counts)}/${c.total}`, String(c.counts.failed), String(working(c.counts)), `${age(c.createdAt)} ago`]),
      );
    });

  campaign
    .command('show <campaign>')
    .description('a campaign: counts by state, pace, its pull requests, its failures by reason (-f follows it)')
    .option('-f, --follow', 'refresh about every second until it is done or cancelled, then exit 1 if a repository failed (Ctrl-C stops following, not the campaign)')
    .option('--json', 'print JSON (with -f, a line each time it changes)')
    .action(async (id: string, o) => {
      if (o.follow) return follow(client(), id, o);
      const d = await client().request<CampaignDetail>('GET', one(client(), id));
      if (o.json) return printJson(d);
      process.stdout.write(`${showLines(d).join('\n')}\n`);
    });

  campaign
    .command('targets <campaign>')
    .description('its repositories and what became of each, in the order of the list')
    .option('--state <state>', 'only these: pending, starting, running, succeeded, failed or cancelled')
    .option('--json', 'print JSON')
    .action(async (id: string, o) => {
      const items = await allTargets(client(), id, o.state);
      if (o.json) return printJson(items);
      printTable(
        ['REPO', 'STATE', 'TRIES', 'TASK', 'CHANGE / REASON'],
        items.map((t) => [t.repo, stateWord(t.state), String(t.attempts), t.taskId ?? '-', t.changeRequest ? (t.changeRequest.url ?? 'branch kept in Berth') : t.failure ? `${t.failure}: ${(t.reason ?? '').split('\n')[0]!.slice(0, 100)}` : (t.reason ?? '')]),
      );
    });

  for (const [verb, what, done] of [
    ['pause', 'start no more of its tasks (those under way finish)', 'paused'],
    ['resume', 'go on starting its tasks', 'resumed'],
    ['cancel', 'stop it: nothing more starts, its tasks under way are cancelled', 'cancelled'],
    ['retry-failed', 'try its failed repositories again', 'retrying its failed repositories'],
    ['rerun', 'run it again over every repository (branches get new commits, no second pull request)', 'running again'],
  ] as const) {
    campaign
      .command(`${verb} <campaign>`)
      .description(what)
      .option('--json', 'print the campaign as JSON')
      .action(async (id: string, o) => {
        const c = await client().request<Campaign>('POST', one(client(), id, `/${verb}`));
        emit(o, c, () => `${c.name} ${done}: ${stateWord(c.state)}, ${finished(c.counts)}/${c.total} done (${countsText(c.counts)})`);
      });
  }

  campaign
    .command('export <campaign>')
    .description('every repository and what became of it, as CSV (default) or JSON, to standard output or -o FILE')
    .addOption(new Option('--format <format>', 'csv or json').choices(['csv', 'json']))
    .option('-o, --output <file>', 'write it to this file')
    .option('--json', 'the same as --format json')
    .action(async (id: string, o) => {
      if (o.json && o.format === 'csv') throw usageError('--json and --format csv cannot go together');
      const format = o.json ? 'json' : (o.format ?? 'csv');
      const res = await client().fetch(`${one(client(), id, '/export')}?format=${format}`);
      const text = await res.text();
      if (!o.output) return void process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
      try {
        writeFileSync(o.output, text);
      } catch (e) {
        throw new CliError(`cannot write ${o.output} (${(e as NodeJS.ErrnoException).code}): give -o a path in a directory you may write`);
      }
      const rows = format === 'csv' ? text.split('\n').filter(Boolean).length - 1 : (JSON.parse(text) as { targets: unknown[] }).targets.length;
      process.stderr.write(`wrote ${rows} repositor${rows === 1 ? 'y' : 'ies'} to ${o.output}\n`);
    });

  campaign
    .command('diff <campaign>')
    .description("each repository's change as a unified diff under a line naming the repository, for review in bulk")
    .option('--repo <repo>', 'only this repository (as listed, or the end of its path: acme/shop)')
    .option('--json', 'print JSON: [{ repo, taskId, diff }]')
    .action(async (id: string, o) => {
      const c = client();
      let targets = (await allTargets(c, id)).filter((t) => t.taskId && t.changeRequest);
      if (o.repo) {
        targets = targets.filter((t) => repoMatches(t.repo, o.repo));
        if (!targets.length) throw new CliError(`no change in campaign ${id} for repository '${o.repo}': \`berth campaign targets ${id}\` lists its repositories`, EXIT.notFound);
      }
      const out: { repo: string; taskId: string; diff: string | null }[] = [];
      for (const t of targets) {
        const { diff } = await c.request<{ diff: string | null }>('GET', c.orgPath(`tasks/${encodeURIComponent(t.taskId!)}/diff`));
        if (o.json) {
          out.push({ repo: t.repo, taskId: t.taskId!, diff });
          continue;
        }
        process.stdout.write(`${paint(['bold', 'cyan'], `### ${t.repo} (task ${t.taskId}${t.changeRequest?.url ? `, ${t.changeRequest.url}` : ''})`)}\n`);
        process.stdout.write(diff === null ? '(no diff recorded)\n' : paintDiff(diff.endsWith('\n') ? diff : `${diff}\n`));
      }
      if (o.json) return printJson(out);
      if (!targets.length) process.stderr.write(`campaign ${id} has no changes yet: \`berth campaign show ${id}\` shows how far it is\n`);
    });

  campaign
    .command('approve <campaign>')
    .description('merge (plain git) or mark ready for review (pull requests) its green changes: those whose checks passed')
    .option('--only-green', 'only changes whose task passed its checks and whose pull request checks are not failing (the default)')
    .option('--all', 'every change, green or not (each is on record in the audit log)')
    .option('--json', 'print JSON: { approved, skipped }')
    .action(async (id: string, o) => {
      const r = await client().request<ApproveResult>('POST', one(client(), id, '/approve'), { onlyGreen: !o.all });
      if (o.json) return printJson(r);
      if (r.approved.length) printTable(['REPO', 'APPROVED'], r.approved.map((a) => [a.repo, a.how === 'merged' ? 'merged' : 'ready for review']));
      if (r.skipped.length) {
        process.stderr.write(`${r.skipped.length} skipped:\n`);
        for (const s of r.skipped) process.stderr.write(`  ${s.repo}: ${s.reason}\n`);
      }
      process.stderr.write(`${r.approved.length} approved, ${r.skipped.length} skipped\n`);
    });
}
