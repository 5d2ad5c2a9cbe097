// `berth prebuild PROJECT` (queue one and follow it to ready or failed) and
// `berth prebuild list PROJECT`: a project's repository set up and snapshotted for its tasks.
import type { Command } from 'commander';
import type { Prebuild } from '../../shared/prebuilds.ts';
import { formatSize } from '../../shared/units.ts';
import type { ApiClient } from '../client.ts';
import { printJson, printTable, stateWord, withSpinner } from '../output.ts';

type Client = () => ApiClient;

const POLL_MS = 1000;
const short = (sha: string | null) => (sha ? sha.slice(0, 12) : '');

/** `3m ago`: how old a prebuild is. */
export function ageOf(iso: string, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86_400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86_400)}d ago`;
}

/** One line: `pbd_… at abc123 (ready, 3m ago, 52 MB)` or `pbd_… failed: reason`. */
export function prebuildLine(p: Prebuild): string {
  const at = p.commit ? ` at ${short(p.commit)}` : '';
  if (p.state === 'failed') return `${p.id}${at} failed ${ageOf(p.finishedAt ?? p.createdAt)}: ${p.stateReason ?? 'no reason recorded'}`;
  const size = p.snapshotBytes === null ? '' : `, ${formatSize(p.snapshotBytes)}`;
  return `${p.id}${at} (${p.state}, ${ageOf(p.finishedAt ?? p.createdAt)}${size})`;
}

export function prebuildCommands(program: Command, client: Client): void {
  const prebuild = program
    .command('prebuild')
    .description("set up a project's repository once and snapshot it, so its tasks start from it (berth prebuild PROJECT; berth prebuild list PROJECT)")
    .argument('[project]', 'the project to prebuild')
    .option('--no-wait', 'queue it and return: do not follow it to ready or failed')
    .option('--json', 'print the prebuild as JSON')
    .action(async (project: string | undefined, o) => {
      if (!project) return prebuild.help({ error: true });
      const c = client();
      const made = await c.request<Prebuild>('POST', c.orgPath(`projects/${encodeURIComponent(project)}/prebuilds`));
      if (!o.wait) {
        if (o.json) return printJson(made);
        process.stdout.write(`${made.id} queued (berth prebuild list ${project} follows it)\n`);
        return;
      }
      const end = await withSpinner(`prebuild ${made.id}: queued`, async (s) => {
        for (;;) {
          const p = await c.request<Prebuild>('GET', c.orgPath(`prebuilds/${made.id}`));
          if (p.state === 'ready' || p.state === 'failed' || p.state === 'expired') return p;
          const last = p.log.at(-1);
          s.update(`prebuild ${p.id}: ${p.state}${p.commit ? ` at ${short(p.commit)}` : ''}${last ? ` — ${last.slice(0, 100)}` : ''}`);
          await new Promise((r) => setTimeout(r, POLL_MS));
        }
      });
      if (o.json) printJson(end);
      else {
        if (end.state === 'failed' && end.log.length) process.stdout.write(`${end.log.slice(-20).join('\n')}\n`);
        process.stdout.write(`${prebuildLine(end)}\n`);
      }
      if (end.state !== 'ready') process.exitCode = 1;
    });

  prebuild
    .command('list <project>')
    .alias('ls')
    .description("the project's prebuilds, newest first: state, commit, age, size")
    .option('--json', 'print JSON')
    .action(async (project: string, o) => {
      const c = client();
      const { items } = await c.request<{ items: Prebuild[] }>('GET', c.orgPath(`projects/${encodeURIComponent(project)}/prebuilds`));
      if (o.json) return printJson(items);
      printTable(
        ['ID', 'STATE', 'TRIGGER', 'COMMIT', 'AGE', 'SIZE', 'REASON'],
        items.map((p) => [p.id, stateWord(p.state), p.trigger, short(p.commit), ageOf(p.finishedAt ?? p.createdAt), p.snapshotBytes === null ? '' : formatSize(p.snapshotBytes), (p.stateReason ?? '').slice(0, 80)]),
      );
    });
}
