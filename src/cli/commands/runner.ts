import type { Command } from 'commander';
import type { RunnerList } from '../../shared/api-runners.ts';
import { formatSize } from '../../shared/units.ts';
import type { ApiClient } from '../client.ts';
import { age, printJson, printTable, stateWord } from '../output.ts';

export function runnerCommands(program: Command, client: () => ApiClient): void {
  const runner = program.command('runner').description('the hosts that run environments');

  runner
    .command('list')
    .alias('ls')
    .option('--json', 'print JSON')
    .description('list the runners with their health (for org admins and owners)')
    .action(async (o) => {
      const { items } = await client().request<RunnerList>('GET', '/api/runners');
      if (o.json) return printJson(items);
      printTable(
        ['NAME', 'HOST', 'HEALTH', 'BACKEND', 'CPUS', 'MEMORY', 'ENVS', 'TASKS', 'NETWORK', 'DISK QUOTA', 'DATA DISK FREE', 'HEARTBEAT'],
        items.map((r) => [
          r.name,
          r.host,
          stateWord(r.health.status),
          `${r.backend} (cgroup ${r.cgroups})`,
          String(r.cpus),
          formatSize(r.memoryBytes),
          `${r.environments.running}/${r.environments.total} running`,
          `${r.tasks.running}/${r.tasks.concurrency} running`,
          r.network.egressProxy ? `egress proxy${r.network.nftables ? '' : ', no nft'}` : 'none',
          r.diskQuota ? 'on' : 'off',
          `${formatSize(r.dataDisk.freeBytes)} of ${formatSize(r.dataDisk.totalBytes)}`,
          `${age(r.lastHeartbeatAt)} ago`,
        ]),
      );
      for (const r of items.filter((x) => x.network.trustedNetworks?.length || x.network.upstreamProxy)) {
        const { trustedNetworks = [], upstreamProxy, noProxy = [] } = r.network;
        const lines = [
          ...(trustedNetworks.length ? [`trusted networks: ${trustedNetworks.join(', ')}`] : []),
          ...(upstreamProxy ? [`upstream proxy: ${upstreamProxy}${noProxy.length ? ` (not for ${noProxy.join(', ')})` : ''}`] : []),
        ];
        process.stdout.write(`\n${r.name} egress:\n${lines.map((l) => `  ${l}\n`).join('')}`);
      }
      for (const r of items.filter((x) => x.health.reasons.length)) {
        process.stdout.write(`\n${r.name} is ${r.health.status}:\n${r.health.reasons.map((why) => `  - ${why}\n`).join('')}`);
      }
    });
}
