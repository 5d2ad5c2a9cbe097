import { readFileSync } from 'node:fs';
import { InvalidArgumentError, type Command } from 'commander';
import type { ApiClient } from '../client.ts';
import { CliError, printJson, printTable } from '../output.ts';
import { labelsText, runnerLabel } from '../labels.ts';
import { CACHE_KINDS, isCacheKind, type CacheKind } from '../../shared/caches.ts';
import { formatSize, parseDuration } from '../../shared/units.ts';
import type { Prebuild, WarmPoolStatus } from '../../shared/prebuilds.ts';
import { prebuildLine } from './prebuild.ts';

type Client = () => ApiClient;

interface Project {
  id: string;
  name: string;
  repoUrl: string | null;
  defaultBranch: string;
  secrets: string[];
  work: { image?: string; setup?: string | (string | { run: string; incremental?: boolean; when?: string[] })[]; check?: string; limits?: { cpus?: number; memory?: string | number }; allowDomains?: string[]; env?: Record<string, string> };
  forge: { kind?: string; apiUrl?: string; tokenSecret?: string; app?: { appId: string; installationId: number; privateKeySecret: string }; deployKeySecret?: string; knownHosts?: string };
  agent: { kind?: string; model?: string; command?: string };
  registryLogins?: Record<string, string>;
  runnerLabels?: Record<string, string>;
  caches?: CacheKind[];
  warm?: number;
  prebuild?: { schedule?: string; timezone?: string; keep?: number; maxAge?: string; onPush?: boolean };
  archivedAt: string | null;
}
type ProjectShown = Project & { receives: { variables: string[]; egress: string[] }; cacheBytes?: Partial<Record<CacheKind, number>>; pool?: WarmPoolStatus; prebuilds?: { current: Prebuild | null; latest: Prebuild | null } };
interface ResolvedSpec {
  branch: string;
  commit: string;
  file: string | null;
  spec: Record<string, unknown>;
  sources: Record<string, string>;
  notes: string[];
}

const collect = (v: string, all: string[] = []) => [...all, v];
const cpus = (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('a positive number of CPUs, e.g. 2 or 0.5');
  return n;
};
const defined = <T extends object>(v: T) => Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined));

/** `--github-app 123:456:GITHUB_APP_KEY` → the project's App settings. */
function githubApp(value: string | undefined) {
  if (value === undefined) return undefined;
  const [appId, installation, privateKeySecret] = value.split(':');
  if (!appId || !installation || !privateKeySecret || !/^\d+$/.test(installation)) {
    throw new CliError('--github-app takes APP_ID:INSTALLATION_ID:KEY_SECRET, e.g. 123456:7890123:GITHUB_APP_KEY (store the key first with `berth secret set GITHUB_APP_KEY --from-file key.pem`)');
  }
  return { appId, installationId: Number(installation), privateKeySecret };
}

/** `--known-hosts FILE`: the file's lines, read here (the server never reads a client's path). */
function knownHosts(path: string | undefined): string | undefined {
  if (path === undefined) return undefined;
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new CliError(`cannot read ${path} (${(e as NodeJS.ErrnoException).code}): --known-hosts takes a file of known_hosts lines, such as \`ssh-keyscan -p PORT HOST > known_hosts\` writes`);
  }
}

/** `--registry-login ghcr.io=GHCR_LOGIN` (repeated) → { 'ghcr.io': 'GHCR_LOGIN' }. */
function registryLogins(values: string[] | undefined): Record<string, string> | undefined {
  if (values === undefined) return undefined;
  const logins: Record<string, string> = {};
  for (const v of values) {
    const [registry, secret, ...rest] = v.split('=');
    if (!registry || !secret || rest.length) throw new CliError(`--registry-login takes REGISTRY=SECRET, e.g. ghcr.io=GHCR_LOGIN (the secret holds USER:PASSWORD), not '${v}'`, 2);
    logins[registry.toLowerCase()] = secret;
  }
  return logins;
}

/** `--cache npm,pip` → ['npm', 'pip']. */
function cacheKinds(value: string): CacheKind[] {
  const kinds = value.split(',').map((k) => k.trim().toLowerCase()).filter(Boolean);
  const bad = kinds.find((k) => !isCacheKind(k));
  if (bad !== undefined || !kinds.length) throw new InvalidArgumentError(`caches are a comma-separated list of ${CACHE_KINDS.join(', ')}${bad ? `, not '${bad}'` : ''} (--no-cache for none)`);
  return kinds as CacheKind[];
}

/** `--warm 3` → 3: environments a project's warm pool keeps. */
function warmCount(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || n > 20) throw new InvalidArgumentError('a whole number of environments from 0 to 20 (0 for no warm pool)');
  return n;
}

/** `3 wanted: 2 ready, 1 starting, from prebuild pb_…`, or what keeps it empty. */
function poolText(p: ProjectShown): string | undefined {
  const pool = p.pool;
  if (!pool || (!pool.wanted && !pool.ready && !pool.starting && !pool.retiring)) return `none (berth project update ${p.name} --warm N)`;
  const parts = [`${pool.ready} ready`, pool.starting && `${pool.starting} starting`, pool.retiring && `${pool.retiring} being removed`].filter(Boolean).join(', ');
  const from = pool.prebuildId ? `, from prebuild ${pool.prebuildId}` : pool.wanted ? `: no ready prebuild yet (berth prebuild ${p.name})` : '';
  return `${pool.wanted} wanted: ${parts}${from}${pool.lastError ? ` (last refill failed: ${pool.lastError})` : ''}`;
}

/** The settings flags `create` and `update` share, with what each one says. */
function settingsOptions(c: Command): Command {
  return c
    .option('--default-branch <branch>', 'branch tasks start from and target')
    .option('--secret <name...>', "org secrets its environments receive as environment variables (with the project's own secrets, that is all they get)")
    .option('--image <image>', "image for its environments (overrides the repository's devcontainer/berth.yaml)")
    .option('--setup <cmd>', 'a setup command run after cloning (repeat for several)', collect)
    .option('--check <cmd>', 'the command that says whether a task is done, e.g. "npm test"')
    .option('--cpus <n>', 'CPUs for its environments', cpus)
    .option('--memory <size>', 'memory for its environments, e.g. 4g')
    .option('--allow-domain <domain...>', 'domains its environments may reach')
    .option('--forge <kind>', 'github, gitlab or git (default: from the URL)')
    .option('--forge-url <url>', 'API URL of GitHub Enterprise or a self-hosted GitLab')
    .option('--token-secret <name>', 'the secret holding the forge token (used on the runner, never inside environments)')
    .option('--github-app <appId:installationId:keySecret>', 'a GitHub App installation instead of a token: the App id, installation id and the secret holding its private key')
    .option('--deploy-key-secret <name>', 'SSH repositories: the secret holding the deploy key (private key, used on the runner, never inside environments)')
    .option('--known-hosts <file>', "SSH repositories: the server's host keys, a known_hosts file (ssh-keyscan -p PORT HOST; check the fingerprints)")
    .option('--registry-login <registry=secret>', "a registry's login for the images its environments pull, e.g. ghcr.io=GHCR_LOGIN (the secret holds USER:PASSWORD; repeat for several; replaces the list)", collect)
    .option('--agent <kind>', 'default agent for its tasks: builtin or command')
    .option('--model <model>', 'default model for its tasks')
    .option('--agent-command <cmd>', 'default command for --agent command')
    .option('--runner-label <key=value>', 'a label the runner of each of its tasks must carry (gpu=true), repeatable; replaces the labels', runnerLabel)
    .option('--cache <kinds>', `package caches its environments mount, kept per project: a list of ${CACHE_KINDS.join(',')}; replaces the list`, cacheKinds)
    .option('--no-cache', 'mount no package caches (their contents stay until the project is removed)')
    .option('--warm <n>', 'environments kept started from its newest prebuild, so a task claims one instead of starting one (0 to 20; 0 for none)', warmCount)
    .option('--prebuild-schedule <cron>', "a cron rule that queues a prebuild (five fields, UTC unless --prebuild-timezone), like '0 3 * * *'; 'off' for none")
    .option('--prebuild-timezone <zone>', 'the IANA zone the prebuild schedule is read in')
    .option('--prebuild-keep <n>', 'ready prebuilds kept; older ones expire (default 3)', (v: string) => {
      if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 100) throw new InvalidArgumentError('a whole number from 1 to 100');
      return Number(v);
    })
    .option('--prebuild-max-age <duration>', "ready prebuilds older than this expire, the newest excepted (like 7d or 12h); 'off' for no limit", (v: string) => {
      if (v !== 'off' && parseDuration(v) === undefined) throw new InvalidArgumentError("a duration like 7d, 12h or 90m, or 'off'");
      return v;
    })
    .option('--no-prebuild-on-push', 'a push to the default branch does not queue a prebuild')
    .option('--json', 'print the project as JSON');
}

/** The prebuild flags as a merge patch of settings.prebuild ('off' removes a field); undefined when none was given. */
function prebuildPatch(o: Record<string, any>): Record<string, unknown> | undefined {
  const p: Record<string, unknown> = {};
  if (o.prebuildSchedule !== undefined) p.schedule = o.prebuildSchedule === 'off' ? null : o.prebuildSchedule;
  if (o.prebuildTimezone !== undefined) p.timezone = o.prebuildTimezone;
  if (o.prebuildKeep !== undefined) p.keep = o.prebuildKeep;
  if (o.prebuildMaxAge !== undefined) p.maxAge = o.prebuildMaxAge === 'off' ? null : o.prebuildMaxAge;
  if (o.prebuildOnPush === false) p.onPush = false;
  return Object.keys(p).length ? p : undefined;
}

/** On create there is nothing to remove: 'off' is the same as not giving it. */
function prebuildOnCreate(o: Record<string, any>): Record<string, unknown> | undefined {
  const p = prebuildPatch(o);
  const set = p && Object.fromEntries(Object.entries(p).filter(([, v]) => v !== null));
  return set && Object.keys(set).length ? set : undefined;
}

/** `ready: pbd_… at abc (3m ago, 52 MB)`, the newest attempt when it failed, and the settings. */
function prebuildText(p: ProjectShown): string | undefined {
  const s = p.prebuild ?? {};
  const settings = [s.schedule ? `schedule ${s.schedule}${s.timezone ? ` ${s.timezone}` : ''}` : 'no schedule', `keep ${s.keep ?? 3}`, s.maxAge && `max age ${s.maxAge}`, s.onPush === false && 'not on push'].filter(Boolean).join(', ');
  if (!p.prebuilds) return undefined;
  const { current, latest } = p.prebuilds;
  const parts = [current ? `ready: ${prebuildLine(current)}` : `none ready (berth prebuild ${p.name})`];
  if (latest) parts.push(`newest attempt: ${prebuildLine(latest)}`);
  return `${parts.join('; ')} [${settings}]`;
}

/** The settings the flags name, as the API takes them; only what was given. */
function settingsFrom(o: Record<string, any>) {
  const limits = o.cpus !== undefined || o.memory !== undefined ? defined({ cpus: o.cpus, memory: o.memory }) : undefined;
  return {
    defaultBranch: o.defaultBranch,
    secrets: o.secret,
    work: defined({ image: o.image, setup: o.setup, check: o.check, allowDomains: o.allowDomain, limits }),
    forge: defined({ kind: o.forge, apiUrl: o.forgeUrl, tokenSecret: o.tokenSecret, app: githubApp(o.githubApp), deployKeySecret: o.deployKeySecret, knownHosts: knownHosts(o.knownHosts) }),
    agent: defined({ kind: o.agent, model: o.model, command: o.agentCommand }),
    registryLogins: registryLogins(o.registryLogin),
    runnerLabels: o.runnerLabel as Record<string, string> | undefined,
    caches: o.cache === false ? [] : (o.cache as CacheKind[] | undefined),
    warm: o.warm as number | undefined,
  };
}

/** What `update --unset NAME` clears: the flag's name → where the setting lives. */
const UNSET: Record<string, [section: 'work' | 'forge' | 'agent' | 'secrets', key?: string, sub?: string]> = {
  secret: ['secrets'],
  image: ['work', 'image'],
  setup: ['work', 'setup'],
  check: ['work', 'check'],
  cpus: ['work', 'limits', 'cpus'],
  memory: ['work', 'limits', 'memory'],
  'allow-domain': ['work', 'allowDomains'],
  forge: ['forge', 'kind'],
  'forge-url': ['forge', 'apiUrl'],
  'token-secret': ['forge', 'tokenSecret'],
  'github-app': ['forge', 'app'],
  'deploy-key-secret': ['forge', 'deployKeySecret'],
  'known-hosts': ['forge', 'knownHosts'],
  agent: ['agent', 'kind'],
  model: ['agent', 'model'],
  'agent-command': ['agent', 'command'],
};

function printProject(p: ProjectShown): void {
  const list = (names: string[] | undefined) => (names?.length ? names.join(', ') : 'none');
  const w = p.work;
  const setup = w.setup === undefined ? undefined : typeof w.setup === 'string' ? [w.setup] : w.setup;
  const forge = p.forge.app ? `${p.forge.kind ?? 'github'} (App ${p.forge.app.appId}, installation ${p.forge.app.installationId}, key in ${p.forge.app.privateKeySecret})` : [p.forge.kind ?? 'from the URL', p.forge.apiUrl, p.forge.tokenSecret && `token in ${p.forge.tokenSecret}`, p.forge.deployKeySecret && `deploy key in ${p.forge.deployKeySecret}`, p.forge.knownHosts && `${p.forge.knownHosts.split('\n').filter((l) => l.trim() && !l.startsWith('#')).length} known host key(s)`].filter(Boolean).join(', ');
  const rows: [string, string | undefined][] = [
    ['id', p.id],
    ['name', p.name],
    ['archived', p.archivedAt ? `${p.archivedAt} (removed while tasks refer to it)` : undefined],
    ['repository', `${p.repoUrl ?? '-'} @ ${p.defaultBranch}`],
    ['image', w.image ?? "the repository's, else the default"],
    ['setup', setup ? setup.map((x: string | { run: string; incremental?: boolean }) => (typeof x === 'string' ? x : `${x.run}${x.incremental ? ' (incremental)' : ''}`)).join(' && ') || 'none' : "the repository's"],
    ['check', w.check ?? "the repository's"],
    ['limits', w.limits && (w.limits.cpus !== undefined || w.limits.memory !== undefined) ? [w.limits.cpus !== undefined && `${w.limits.cpus} CPUs`, w.limits.memory !== undefined && `${w.limits.memory} memory`].filter(Boolean).join(', ') : "the repository's, else the default"],
    ['domains', w.allowDomains?.length ? w.allowDomains.join(', ') : undefined],
    ['forge', forge],
    ['agent', [p.agent.kind ?? 'builtin', p.agent.model && `model ${p.agent.model}`, p.agent.command && `command \`${p.agent.command}\``].filter(Boolean).join(', ')],
    ['registries', p.registryLogins && Object.keys(p.registryLogins).length ? Object.entries(p.registryLogins).map(([r, s]) => `${r} (login in ${s})`).join(', ') : undefined],
    ['runners', p.runnerLabels && Object.keys(p.runnerLabels).length ? `with labels ${labelsText(p.runnerLabels)}` : undefined],
    ['caches', p.caches?.length ? p.caches.map((k) => (p.cacheBytes?.[k] === undefined ? k : `${k} (${formatSize(p.cacheBytes[k])})`)).join(', ') : 'none (berth project update NAME --cache npm,pip,cargo,go,apt)'],
    ['prebuild', prebuildText(p)],
    ['warm pool', poolText(p)],
    ['secrets', list(p.secrets)],
    ['variables', list(p.receives.variables)],
    ['egress-only', list(p.receives.egress)],
  ];
  for (const [k, v] of rows) if (v !== undefined) process.stdout.write(`${k.padEnd(12)} ${v}\n`);
  process.stdout.write("Its environments receive these secrets only: the project's own and the org secrets it names, never the org's others.\n");
}

/** The environment a task would get, field by field, with where each value came from. */
function printSpec(r: ResolvedSpec): void {
  const show = (v: unknown): string => {
    if (v === null || v === undefined) return '-';
    if (Array.isArray(v)) return v.length ? v.map((x) => (typeof x === 'object' && x && 'name' in x && 'target' in x ? `${String(x.name)} at ${String(x.target)}` : String(x))).join(', ') : '-';
    if (typeof v === 'object') {
      const entries = Object.entries(v).filter(([, x]) => x !== undefined);
      return entries.length ? entries.map(([k, x]) => `${k}=${String(x)}`).join(', ') : '-';
    }
    return String(v);
  };
  process.stdout.write(`\nEnvironment spec (${r.branch} at ${r.commit.slice(0, 12)}, ${r.file ? `from the repository's ${r.file}` : 'the repository has no berth.yaml or devcontainer.json'}):\n`);
  const build = r.spec.build as { configDir?: string; dockerfile?: string; image?: string; features?: Record<string, unknown> } | undefined;
  const value = (field: string) => {
    if (field === 'setup' && Array.isArray(r.spec.setup)) return (r.spec.setup as string[]).join(' && ') || null;
    if (field === 'image' && !r.spec.image && build) {
      const base = build.dockerfile ? `built from ${[build.configDir, build.dockerfile].filter((p) => p && p !== '.').join('/')}` : `${build.image ?? 'default'}`;
      return `${base}${build.features ? ` + ${Object.keys(build.features).length} feature(s)` : ''}`;
    }
    return r.spec[field];
  };
  const rows = Object.entries(r.sources).map(([field, from]) => [field, show(value(field)), from]);
  const width = Math.min(48, Math.max(5, ...rows.map(([, v]) => v!.length)));
  for (const [field, value, from] of rows) process.stdout.write(`  ${field!.padEnd(16)} ${value!.padEnd(width)}  ← ${from}\n`);
  if (r.notes.length) {
    process.stdout.write('Not honoured:\n');
    for (const n of r.notes) process.stdout.write(`  - ${n}\n`);
  }
}

export function projectCommands(program: Command, client: Client): void {
  const project = program.command('project').description('repositories and how their environments are set up');
  settingsOptions(
    project
      .command('create <name>')
      .description('a project: a repository, how to set up and check it, its agent, forge and secrets')
      .requiredOption('--repo <url>', 'the repository: an https URL (a path on the server only for an instance administrator)'),
  ).action(async (name: string, o) => {
    const s = settingsFrom(o);
    const p = await client().request<Project>('POST', client().orgPath('projects'), { name, repoUrl: o.repo, ...s, defaultBranch: s.defaultBranch ?? 'main', prebuild: prebuildOnCreate(o) });
    if (o.json) printJson(p);
    else process.stdout.write(`${p.id} ${p.name}\n`);
  });

  settingsOptions(
    project
      .command('update <name>')
      .description('change a project: the flags given replace those settings, the rest stay (--setup, --secret and --allow-domain replace their whole list)')
      .option('--name <new-name>', 'rename it')
      .option('--repo <url>', 'a new repository (checked as on create)')
      .option('--unset <setting>', `clear a setting, back to the repository's file or the default (repeatable): ${[...Object.keys(UNSET), 'registry-login', 'runner-label'].join(', ')}`, collect),
  ).action(async (name: string, o) => {
    const s = settingsFrom(o);
    const body: Record<string, any> = defined({ name: o.name, repoUrl: o.repo, defaultBranch: s.defaultBranch, secrets: s.secrets, registryLogins: s.registryLogins, runnerLabels: s.runnerLabels, caches: s.caches, warm: s.warm });
    for (const section of ['work', 'forge', 'agent'] as const) if (Object.keys(s[section]).length) body[section] = { ...s[section] };
    const prebuild = prebuildPatch(o);
    if (prebuild) body.prebuild = prebuild;
    for (const what of (o.unset ?? []) as string[]) {
      if (what === 'runner-label') {
        if (s.runnerLabels) throw new CliError('give --runner-label or --unset runner-label, not both', 2);
        body.runnerLabels = {};
        continue;
      }
      if (what === 'registry-login') {
        if (s.registryLogins) throw new CliError('give --registry-login or --unset registry-login, not both', 2);
        body.registryLogins = {};
        continue;
      }
      const where = UNSET[what];
      if (!where) throw new CliError(`--unset takes one of ${Object.keys(UNSET).join(', ')}, not '${what}'`, 2);
      const [section, key, sub] = where;
      if (section === 'secrets') {
        if (s.secrets) throw new CliError('give --secret or --unset secret, not both', 2);
        body.secrets = [];
        continue;
      }
      const target = (body[section] ??= {}) as Record<string, any>;
      if (sub) {
        if (target[key!]?.[sub] !== undefined) throw new CliError(`give --${what} or --unset ${what}, not both`, 2);
        target[key!] = { ...target[key!], [sub]: null };
      } else {
        if (target[key!] !== undefined) throw new CliError(`give --${what} or --unset ${what}, not both`, 2);
        target[key!] = null;
      }
    }
    if (!Object.keys(body).length) throw new CliError(`nothing to change: give a setting to change (\`berth project update --help\` lists them), e.g. berth project update ${name} --check "npm test"`, 2);
    const p = await client().request<Project>('PATCH', client().orgPath(`projects/${encodeURIComponent(name)}`), body);
    if (o.json) printJson(p);
    else process.stdout.write(`${p.name} updated (\`berth project show ${p.name}\` shows it)\n`);
  });

  project
    .command('show <name>')
    .description("a project: its repository, setup, check, limits, agent, forge, exactly the secrets its environments receive, and the environment its tasks get (resolved from the repository's default branch, each field with its source)")
    .option('--json', 'print JSON')
    .action(async (name: string, o) => {
      const p = await client().request<ProjectShown>('GET', client().orgPath(`projects/${encodeURIComponent(name)}?usage=1`));
      // The resolved spec needs the repository: when it cannot be read, the settings still show, with why.
      let spec: ResolvedSpec | null = null;
      let specError: string | null = null;
      if (!p.archivedAt) {
        try {
          spec = await client().request<ResolvedSpec>('GET', client().orgPath(`projects/${encodeURIComponent(name)}/spec`));
        } catch (err) {
          specError = (err as Error).message;
        }
      }
      if (o.json) return printJson({ ...p, environment: spec, ...(specError !== null && { environmentError: specError }) });
      printProject(p);
      if (spec) printSpec(spec);
      else if (specError !== null) process.stdout.write(`\nThe environment spec could not be resolved: ${specError}\n`);
    });

  project
    .command('check <name>')
    .description("build the image the project's tasks run (its devcontainer Dockerfile and features) without a task, with the build log; reused while nothing that goes into it changed")
    .option('--json', 'print the result as JSON')
    .action(async (name: string, o) => (await import('./project-check.ts')).checkProject(client(), name, o));

  project
    .command('list')
    .alias('ls')
    .description("the org's projects")
    .option('--archived', 'also the removed projects that tasks still refer to')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const { items } = await client().request<{ items: Project[] }>('GET', `${client().orgPath('projects')}${o.archived ? '?archived=1' : ''}`);
      if (o.json) return printJson(items);
      printTable(['ID', 'NAME', 'REPOSITORY', 'SECRETS', ...(o.archived ? ['ARCHIVED'] : [])], items.map((p) => [p.id, p.name, p.repoUrl ?? '-', p.secrets.join(',') || '-', ...(o.archived ? [p.archivedAt?.slice(0, 10) ?? '-'] : [])]));
    });

  project
    .command('rm <name>')
    .description("remove a project (no environments may use it); one with tasks is archived so they keep their history, and its secrets are deleted")
    .option('--json', 'print JSON')
    .action(async (name: string, o) => {
      const r = await client().request<{ removed: 'deleted' | 'archived'; tasks: number }>('DELETE', client().orgPath(`projects/${encodeURIComponent(name)}`));
      if (o.json) return printJson(r);
      process.stdout.write(
        r.removed === 'deleted'
          ? `${name} deleted\n`
          : `${name} archived: its ${r.tasks} task(s) keep their history (\`berth project list --archived\` shows it); its secrets are deleted and the name is free\n`,
      );
    });
}
