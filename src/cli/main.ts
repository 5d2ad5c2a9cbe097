// The `berth` command line. Startup time matters (every call pays it), so this file loads only
// commander and a few small modules; each command module loads when the command line names it
// (COMMANDS below), and config.ts (the sign-in) just before an action runs.
import { Argument, Command, CommanderError, InvalidArgumentError } from 'commander';
import { VERSION } from '../shared/client-config.ts';
import { ApiClient } from './client.ts';
import { errorLine } from './errors.ts';
import { CliError, EXIT, paint } from './output.ts';

// `berth task logs ID | head -1`: when the reader goes away, stop quietly (no EPIPE stack).
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE' && stream === process.stdout) process.stderr.write(`berth: cannot write the output: ${err.message}\n`);
    process.exit(err.code === 'EPIPE' ? EXIT.ok : EXIT.error);
  });
}

const program = new Command('berth')
  .description('Berth: sandboxed, persistent environments for background coding agents')
  .version(VERSION)
  .option('--data-dir <dir>', 'where Berth keeps its state (default $BERTH_DATA_DIR or ~/.berth)')
  .option('--org <org>', 'the org to act in (default $BERTH_ORG, or the one `berth up` set up)')
  .option('--debug', 'print stack traces')
  .showHelpAfterError('(run with --help for usage)')
  .configureOutput({ outputError: (text, write) => write(paint('red', text, process.stderr)) })
  .addHelpText(
    'after',
    `
Exit status:
  0  done
  1  failed (anything not below)
  2  usage: an unknown command or flag, or a value a flag or argument does not take
  3  not found: no such environment, task, project, …
  4  not signed in, or not allowed (the token's role, the org's policy)

Completion: source <(berth completion bash), or zsh, or fish.
Colour: on a terminal; NO_COLOR=1 turns it off, FORCE_COLOR=1 keeps it when piped.`,
  )
  .exitOverride();
export { program };

/** The command that ran (preAction), so an error can speak in its flags. */
let ran: Command | undefined;
// Loaded before an action, not for --version or --help: the sign-in is all most commands need of it.
let configModule: typeof import('./config.ts') | undefined;
program.hook('preAction', async (_, actionCommand) => {
  ran = actionCommand;
  configModule ??= await import('./config.ts');
});

const globals = () => program.opts<{ dataDir?: string; debug?: boolean; org?: string }>();
let cached: ApiClient | undefined;
const config = (): ReturnType<typeof import('./config.ts').clientConfig> => configModule!.clientConfig(globals().dataDir, globals().org);
const dataDir = (flag?: string) => configModule!.dataDir(flag);
const client = () => (cached ??= new ApiClient(config()));

program
  .command('up')
  .description('run the control plane, the embedded database and a local runner in this process')
  .option('--port <port>', 'port to listen on', (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('a port is a whole number from 0 to 65535');
    return n;
  }, 7070)
  .option('--host <address>', 'address to listen on', '127.0.0.1')
  .option('--extra-ca <file>', 'a company CA certificate (PEM) that environments, the egress proxy, pulls and git trust; repeatable (also $BERTH_EXTRA_CA_CERTS, comma-separated)', (v: string, all: string[]) => [...all, v], [] as string[])
  .option('--trusted-network <cidr>', 'a company network that names allowed by a policy may resolve into (10.20.0.0/16); repeatable (else $BERTH_EGRESS_TRUSTED_NETWORKS, comma-separated)', (v: string, all: string[]) => [...all, v], [] as string[])
  .option('--upstream-proxy <url>', 'the company proxy allowed requests go through, http://[user:password@]host:port (else $BERTH_EGRESS_UPSTREAM_PROXY)')
  .option('--no-runner', 'run the control plane only: environments go to runners that join it (`berth runner join`)')
  .action(async (o) => {
    // Loaded only here: the server's dependencies would slow every other command.
    const { up } = await import('./commands/up.ts');
    await up({ port: o.port, host: o.host, dataDir: dataDir(globals().dataDir), extraCa: o.extraCa, trustedNetworks: o.trustedNetwork, upstreamProxy: o.upstreamProxy, noRunner: o.runner === false });
  });

program
  .command('completion')
  .description('print a shell completion script: source <(berth completion bash), or zsh, or fish')
  .addArgument(new Argument('<shell>', 'bash, zsh or fish').choices(['bash', 'zsh', 'fish']))
  .action(async (shell: 'bash' | 'zsh' | 'fish') => {
    await loadAllCommands();
    const { completionScript } = await import('./completion.ts');
    process.stdout.write(completionScript(program, shell));
  });

type Register = () => Promise<void>;
const once = (register: Register): Register => {
  let done: Promise<void> | undefined;
  return () => (done ??= register());
};
// An empty BERTH_ORG is no org.
const org = () => globals().org || process.env.BERTH_ORG || undefined;
const auth = once(async () => (await import('./commands/auth.ts')).authCommands(program, client, config, org));
const env = once(async () => (await import('./commands/env.ts')).envCommands(program, client));
const orgs = once(async () => (await import('./commands/org.ts')).orgCommands(program, client));
const secret = once(async () => (await import('./commands/secret.ts')).secretCommands(program, client));
const project = once(async () => (await import('./commands/project.ts')).projectCommands(program, client));
const audit = once(async () => (await import('./commands/audit.ts')).auditCommands(program, client));
const image = once(async () => (await import('./commands/image.ts')).imageCommands(program, client));
const task = once(async () => (await import('./commands/task.ts')).taskCommands(program, client));
const policy = once(async () => (await import('./commands/policy.ts')).policyCommands(program, client));
const runner = once(async () => (await import('./commands/runner.ts')).runnerCommands(program, client));
const model = once(async () => (await import('./commands/model.ts')).modelCommands(program, client));
const integration = once(async () => (await import('./commands/integration.ts')).integrationCommands(program, client));
const schedule = once(async () => (await import('./commands/schedule.ts')).scheduleCommands(program, client));
const trigger = once(async () => (await import('./commands/trigger.ts')).triggerCommands(program, client));
const snapshot = once(async () => (await import('./commands/snapshot.ts')).snapshotCommands(program, client));
const prebuild = once(async () => (await import('./commands/prebuild.ts')).prebuildCommands(program, client));
const campaign = once(async () => (await import('./commands/campaign.ts')).campaignCommands(program, client));
const backup = once(async () => (await import('./commands/backup.ts')).backupCommands(program, () => dataDir(globals().dataDir)));

/**
 * Each top-level word and the module that registers it. A command line loads only the module
 * of its first word; a word not here (help, a typo, a command someone forgot to list) loads
 * them all, so a missing entry costs startup time, never the command. Add new commands here.
 */
const COMMANDS: Record<string, Register> = {
  login: auth, logout: auth, whoami: auth,
  env,
  org: orgs, member: orgs, token: orgs,
  secret,
  project,
  audit,
  image,
  run: task, task,
  policy,
  runner,
  model,
  integration,
  schedule,
  trigger,
  snapshot,
  prebuild,
  campaign,
  backup, restore: backup,
};

/** Every command, in the order `berth --help` lists them: for help, completion and tests. */
export async function loadAllCommands(): Promise<Command> {
  for (const register of new Set(Object.values(COMMANDS))) await register();
  return program;
}

/** The first word that is not an option (or the value of a global one). */
function commandWord(args: string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') return args[i + 1];
    if (a === '--data-dir' || a === '--org') i++;
    else if (!a.startsWith('-')) return a;
  }
  return undefined;
}

async function main(args: string[]): Promise<void> {
  const word = commandWord(args);
  if (word && COMMANDS[word]) await COMMANDS[word]();
  else if (word !== 'up' && word !== 'completion' && !(word === undefined && args.some((a) => a === '-V' || a === '--version'))) await loadAllCommands();
  await program.parseAsync(args, { from: 'user' });
}

/** Runs one command line and sets the exit status: bin/berth (through bundle.ts) and `node src/cli/main.ts`. */
export async function run(args: string[]): Promise<void> {
  try {
    await main(args);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and --version end with 0; every other commander error is about how it was called.
      process.exitCode = err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    } else {
      const debug = globals().debug || process.env.BERTH_DEBUG === '1';
      const line = debug && err instanceof Error ? err.stack : errorLine(err, ran);
      process.stderr.write(`${paint('red', 'berth:', process.stderr)} ${line}\n`);
      process.exitCode = err instanceof CliError ? err.exitCode : EXIT.error;
    }
  }
}

// Not awaited: the bundle (CommonJS, see scripts/build-cli.ts) has no top-level await; run() catches all.
if (import.meta.main) void run(process.argv.slice(2));
