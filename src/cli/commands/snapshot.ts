// `berth snapshot list|show|rm`, and the environment verbs that make and use snapshots:
// `berth env snapshot`, `berth env fork`, `berth env create --from` (registered in env.ts).
import type { Command } from 'commander';
import type { CreateFromSnapshotBody, ForkResult, Snapshot, SnapshotList } from '../../shared/api-snapshots.ts';
import type { Environment } from '../../shared/api.ts';
import { formatSize } from '../../shared/units.ts';
import type { ApiClient } from '../client.ts';
import { emit, printJson, printTable, stateWord, usageError, withSpinner } from '../output.ts';

type Client = () => ApiClient;

const snapshotPath = (c: ApiClient, rest = '') => c.orgPath(`snapshots${rest}`);
const size = (s: Snapshot) => (s.bytes === null ? '' : formatSize(s.bytes));

function printSnapshot(s: Snapshot): void {
  const lines: [string, string][] = [
    ['id', s.id],
    ['name', s.name],
    ['kind', s.kind],
    ['state', `${stateWord(s.state)}${s.stateReason ? ` (${s.stateReason})` : ''}`],
    ['from', s.environmentName ? `${s.environmentName} (${s.environmentId})` : (s.environmentId ?? '')],
    ['image', `${s.image}${s.imageDigest ? ` (${s.imageDigest.slice(0, 19)})` : ''}`],
    ['size', s.bytes === null ? 'not counted' : `${formatSize(s.bytes)} referenced${s.copied ? ' (copied: its environment was kept outside the state store)' : ' (frozen in place, shared with its environments)'}`],
    ['paused', s.pausedMs ? `${s.pausedMs} ms` : 'no (not running)'],
    ['runner', s.runnerName ?? s.runnerId],
    ['made by', s.createdBy?.email ?? s.createdBy?.name ?? 'system'],
    ['created', s.createdAt],
    ['environments', `${s.environments} made from it`],
    ['in use', s.inUseBy.length ? s.inUseBy.join('; ') : 'no'],
  ];
  for (const [k, v] of lines) process.stdout.write(`${k.padEnd(13)} ${v}\n`);
}

export function snapshotCommands(program: Command, client: Client): void {
  const snapshot = program.command('snapshot').description("environments' files frozen: make environments from them (berth env create --from)");

  snapshot
    .command('list')
    .alias('ls')
    .description("the org's snapshots")
    .option('--kind <kind>', 'only manual, fork or prebuild ones')
    .option('--project <project>', "only this project's")
    .option('--json', 'print JSON')
    .action(async (o) => {
      const q = new URLSearchParams();
      if (o.kind) q.set('kind', o.kind);
      if (o.project) q.set('project', o.project);
      const { items } = await client().request<SnapshotList>('GET', snapshotPath(client(), q.size ? `?${q}` : ''));
      if (o.json) return printJson(items);
      printTable(
        ['ID', 'NAME', 'KIND', 'STATE', 'FROM', 'SIZE', 'ENVS', 'CREATED'],
        items.map((s) => [s.id, s.name, s.kind, stateWord(s.state), s.environmentName ?? s.environmentId ?? '', size(s), String(s.environments), s.createdAt.slice(0, 19).replace('T', ' ')]),
      );
    });

  snapshot
    .command('show <snapshot>')
    .description('one snapshot: where it came from, its size, what uses it')
    .option('--json', 'print JSON')
    .action(async (ref: string, o) => {
      const s = await client().request<Snapshot>('GET', snapshotPath(client(), `/${encodeURIComponent(ref)}`));
      if (o.json) return printJson(s);
      printSnapshot(s);
    });

  snapshot
    .command('rm <snapshot>')
    .alias('remove')
    .description("remove a snapshot (refused while a project's current prebuild or an environment being made uses it); environments made from it keep their files")
    .option('--json', 'print JSON')
    .action(async (ref: string, o) => {
      const s = await client().request<Snapshot>('DELETE', snapshotPath(client(), `/${encodeURIComponent(ref)}`));
      emit(o, s, `removed ${s.name} (${s.id})`);
    });
}

/** `berth env snapshot ID [--name N]`. */
export async function snapshotEnvironment(c: ApiClient, id: string, o: { name?: string; json?: boolean }): Promise<void> {
  const s = await withSpinner('freezing its files', () => c.request<Snapshot>('POST', c.orgPath(`environments/${encodeURIComponent(id)}/snapshot`), o.name ? { name: o.name } : {}));
  emit(o, s, () => `${s.id}\n${s.name}: ${s.bytes === null ? '' : `${formatSize(s.bytes)}, `}${s.copied ? 'copied' : 'frozen in place'}${s.pausedMs ? `, paused ${s.pausedMs} ms` : ''}`);
}

/** `berth env fork ID [--count N] [--name N]`: prints the new environments' ids, one a line. */
export async function forkEnvironment(c: ApiClient, id: string, o: { count?: string; name?: string; json?: boolean }): Promise<void> {
  const count = o.count === undefined ? 1 : Number(o.count);
  if (!Number.isInteger(count) || count < 1 || count > 100) throw usageError(`--count takes a whole number from 1 to 100, not '${o.count}'`);
  const made = await withSpinner(`forking into ${count} environment${count === 1 ? '' : 's'}`, () => c.request<ForkResult>('POST', c.orgPath(`environments/${encodeURIComponent(id)}/fork`), { count, ...(o.name && { name: o.name }) }));
  emit(o, made, () => made.environments.map((e) => e.id).join('\n'));
}

/** `berth env create --from SNAPSHOT …`: the create's body without the image (the snapshot's). */
export async function createFromSnapshot(c: ApiClient, from: string, body: CreateFromSnapshotBody & { image?: string | undefined; runnerLabels?: unknown }, o: { json?: boolean }): Promise<void> {
  if (body.image) throw usageError('--from and --image cannot go together: an environment made from a snapshot has its image');
  if (body.runnerLabels) throw usageError("--from and --runner-label cannot go together: an environment made from a snapshot goes to the snapshot's runner");
  const { image: _image, runnerLabels: _labels, ...rest } = body;
  const created = await withSpinner(`creating environment from ${from}`, () => c.request<Environment>('POST', snapshotPath(c, `/${encodeURIComponent(from)}/environments`), rest));
  if (o.json) printJson({ id: created.id, name: created.name, state: created.state, snapshotId: created.snapshotId });
  else process.stdout.write(`${created.id}\n`);
}
