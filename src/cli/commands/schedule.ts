import type { Command } from 'commander';
import type { CreateScheduleBody, Schedule, ScheduleDetail, ScheduleFiring, ScheduleList } from '../../shared/api-schedules.ts';
import type { ApiClient } from '../client.ts';
import { emit, printJson, printTable, usageError } from '../output.ts';

type Client = () => ApiClient;

export const schedulePath = (c: ApiClient, rest = '') => c.orgPath(`schedules${rest}`);

/** An instant as the schedule's zone reads it: `Sun 2026-03-29 03:00 CEST`. */
export function inZone(iso: string, timeZone: string): string {
  const d = new Date(iso);
  const weekday = new Intl.DateTimeFormat('en-US', { timeZone, weekday: 'short' }).format(d);
  const local = new Intl.DateTimeFormat('sv-SE', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hourCycle: 'h23', timeZoneName: 'short' }).format(d);
  return `${weekday} ${local}`;
}

/** What a schedule does, in a few words. */
export function scheduleWhat(s: Schedule): string {
  if (s.kind === 'environment') return `${s.action} environment ${s.environment ?? s.environmentId}`;
  return `task on ${s.project}: ${s.goal && s.goal.length > 60 ? `${s.goal.slice(0, 59)}…` : s.goal}`;
}

const firingLine = (f: ScheduleFiring, zone: string) => [inZone(f.slot, zone), f.outcome];

/** `berth schedule`: cron rules that start tasks (environment schedules are made with `berth env schedule`). */
export function scheduleCommands(program: Command, client: Client): void {
  const schedule = program.command('schedule').description('cron rules that start tasks, or stop and start environments');

  schedule
    .command('create')
    .description('start a task on a project on a cron rule, e.g. --cron "0 3 * * 1-5" (03:00 on weekdays); prints its id')
    .requiredOption('--cron <rule>', 'five fields: minute hour day-of-month month day-of-week')
    .option('--timezone <zone>', 'the IANA zone the rule is read in, daylight saving included (default UTC)')
    .requiredOption('--project <project>', 'the project each task works on')
    .requiredOption('--goal <goal>', 'what each task should do')
    .option('--name <name>', 'a name to tell it by')
    .option('--agent <agent>', 'builtin or command')
    .option('--command <command>', 'with --agent command: the command that does the work')
    .option('--check <command>', 'the command that says whether the work is done')
    .option('--model <model>', "the built-in agent's model")
    .option('--json', 'print JSON')
    .action(async (o) => {
      const body: CreateScheduleBody = { kind: 'task', cron: o.cron, timezone: o.timezone, project: o.project, goal: o.goal, name: o.name, agent: o.agent, command: o.command, check: o.check, model: o.model };
      const made = await client().request<Schedule>('POST', schedulePath(client()), body);
      emit(o, made, () => `${made.id}\n${scheduleWhat(made)}, ${made.cron} (${made.timezone}); next ${made.nextAt ? inZone(made.nextAt, made.timezone) : 'never'}`);
    });

  schedule
    .command('list')
    .alias('ls')
    .description("the org's schedules with their next slot and last firing")
    .option('--json', 'print JSON')
    .action(async (o) => {
      const { items } = await client().request<ScheduleList>('GET', schedulePath(client()));
      if (o.json) return printJson(items);
      printTable(
        ['ID', 'NAME', 'RULE', 'ZONE', 'WHAT', 'NEXT', 'LAST'],
        items.map((s) => [s.id, s.name ?? '', s.cron, s.timezone, scheduleWhat(s), s.paused ? 'paused' : s.nextAt ? inZone(s.nextAt, s.timezone) : 'never', s.lastFiring?.outcome ?? '']),
      );
    });

  schedule
    .command('show <id>')
    .description('one schedule: its next three slots and its last firings with what came of them')
    .option('--json', 'print JSON')
    .action(async (id: string, o) => {
      const s = await client().request<ScheduleDetail>('GET', schedulePath(client(), `/${encodeURIComponent(id)}`));
      if (o.json) return printJson(s);
      const lines: [string, string][] = [
        ['id', s.id],
        ...(s.name ? [['name', s.name] as [string, string]] : []),
        ['does', scheduleWhat(s)],
        ['rule', `${s.cron} (${s.timezone})`],
        ['state', s.paused ? 'paused' : 'active'],
        ['made by', `${s.createdBy}, ${s.createdAt}`],
        [s.paused ? 'would fire' : 'next', s.upcoming.map((u) => inZone(u, s.timezone)).join('\n' + ' '.repeat(12)) || 'never'],
      ];
      process.stdout.write(`${lines.map(([k, v]) => `${k.padEnd(10)}  ${v}`).join('\n')}\n`);
      if (!s.firings.length) return void process.stdout.write('\nnot fired yet\n');
      process.stdout.write('\n');
      printTable(['SLOT', 'OUTCOME'], s.firings.map((f) => firingLine(f, s.timezone)));
    });

  for (const [verb, what] of [
    ['pause', 'stop firing until resumed'],
    ['resume', 'fire again from the next slot (slots passed while paused are skipped)'],
  ] as const) {
    schedule
      .command(`${verb} <id>`)
      .description(what)
      .option('--json', 'print JSON')
      .action(async (id: string, o) => {
        const s = await client().request<ScheduleDetail>('POST', schedulePath(client(), `/${encodeURIComponent(id)}/${verb}`));
        emit(o, s, () => (s.paused ? `${s.id} paused` : `${s.id} active; next ${s.nextAt ? inZone(s.nextAt, s.timezone) : 'never'}`));
      });
  }

  schedule
    .command('rm <id>')
    .description('remove a schedule (its firings stay on record)')
    .option('--json', 'print JSON: { id, removed }')
    .action(async (id: string, o) => {
      await client().request('DELETE', schedulePath(client(), `/${encodeURIComponent(id)}`));
      emit(o, { id, removed: true }, `${id} removed`);
    });
}

/**
 * `berth env schedule ID --stop RULE --start RULE`: office hours for an environment. A new rule
 * for an action replaces its old one (made first, so a rule the server refuses leaves the old
 * ones); --clear removes them; with neither, its schedules are listed.
 */
export async function environmentSchedule(c: ApiClient, env: string, o: { stop?: string; start?: string; timezone?: string; clear?: boolean; json?: boolean }): Promise<void> {
  if (o.clear && (o.stop || o.start)) throw usageError('give --clear alone, or --stop and/or --start rules');
  if (o.timezone && !o.stop && !o.start) throw usageError('--timezone goes with --stop or --start');
  const { items: old } = await c.request<ScheduleList>('GET', `${schedulePath(c)}?environment=${encodeURIComponent(env)}`);
  if (o.clear) {
    for (const s of old) await c.request('DELETE', schedulePath(c, `/${s.id}`));
    return emit(o, { environment: env, removed: old.map((s) => s.id) }, `${old.length} schedule${old.length === 1 ? '' : 's'} of ${env} removed`);
  }
  const made: Schedule[] = [];
  try {
    for (const action of ['stop', 'start'] as const) {
      const cron = o[action];
      if (!cron) continue;
      const body: CreateScheduleBody = { kind: 'environment', environment: env, action, cron, timezone: o.timezone };
      made.push(await c.request<Schedule>('POST', schedulePath(c), body));
    }
  } catch (err) {
    // All or nothing: a refused --start takes back the --stop made a moment ago.
    for (const s of made) await c.request('DELETE', schedulePath(c, `/${s.id}`)).catch(() => {});
    throw err;
  }
  const replaced = old.filter((s) => made.some((m) => m.action === s.action));
  for (const s of replaced) await c.request('DELETE', schedulePath(c, `/${s.id}`));
  const now = made.length ? [...made, ...old.filter((s) => !replaced.includes(s))] : old;
  if (o.json) return printJson(now);
  if (!now.length) return void process.stdout.write(`${env} has no schedules: \`berth env schedule ${env} --stop "0 19 * * *" --start "0 7 * * 1-5"\` keeps office hours\n`);
  printTable(['ID', 'ACTION', 'RULE', 'ZONE', 'NEXT'], now.map((s) => [s.id, s.action ?? '', s.cron, s.timezone, s.paused ? 'paused' : s.nextAt ? inZone(s.nextAt, s.timezone) : 'never']));
}
