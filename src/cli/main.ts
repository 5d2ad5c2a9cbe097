import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { VERSION } from '../shared/client-config.ts';
import { ApiClient } from './client.ts';
import { envCommands } from './commands/env.ts';
import { imageCommands } from './commands/image.ts';
import { orgCommands } from './commands/org.ts';
import { secretCommands } from './commands/secret.ts';
import { auditCommands } from './commands/audit.ts';
import { taskCommands } from './commands/task.ts';
import { policyCommands } from './commands/policy.ts';
import { runnerCommands } from './commands/runner.ts';
import { clientConfig, dataDir } from './config.ts';
import { CliError } from './output.ts';

const program = new Command('berth')
  .description('Berth: sandboxed, persistent environments for background coding agents')
  .version(VERSION)
  .option('--data-dir <dir>', 'where Berth keeps its state (default $BERTH_DATA_DIR or ~/.berth)')
  .option('--org <org>', 'the org to act in (default $BERTH_ORG, or the one `berth up` set up)')
  .option('--debug', 'print stack traces')
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride();

const globals = () => program.opts<{ dataDir?: string; debug?: boolean; org?: string }>();
let cached: ApiClient | undefined;
const client = () => (cached ??= new ApiClient(clientConfig(dataDir(globals().dataDir), globals().org)));

program
  .command('up')
  .description('run the control plane, the embedded database and a local runner in this process')
  .option('--port <port>', 'port to listen on', (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('a port is a whole number from 0 to 65535');
    return n;
  }, 7070)
  .option('--host <address>', 'address to listen on', '127.0.0.1')
  .action(async (o) => {
    // Loaded only here: the server's dependencies would slow every other command.
    const { up } = await import('./commands/up.ts');
    await up({ port: o.port, host: o.host, dataDir: dataDir(globals().dataDir) });
  });

envCommands(program, client);
orgCommands(program, client);
secretCommands(program, client);
auditCommands(program, client);
imageCommands(program, client);
taskCommands(program, client);
policyCommands(program, client);
runnerCommands(program, client);

try {
  await program.parseAsync();
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode;
  } else {
    const debug = globals().debug || process.env.BERTH_DEBUG === '1';
    process.stderr.write(`berth: ${debug && err instanceof Error ? err.stack : err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = err instanceof CliError ? err.exitCode : 1;
  }
}
