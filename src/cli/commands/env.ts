import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { CreateEnvironmentBody, Environment, EnvironmentDetail, EnvironmentList, NetworkEventView, Person } from '../../shared/api.ts';
import { formatDuration, formatSize } from '../../shared/units.ts';
import type { ApiClient } from '../client.ts';
import { age, emit, printJson, printTable, stateWord, usageError, withSpinner } from '../output.ts';
import { runnerLabel } from '../labels.ts';
// attach.ts (ws, the API schemas) and cp.ts (tar) load in their actions: every command pays for what loads here.

type Client = () => ApiClient;

export const envPath = (c: ApiClient, id: string, rest = '') => c.orgPath(`environments/${encodeURIComponent(id)}${rest}`);

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}


/** A person as the CLI names them: email, else name, else id. */
const who = (p: Person | null) => (p === null ? '-' : (p.email ?? p.name ?? p.id));

function sharedWith(env: Environment): string {
  const s = env.sharedWith;
  return [...(s.org ? ['everyone in the org'] : []), ...s.users.map(who)].join(', ') || 'no one';
}

function printEnvironment(env: Environment | EnvironmentDetail): void {
  const l = env.limits;
  const lines: [string, string][] = [
    ['id', env.id],
    ['name', env.name],
    ['state', stateWord(env.state) + (env.stateReason ? ` (${env.stateReason})` : '')],
    ['image', `${env.image}${env.imageDigest ? ` ${env.imageDigest.slice(0, 19)}` : ''}`],
    // Where its files are, for life (older servers leave it out).
    ...(env.runnerId !== undefined ? [['runner', env.runnerId === null ? 'the local runner' : `${env.runnerName ?? '?'} (${env.runnerId})`] as [string, string]] : []),
    ['limits', `${l.cpus} cpu, ${formatSize(l.memoryBytes)} memory, ${formatSize(l.diskBytes)} disk, ${l.pidsLimit} processes`],
    ['idle timeout', l.idleTimeoutMs === null ? 'off' : formatDuration(l.idleTimeoutMs)],
    ['max lifetime', l.maxLifetimeMs === null ? 'off' : formatDuration(l.maxLifetimeMs)],
    ['created', `${env.createdAt} (${age(env.createdAt)} ago)`],
    ['owner', env.owner ? who(env.owner) : 'none on record (admins and owners use it)'],
    ['shared with', sharedWith(env)],
  ];
  if (env.startedAt) lines.push(['started', env.startedAt]);
  // Older servers leave these out.
  if (env.user) lines.push(['user', `${env.user} (its commands run as this user)`]);
  if (env.forwardPorts?.length) lines.push(['ports', `${env.forwardPorts.join(', ')} (recorded, not opened)`]);
  if (env.volumes?.length) lines.push(['volumes', env.volumes.map((v) => `${v.name} at ${v.target}`).join(', ')]);
  if ('usage' in env && env.usage) {
    const u = env.usage;
    const parts = [
      u.memoryBytes === null ? null : `${formatSize(u.memoryBytes)} memory`,
      u.cpuSeconds === null ? null : `${u.cpuSeconds.toFixed(1)}s cpu`,
      u.pids === null ? null : `${u.pids} processes`,
      u.diskBytes === null ? null : `${formatSize(u.diskBytes)} written`,
    ].filter(Boolean);
    lines.push(['usage', parts.join(', ')]);
  }
  // The OOM killer at work: how often since the last start (the cgroup's count), and when a command last saw it.
  const oomKills = 'usage' in env ? (env.usage?.oomKills ?? 0) : 0;
  const lastOom = 'lastOomKillAt' in env ? env.lastOomKillAt : null;
  if (oomKills > 0 || lastOom) {
    const since = oomKills > 0 ? `${oomKills} process${oomKills === 1 ? '' : 'es'} killed since it started (limit ${formatSize(l.memoryBytes)})` : null;
    const last = lastOom ? `last ${lastOom} (${age(lastOom)} ago)` : null;
    lines.push(['out of memory', [since, last].filter(Boolean).join('; ')]);
  }
  const width = Math.max(...lines.map(([k]) => k.length));
  process.stdout.write(`${lines.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n')}\n`);
}

export function envCommands(program: Command, client: Client): void {
  const env = program.command('env').description('create, use and remove environments');

  env
    .command('create')
    .description('create and start an environment; prints its id')
    .option('--name <name>', 'a name to use instead of the id')
    .option('--image <image>', 'image name or registry reference; instance administrators may also give a path on the server to an OCI layout or docker-save tarball', undefined)
    .option('--project <project>', 'project whose secrets the environment receives')
    .option('--cpus <n>', 'CPU cores', (v) => {
      const n = Number(v);
      if (!Number.isFinite(n)) throw usageError(`--cpus must be a number, got '${v}'`);
      return n;
    })
    .option('--memory <size>', 'memory limit, e.g. 2g')
    .option('--disk <size>', 'disk limit, e.g. 10g')
    .option('--pids <n>', 'process limit', (v) => Number.parseInt(v, 10))
    .option('--idle-timeout <duration>', 'stop after this long without commands, e.g. 30m ("off" for never)')
    .option('--max-lifetime <duration>', 'stop this long after starting, e.g. 24h ("off" for never)')
    .option('--allow-domain <domain>', 'a domain it may reach, repeatable (a member\'s list may only narrow its project\'s and org\'s policy; an admin\'s may widen it)', collect)
    .option('--user <user>', "who its commands run as: a user of its image (like node) or a uid (default: its root)")
    .option('--volume <name:/path>', "a named volume mounted at /path, repeatable: kept per project (with --project), else per environment", collect)
    .option('--runner-label <key=value>', 'a label the runner it goes to must carry (gpu=true), repeatable; it stays on that runner for life', runnerLabel)
    .option('--from <snapshot>', "start with a snapshot's files (berth snapshot list): its image, on its runner; limits, project and policy are this command's")
    .option('--json', 'print a JSON object')
    .action(async (o) => {
      const volumes = (o.volume as string[] | undefined)?.map((v) => {
        const i = v.indexOf(':');
        if (i < 1 || !v.slice(i + 1).startsWith('/')) throw usageError(`--volume takes NAME:/path, e.g. cache:/root/.cache, not '${v}'`);
        return { name: v.slice(0, i), target: v.slice(i + 1) };
      });
      const body: CreateEnvironmentBody = {
        name: o.name,
        // A relative path means one from here; the server (on this host under `berth up`) reads it only for an instance administrator.
        image: typeof o.image === 'string' && /^\.\.?\//.test(o.image) ? resolve(o.image) : o.image,
        project: o.project,
        cpus: o.cpus,
        memory: o.memory,
        disk: o.disk,
        pids: o.pids,
        idleTimeout: o.idleTimeout,
        maxLifetime: o.maxLifetime,
        allowDomains: o.allowDomain,
        user: o.user,
        volumes,
        runnerLabels: o.runnerLabel,
      };
      if (o.from) return (await import('./snapshot.ts')).createFromSnapshot(client(), o.from, body, o);
      const created = await withSpinner('creating environment', () => client().request<Environment>('POST', client().orgPath('environments'), body));
      if (o.json) printJson({ id: created.id, name: created.name, state: created.state });
      else process.stdout.write(`${created.id}\n`);
    });

  env
    .command('list')
    .alias('ls')
    .description('list environments')
    .option('--state <state>', 'only this state')
    .option('--all', 'include deleted environments')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const items: Environment[] = [];
      let cursor: string | null = null;
      do {
        const q = new URLSearchParams({ limit: '500' });
        if (o.state) q.set('state', o.state);
        if (o.all) q.set('includeDeleted', 'true');
        if (cursor) q.set('cursor', cursor);
        const page: EnvironmentList = await client().request<EnvironmentList>('GET', client().orgPath(`environments?${q}`));
        items.push(...page.items);
        cursor = page.nextCursor;
      } while (cursor);
      if (o.json) return printJson(items);
      printTable(
        ['ID', 'NAME', 'STATE', 'OWNER', 'IMAGE', 'CPU', 'MEMORY', 'AGE'],
        items.map((e) => [e.id, e.name, stateWord(e.state), e.pool ? 'warm pool' : who(e.owner), e.image, String(e.limits.cpus), formatSize(e.limits.memoryBytes), age(e.createdAt)]),
      );
    });

  env
    .command('show <id>')
    .description('show an environment and its resource use')
    .option('--json', 'print JSON')
    .action(async (id: string, o) => {
      const detail = await client().request<EnvironmentDetail>('GET', envPath(client(), id));
      if (o.json) printJson(detail);
      else printEnvironment(detail);
    });

  for (const [verb, description, gerund] of [
    ['start', 'start a stopped environment', 'starting'],
    ['stop', 'stop an environment; its files stay', 'stopping'],
    // Only where the runner can checkpoint (CRIU); elsewhere the refusal says why (`berth runner list` too).
    ['pause', "pause a running environment, keeping its processes and memory (where its runner can: `berth runner list`)", 'pausing'],
    ['resume', 'resume a paused environment', 'resuming'],
  ] as const) {
    env
      .command(`${verb} <id>`)
      .description(description)
      .option('--json', 'print JSON')
      .action(async (id: string, o) => {
        const result = await withSpinner(`${gerund} ${id}`, () => client().request<Environment>('POST', envPath(client(), id, `/${verb}`)));
        if (o.json) printJson(result);
        else process.stdout.write(`${result.id} ${stateWord(result.state)}\n`);
      });
  }

  env
    .command('rm <id>')
    .description('remove an environment and free its disk')
    .option('--forget', 'for a lost environment whose runner is gone for good: mark it deleted (its files stay on that host)')
    .option('--json', 'print JSON')
    .action(async (id: string, o) => {
      const result = await withSpinner(`removing ${id}`, () => client().request<Environment>('DELETE', `${envPath(client(), id)}${o.forget ? '?forget=true' : ''}`));
      if (o.json) printJson(result);
      else process.stdout.write(`${result.id} ${stateWord(result.state)}\n`);
    });

  env
    .command('exec <id> <cmd...>')
    .description('run a command inside; exits with its exit code (put -- before the command)')
    .option('--cwd <dir>', 'working directory inside (default /workspace)')
    .option('--env <K=V>', 'environment variable, repeatable', collect)
    .option('--timeout <duration>', 'kill the command after this long (default 10m; "off" for never)')
    .option('-i, --interactive', 'pass standard input')
    .option('-t, --tty', 'give the command a terminal')
    .action(async (id: string, cmd: string[], o) => {
      const env: Record<string, string> = {};
      for (const kv of (o.env as string[] | undefined) ?? []) {
        const eq = kv.indexOf('=');
        if (eq <= 0) throw usageError(`--env takes K=V, got '${kv}'`);
        env[kv.slice(0, eq)] = kv.slice(eq + 1);
      }
      const { attach } = await import('./attach.ts');
      const code = await attach(client(), id, { cmd, cwd: o.cwd, env, timeout: o.timeout, interactive: Boolean(o.interactive), tty: Boolean(o.tty) });
      process.exitCode = code;
    });

  env
    .command('network <id>')
    .description("what the environment's egress proxy let through or refused, newest first")
    .option('--denied', 'only refusals')
    .option('--limit <n>', 'at most this many (default 100, at most 1000)', (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 1000) throw usageError(`--limit is a whole number from 1 to 1000, got '${v}'`);
      return n;
    })
    .option('--json', 'print JSON')
    .action(async (id: string, o) => {
      const q = new URLSearchParams({ limit: String(o.limit ?? 100) });
      if (o.denied) q.set('denied', 'true');
      const { items } = await client().request<{ items: NetworkEventView[] }>('GET', envPath(client(), id, `/network?${q}`));
      if (o.json) return printJson(items);
      printTable(
        ['TIME', 'METHOD', 'HOST', 'PATH', 'RESULT', 'RULE', 'UP', 'DOWN', 'DURATION'],
        items.map((e) => [
          e.at,
          e.method ?? (e.kind === 'connect' ? 'CONNECT' : '-'),
          `${e.host}:${e.port}`,
          e.path ?? '-',
          e.allowed ? `allowed${e.status === null ? '' : ` ${e.status}`}` : e.packets === null ? 'DENIED' : `DENIED (${e.packets} packet${e.packets === 1 ? '' : 's'})`,
          e.rule,
          formatSize(e.bytesUp),
          formatSize(e.bytesDown),
          `${e.durationMs}ms`,
        ]),
      );
    });

  // Members use their own environments; its owner (or an admin) lets others use one too.
  for (const [verb, method, description] of [
    ['share', 'PUT', 'let a member of the org (--with EMAIL) or everyone in it (--everyone) use an environment as their role allows'],
    ['unshare', 'DELETE', 'take back what `env share` gave'],
  ] as const) {
    env
      .command(`${verb} <id>`)
      .description(description)
      .option('--with <email>', 'a member of the org, by email')
      // Not --org: that is the global option naming the org to act in.
      .option('--everyone', 'everyone in the org')
      .option('--json', 'print JSON')
      .action(async (id: string, o) => {
        if (Boolean(o.with) === Boolean(o.everyone)) throw usageError(`give --with EMAIL or --everyone: \`berth env ${verb} ${id} --with dev@example.com\``);
        const grantee: string = o.everyone ? 'org' : o.with;
        const result = await client().request<Environment>(method, envPath(client(), id, `/shares/${encodeURIComponent(grantee)}`));
        if (o.json) return printJson(result);
        process.stdout.write(`${result.name} is shared with ${sharedWith(result)}\n`);
      });
  }

  env
    .command('schedule <id>')
    .description('office hours: stop and start an environment on cron rules (--stop "0 19 * * *" --start "0 7 * * 1-5"); with neither, list its schedules')
    .option('--stop <rule>', 'when to stop it: five cron fields; replaces its stop rule')
    .option('--start <rule>', 'when to start it: five cron fields; replaces its start rule')
    .option('--timezone <zone>', 'the IANA zone the rules are read in (default UTC)')
    .option('--clear', 'remove its schedules')
    .option('--json', 'print JSON')
    .action(async (id: string, o) => (await import('./schedule.ts')).environmentSchedule(client(), id, o));

  env
    .command('snapshot <id>')
    .description("freeze the environment's files as a snapshot (a running one is paused for the moment); prints its id")
    .option('--name <name>', 'a name to tell it by')
    .option('--json', 'print JSON')
    .action(async (id: string, o) => (await import('./snapshot.ts')).snapshotEnvironment(client(), id, o));

  env
    .command('fork <id>')
    .description('snapshot the environment and make environments from it, each with every file, each writing only to its own; prints their ids')
    .option('--count <n>', 'how many (1 to 100; default 1)')
    .option('--name <name>', 'their name, numbered -1, -2 … when more than one')
    .option('--json', 'print JSON')
    .action(async (id: string, o) => (await import('./snapshot.ts')).forkEnvironment(client(), id, o));

  env
    .command('export <id> <file>')
    .description("write the environment's files (a running one frozen while they are read) as one archive: a manifest with checksums, then its layer")
    .option('--json', 'print JSON (the environment, the file and its size) when done')
    .action(async (id: string, file: string, o) => (await import('./env-archive.ts')).exportEnvironment(client(), id, file, o));

  env
    .command('import <file>')
    .description('make a new environment from an archive `berth env export` wrote, on any runner; prints its id')
    .option('--name <name>', "a name for it (default: the exported environment's)")
    .option('--runner-label <key=value>', 'a label the runner it goes to must carry (gpu=true), repeatable', runnerLabel)
    .option('--json', 'print JSON')
    .action(async (file: string, o) => (await import('./env-archive.ts')).importEnvironment(client(), file, o));

  env
    .command('cp <src> <dest>')
    .description('copy files in (LOCAL ID:PATH) or out (ID:PATH LOCAL)')
    .action(async (src: string, dest: string) => (await import('./cp.ts')).copy(client(), src, dest));
}
