import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { ApiClient } from '../client.ts';
import { age, CliError, printJson, printTable } from '../output.ts';

type Client = () => ApiClient;
interface ProjectShown {
  id: string;
  name: string;
  repoUrl: string | null;
  defaultBranch: string;
  secrets: string[];
  receives: { variables: string[]; egress: string[] };
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** `--github-app 123:456:GITHUB_APP_KEY` → the project's App settings. */
function githubApp(value: string | undefined) {
  if (value === undefined) return undefined;
  const [appId, installation, privateKeySecret] = value.split(':');
  if (!appId || !installation || !privateKeySecret || !/^\d+$/.test(installation)) {
    throw new CliError('--github-app takes APP_ID:INSTALLATION_ID:KEY_SECRET, e.g. 123456:7890123:GITHUB_APP_KEY (store the key first with `berth secret set GITHUB_APP_KEY --from-file key.pem`)');
  }
  return { appId, installationId: Number(installation), privateKeySecret };
}

export function secretCommands(program: Command, client: Client): void {
  const secret = program.command('secret').description('secrets for environments (values are write-only)');
  secret
    .command('set <name>')
    .description('set a secret from standard input or a file, never from the command line')
    .option('--project <project>', 'only for this project (default: the whole org)')
    .option('--from-file <path>', 'read the value from this file')
    .option('--egress-only', 'never give it to environments: the egress proxy adds it to requests to --host')
    .option('--host <host>', 'with --egress-only: the one host it is sent to')
    .option('--path-prefix <prefix>', 'with --egress-only: only for paths under this prefix, e.g. /v1')
    .option('--header <name>', 'with --egress-only: the header it goes in (default Authorization)')
    .option('--format <format>', "with --egress-only: the header value, {value} standing for the secret (default 'Bearer {value}')")
    .action(async (name: string, o) => {
      if (Boolean(o.egressOnly) !== Boolean(o.host)) throw new CliError('--egress-only and --host go together: berth secret set NAME --egress-only --host api.example.com');
      if (!o.egressOnly && (o.pathPrefix || o.header || o.format)) throw new CliError('--path-prefix, --header and --format are for --egress-only secrets');
      if (!o.fromFile && process.stdin.isTTY) {
        throw new CliError(`pipe the value in (printf %s "$VALUE" | berth secret set ${name}) or use --from-file PATH: values never go on the command line`);
      }
      let value = o.fromFile ? readFileSync(o.fromFile, 'utf8') : await readStdin();
      // A trailing newline from echo or a file is almost never part of a token.
      value = value.replace(/\r?\n$/, '');
      await client().request('PUT', client().orgPath(`secrets/${encodeURIComponent(name)}`), {
        value,
        project: o.project,
        egress: o.egressOnly ? { host: o.host, pathPrefix: o.pathPrefix, header: o.header, format: o.format } : undefined,
      });
      process.stdout.write(`${name} set${o.project ? ` for project ${o.project}` : ''}${o.egressOnly ? ` (egress-only, for ${o.host})` : ''}\n`);
    });
  secret
    .command('list')
    .alias('ls')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const { items } = await client().request<{ items: { name: string; project: string | null; updatedAt: string; updatedBy: string }[] }>('GET', client().orgPath('secrets'));
      if (o.json) return printJson(items);
      printTable(['NAME', 'PROJECT', 'UPDATED', 'BY'], items.map((s) => [s.name, s.project ?? '(org)', `${age(s.updatedAt)} ago`, s.updatedBy]));
    });
  secret
    .command('rm <name>')
    .option('--project <project>', 'the project the secret belongs to')
    .action(async (name: string, o) => {
      const q = o.project ? `?project=${encodeURIComponent(o.project)}` : '';
      await client().request('DELETE', client().orgPath(`secrets/${encodeURIComponent(name)}${q}`));
      process.stdout.write(`${name} removed\n`);
    });

  const project = program.command('project').description('repositories and how their environments are set up');
  project
    .command('create <name>')
    .option('--repo <url>', 'repository URL')
    .option('--default-branch <branch>', 'default branch', 'main')
    .option('--secret <name...>', 'secrets its environments receive as environment variables')
    .option('--image <image>', 'image for its environments (overrides the repository\'s devcontainer/berth.yaml)')
    .option('--setup <cmd>', 'a setup command run after cloning (repeat for several)', (v: string, all: string[] = []) => [...all, v])
    .option('--check <cmd>', 'the command that says whether a task is done, e.g. "npm test"')
    .option('--cpus <n>', 'CPUs for its environments', Number)
    .option('--memory <size>', 'memory for its environments, e.g. 4g')
    .option('--allow-domain <domain...>', 'domains its environments may reach')
    .option('--forge <kind>', 'github, gitlab or git (default: from the URL)')
    .option('--forge-url <url>', 'API URL of GitHub Enterprise or a self-hosted GitLab')
    .option('--token-secret <name>', 'the secret holding the forge token (used on the runner, never inside environments)')
    .option('--github-app <appId:installationId:keySecret>', 'a GitHub App installation instead of a token: the App id, installation id and the secret holding its private key')
    .option('--agent <kind>', 'default agent for its tasks: builtin or command')
    .option('--model <model>', 'default model for its tasks')
    .option('--agent-command <cmd>', 'default command for --agent command')
    .option('--json', 'print JSON')
    .action(async (name: string, o) => {
      const defined = <T extends object>(v: T) => Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined));
      const p = await client().request<{ id: string; name: string }>('POST', client().orgPath('projects'), {
        name,
        repoUrl: o.repo,
        defaultBranch: o.defaultBranch,
        secrets: o.secret,
        work: defined({
          image: o.image,
          setup: o.setup,
          check: o.check,
          allowDomains: o.allowDomain,
          limits: o.cpus !== undefined || o.memory !== undefined ? defined({ cpus: o.cpus, memory: o.memory }) : undefined,
        }),
        forge: defined({ kind: o.forge, apiUrl: o.forgeUrl, tokenSecret: o.tokenSecret, app: githubApp(o.githubApp) }),
        agent: defined({ kind: o.agent, model: o.model, command: o.agentCommand }),
      });
      if (o.json) printJson(p);
      else process.stdout.write(`${p.id} ${p.name}\n`);
    });
  project
    .command('show <name>')
    .description('a project, and exactly the secrets its environments receive')
    .option('--json', 'print JSON')
    .action(async (name: string, o) => {
      const p = await client().request<ProjectShown>('GET', client().orgPath(`projects/${encodeURIComponent(name)}`));
      if (o.json) return printJson(p);
      const list = (names: string[]) => (names.length ? names.join(', ') : 'none');
      const rows: [string, string][] = [
        ['id', p.id],
        ['name', p.name],
        ['repository', `${p.repoUrl ?? '-'} @ ${p.defaultBranch}`],
        ['secrets', list(p.secrets)],
        ['variables', list(p.receives.variables)],
        ['egress-only', list(p.receives.egress)],
      ];
      for (const [k, v] of rows) process.stdout.write(`${k.padEnd(12)} ${v}\n`);
      process.stdout.write("Its environments receive these secrets only: the project's own and the org secrets it names, never the org's others.\n");
    });
  project
    .command('list')
    .alias('ls')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const { items } = await client().request<{ items: { id: string; name: string; repoUrl: string | null; secrets: string[] }[] }>('GET', client().orgPath('projects'));
      if (o.json) return printJson(items);
      printTable(['ID', 'NAME', 'REPOSITORY', 'SECRETS'], items.map((p) => [p.id, p.name, p.repoUrl ?? '-', p.secrets.join(',') || '-']));
    });
}
