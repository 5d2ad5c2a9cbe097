import { getCACertificates, setDefaultCACertificates } from 'node:tls';
import pino from 'pino';
import { loadCompanyCas } from '../../runner/network/index.ts';
import { startBerth } from '../../server/index.ts';
import { Spinner } from '../output.ts';

export interface UpOptions {
  port: number;
  host: string;
  dataDir: string;
  /** --extra-ca files, added to BERTH_EXTRA_CA_CERTS's. */
  extraCa?: string[] | undefined;
  /** --trusted-network (replaces BERTH_EGRESS_TRUSTED_NETWORKS when given) and --upstream-proxy. */
  trustedNetworks?: string[] | undefined;
  upstreamProxy?: string | undefined;
  /** --no-runner: a control plane only; runners join it with `berth runner join`. */
  noRunner?: boolean | undefined;
}

export async function up(opts: UpOptions): Promise<void> {
  const logger = pino({ level: process.env.BERTH_LOG_LEVEL ?? 'info' }, pino.destination(2));
  let spinner: Spinner | undefined;
  const extraCaFiles = [...(opts.extraCa ?? []), ...(process.env.BERTH_EXTRA_CA_CERTS ?? '').split(',').map((f) => f.trim()).filter(Boolean)];
  // This process's own TLS (forge and model APIs, sign-in, the default image's downloads) trusts them too.
  const companyCas = loadCompanyCas(extraCaFiles);
  if (companyCas.length) setDefaultCACertificates([...getCACertificates('default'), ...companyCas.map((c) => c.pem)]);
  const berth = await startBerth({
    extraCaFiles,
    egressNetwork: { trustedNetworks: opts.trustedNetworks, upstreamProxy: opts.upstreamProxy },
    dataDir: opts.dataDir,
    noRunner: opts.noRunner,
    port: opts.port,
    host: opts.host,
    databaseUrl: process.env.DATABASE_URL,
    imageDir: process.env.BERTH_IMAGE_DIR,
    logger,
    onImageProgress: ({ message, fraction }) => {
      const text = `building the default image: ${message}${fraction === undefined ? '' : ` (${Math.round(fraction * 100)}%)`}`;
      if (spinner) spinner.update(text);
      else spinner = new Spinner(text);
    },
  });
  spinner?.done('default image ready');

  // A one-time link for the web UI: the token itself stays in client.json, out of the terminal.
  const signIn = await berth.signInLink();
  process.stderr.write(
    `Berth is up at ${berth.url} (${berth.database.kind} database, ${opts.noRunner ? 'no local runner: join runners with `berth runner token create` and `berth runner join`' : `${berth.runner.backend.name} runtime`})\n` +
      `  data dir: ${opts.dataDir}\n` +
      `  CLI: signed in as the local administrator (owner of 'default'), token in ${berth.clientConfigPath}; \`berth whoami\` says so\n` +
      `  web UI: open ${signIn} to sign in (works once, for an hour); \`berth login --print-token\` prints the token to paste instead\n` +
      `  try: berth env create --name demo && berth env exec demo -- uname -a\n` +
      `Press Ctrl-C to stop; environments keep their files and are found again on the next start.\n`,
  );

  let closing = false;
  const shutdown = async (signal: string) => {
    if (closing) return;
    closing = true;
    logger.info({ signal }, 'shutting down');
    await berth.close();
    process.exit(0);
  };
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
}
