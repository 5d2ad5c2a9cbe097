import type { Command } from 'commander';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import type { CreatedRunnerToken, Runner, RunnerList, RunnerToken, RunnerTokenList } from '../../shared/api-runners.ts';
import { labelsText } from '../labels.ts';
import { formatSize } from '../../shared/units.ts';
import type { ApiClient } from '../client.ts';
import { age, CliError, EXIT, printJson, printTable, stateWord, usageError } from '../output.ts';

/** `k=v,k2=v2` as labels, or a usage error saying what is wrong. */
async function labelsOf(text: string | undefined): Promise<Record<string, string>> {
  const { parseLabels } = await import('../../runner/remote/protocol.ts');
  try {
    return parseLabels(text);
  } catch (err) {
    throw usageError(`--labels: ${(err as Error).message}`);
  }
}

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
        ['NAME', 'HOST', 'HEALTH', 'BACKEND', 'CPUS', 'MEMORY', 'ENVS', 'TASKS', 'NETWORK', 'DISK QUOTA', 'DATA DISK FREE', 'HEARTBEAT', 'LABELS'],
        items.map((r) => [
          r.name,
          r.host,
          // Draining: what runs there finishes, nothing new goes there (older servers leave it out).
          `${stateWord(r.health.status)}${r.draining ? ', draining' : ''}`,
          `${r.backend} (cgroup ${r.cgroups})`,
          String(r.cpus),
          `${formatSize(r.memoryBytes)}${r.offeredMemoryBytes !== undefined ? ` (offers ${formatSize(r.offeredMemoryBytes)})` : ''}`,
          `${r.environments.running}/${r.environments.total} running`,
          `${r.tasks.running}/${r.tasks.concurrency} running`,
          r.network.egressProxy ? `egress proxy${r.network.nftables ? '' : ', no nft'}` : 'none',
          r.diskQuota ? 'on' : 'off',
          `${formatSize(r.dataDisk.freeBytes)} of ${formatSize(r.dataDisk.totalBytes)}`,
          `${age(r.lastHeartbeatAt)} ago`,
          labelsText(r.labels),
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
      // Whether `berth env pause` works there: the reason is long, so it goes below the table.
      for (const r of items.filter((x) => x.checkpoint)) {
        const c = r.checkpoint!;
        process.stdout.write(`\n${r.name} checkpoint: ${c.available ? 'available' : `unavailable (${c.reason ?? 'no reason given'})`}\n`);
      }
      // Whether `berth env snapshot` and `berth env fork` work there (its state store).
      for (const r of items.filter((x) => x.snapshots)) {
        const s = r.snapshots!;
        process.stdout.write(`\n${r.name} snapshots: ${s.available ? 'available' : `unavailable (${s.reason ?? 'no reason given'})`}\n`);
      }
      for (const r of items.filter((x) => x.health.reasons.length)) {
        process.stdout.write(`\n${r.name} is ${r.health.status}:\n${r.health.reasons.map((why) => `  - ${why}\n`).join('')}`);
      }
    });

  // Draining: no new environments or tasks go to the runner; what runs there finishes.
  for (const [verb, what] of [['drain', 'no new environments or tasks go to it; what runs there finishes'], ['undrain', 'it takes new environments and tasks again']] as const) {
    runner
      .command(`${verb} <name>`)
      .description(`${verb} a runner: ${what} (instance administrators; on record)`)
      .option('--json', 'print JSON')
      .action(async (name: string, o) => {
        const r = await client().request<Runner>('POST', `/api/runners/${encodeURIComponent(name)}/${verb}`);
        if (o.json) return printJson(r);
        process.stdout.write(r.draining ? `${r.name} is draining: nothing new goes there; \`berth runner undrain ${r.name}\` takes it back\n` : `${r.name} takes new environments and tasks\n`);
      });
  }

  const token = runner.command('token').description('tokens runners on other hosts join with (instance administrators)');
  token
    .command('create')
    .description('make a token for `berth runner join` (shown once)')
    .option('--labels <k=v,...>', 'labels every runner joining with it carries (gpu=true,zone=a)')
    .option('--name <name>', 'what the token is for')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const labels = await labelsOf(o.labels);
      const created = await client().request<CreatedRunnerToken>('POST', '/api/runners/tokens', { labels, ...(o.name && { name: o.name }) });
      if (o.json) return printJson(created);
      process.stdout.write(`${created.token}\n`);
      process.stderr.write(`runner token ${created.id}${created.name ? ` (${created.name})` : ''} made; it is shown only now. On the runner's host:\n  berth runner join URL --token TOKEN   (or BERTH_RUNNER_TOKEN=TOKEN berth runner join URL)\n`);
    });
  token
    .command('list')
    .alias('ls')
    .option('--json', 'print JSON')
    .description('list the runner tokens (never the tokens themselves)')
    .action(async (o) => {
      const { items } = await client().request<RunnerTokenList>('GET', '/api/runners/tokens');
      if (o.json) return printJson(items);
      printTable(
        ['ID', 'NAME', 'LABELS', 'CREATED', 'LAST USED', 'STATE'],
        items.map((t) => [t.id, t.name ?? '', Object.entries(t.labels).map(([k, v]) => `${k}=${v}`).join(','), `${age(t.createdAt)} ago`, t.lastUsedAt ? `${age(t.lastUsedAt)} ago` : 'never', t.revokedAt ? 'revoked' : 'active']),
      );
    });
  token
    .command('revoke <id>')
    .description('revoke a runner token: runners holding it are disconnected and refused from then on')
    .option('--json', 'print JSON')
    .action(async (id: string, o) => {
      const revoked = await client().request<RunnerToken>('DELETE', `/api/runners/tokens/${encodeURIComponent(id)}`);
      if (o.json) return printJson(revoked);
      process.stdout.write(`runner token ${revoked.id} revoked\n`);
    });

  runner
    .command('join <url>')
    .description("serve this host's environments to a control plane: dials out to URL and keeps the connection (with backoff) until stopped. Its state (its id, images, environments) is in --data-dir, else $BERTH_RUNNER_DATA_DIR, else ~/.berth-runner")
    .option('--token <token>', 'the runner token (`berth runner token create`); else $BERTH_RUNNER_TOKEN, which keeps it out of the process list')
    .option('--labels <k=v,...>', 'labels for placement (the token\'s labels win over these)')
    .option('--name <name>', 'the name it is listed under (default: the host name)')
    .option('--ca <file>', "a CA certificate (PEM) to trust for the control plane's TLS, besides the system's")
    .option('--insecure', 'allow plain http:// to a host that is not loopback (a network you trust; the token crosses it in the clear)')
    .option('--image-dir <dir>', 'where images are kept (default DATA_DIR/images)')
    .action(async (url: string, o, command: Command) => {
      // --data-dir is the global option (it names this runner's own data dir here, not a control plane's).
      const dataDir = command.optsWithGlobals<{ dataDir?: string }>().dataDir ?? process.env.BERTH_RUNNER_DATA_DIR ?? join(homedir(), '.berth-runner');
      const secret = o.token ?? process.env.BERTH_RUNNER_TOKEN;
      if (!secret) throw usageError('no runner token: pass --token or set BERTH_RUNNER_TOKEN (an instance administrator makes one with `berth runner token create`)');
      const labels = await labelsOf(o.labels);
      const { readFileSync } = await import('node:fs');
      let ca: string | undefined;
      if (o.ca) {
        try {
          ca = readFileSync(o.ca, 'utf8');
        } catch (err) {
          throw usageError(`--ca ${o.ca}: ${(err as Error).message}`);
        }
      }
      const { default: pino } = await import('pino');
      const logger = pino({ level: process.env.BERTH_LOG_LEVEL ?? 'info' }, pino.destination(2));
      const { joinControlPlane } = await import('../../runner/remote/host.ts');
      let refused: ((why: string) => void) | undefined;
      const refusal = new Promise<string>((r) => (refused = r));
      const joined = await joinControlPlane({
        url,
        token: secret,
        dataDir: resolve(dataDir),
        labels,
        name: o.name,
        ca,
        insecure: o.insecure === true,
        imageDir: o.imageDir && resolve(o.imageDir),
        logger,
        onRefused: (why) => refused!(why),
      });
      process.stderr.write(`runner ${joined.id} joining ${url}; Ctrl-C stops it (its environments keep running)\n`);
      const stop = async () => {
        await joined.close();
        process.exit(0);
      };
      process.on('SIGINT', () => void stop());
      process.on('SIGTERM', () => void stop());
      // Refused for good (a revoked token, a runner too old): say why and exit non-zero.
      const why = await refusal;
      await joined.close();
      throw new CliError(`the control plane refused this runner: ${why}`, EXIT.denied);
    });
}
