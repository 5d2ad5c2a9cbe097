import { SnapshotService } from './snapshots/service.ts';
import { WarmPoolService } from './prebuilds/warm-pool.ts';
import { PrebuildBuilder, PrebuildService } from './prebuilds/index.ts';
import { CampaignForge, CampaignScheduler, CampaignService } from './campaigns/index.ts';
import type { PipelineDeps } from './tasks/index.ts';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import { ImageBuilder, ImageStore, LlmGateway, LocalRunner, probeHost, upstreamsFromEnv, type ImageProgress, type RegistryMirrors, type Runner } from '../runner/index.ts';
import { CLIENT_CONFIG_FILE, VERSION, type ClientConfig } from '../shared/client-config.ts';
import { buildApp, type App } from './app.ts';
import { ensureBootstrap, TokenService } from './auth.ts';
import { invitePath, InviteService } from './invites.ts';
import { Authorizer } from './authz.ts';
import { AuditKey, AuditLog, WebhookSink } from './audit/index.ts';
import { OidcSignIn, oidcConfigFromEnv, PendingSignIns, type OidcConfig } from './oidc/index.ts';
import { SecretBox } from './secrets/crypto.ts';
import { SecretService } from './secrets/service.ts';
import { ModelSettingsService } from './models/service.ts';
import { openDatabase, type DatabaseHandle } from './db/index.ts';
import { CHANNELS } from './db/notify.ts';
import { EnvironmentService } from './environments/service.ts';
import { RunnerWorkers, sandboxGateway, TaskEvents, TaskService, TaskWorker } from './tasks/index.ts';
import { PolicyService } from './policy/index.ts';
import { NetworkEventRecorder, NetworkEventRetention, retentionFrom, stormSettingsFrom, type StormSettings } from './network-events/index.ts';
import { DenialAdvisor } from './tasks/denials.ts';
import { loadCompanyCas, writeHostTrust, type RunnerNetworkOptions } from '../runner/network/index.ts';
import { egressNetworkConfigFrom, summarizeEgressNetwork, type EgressNetworkConfig } from '../runner/network/company.ts';
import { modelClientFromEnv } from '../agent/index.ts';
import { RepoAccess, repoAccessFromEnv, type RepoAccessConfig } from '../forges/index.ts';
import { routeHostFetch } from '../forges/upstream.ts';
import { availableParallelism, hostname } from 'node:os';
import { JoinedRunners, RunnerHeartbeat, RunnerPool, RunnerRegistry, RunnerSweeper, RunnerTokenService, runnerMemoryFrom, runnerOfflineAfterFrom, taskRetriesFrom } from './runners/index.ts';
import { ReplicaRelay } from './runners/relay.ts';
import { runnerConfigFrom } from '../runner/config.ts';
import { invalid } from '../shared/errors.ts';
import { Observability, observabilitySettingsFrom, type ObservabilityOptions } from './observability/index.ts';
import { Triggers } from './triggers/index.ts';
import { TRIGGER_SOURCES } from './triggers/sources.ts';


export { CLIENT_CONFIG_FILE, VERSION, type ClientConfig };

export interface StartOptions {
  /** After how long without a heartbeat a prebuild's builder is taken for dead (tests shorten it); a minute by default. */
  prebuildStaleAfterMs?: number | undefined;
  dataDir: string;
  port?: number;
  host?: string;
  databaseUrl?: string | undefined;
  /** Where images are cached; defaults to DATA_DIR/images. Tests share one cache. */
  imageDir?: string | undefined;
  /**
   * Registries pulls may reach on loopback or private addresses, `host` or `host:port`
   * (BERTH_ALLOWED_REGISTRIES, comma-separated); every other registry must be on a public address.
   */
  allowedRegistries?: string[] | undefined;
  /** Where a registry's images are pulled from instead; by default from BERTH_REGISTRY_MIRRORS (docker.io=https://mirror.corp,…). */
  registryMirrors?: RegistryMirrors | undefined;
  /**
   * `berth up --trusted-network` (repeatable) and `--upstream-proxy`; when absent, the
   * BERTH_EGRESS_TRUSTED_NETWORKS and BERTH_EGRESS_UPSTREAM_PROXY variables (company.ts).
   */
  egressNetwork?: { trustedNetworks?: string[] | undefined; upstreamProxy?: string | undefined } | undefined;
  /** The most one image may unpack to (BERTH_MAX_IMAGE_SIZE, default 32g). */
  maxImageBytes?: number | undefined;
  logger?: Logger;
  /** How often idle timeouts and lifetimes are checked. */
  sweepIntervalMs?: number;
  /** Called while the default image is built on first start. */
  onImageProgress?: ImageProgress;
  /** Sign-in with an identity provider; by default from the BERTH_OIDC_* variables. */
  oidc?: OidcConfig;
  /** Requests per minute one token may make (BERTH_TOKEN_RATE_LIMIT, default 6000). */
  tokenRateLimit?: number;
  /** Failed authentications per minute from one client address before it gets 429 (BERTH_AUTH_FAILURE_LIMIT, default 30; 0 turns it off). */
  authFailureLimit?: number;
  /** Where model settings come from (OPENAI_*, ANTHROPIC_*, BERTH_MODEL); process.env by default. */
  modelEnv?: NodeJS.ProcessEnv;
  /** Tasks this runner works on at once (BERTH_TASK_CONCURRENCY, default 2 per core); the rest wait queued. */
  taskConcurrency?: number;
  /** Test and benchmark knobs for the runner's network (an injectable resolver, private addresses to allow). */
  network?: Partial<Omit<RunnerNetworkOptions, 'policies' | 'events'>>;
  /** Denial storms: when a hint is written and a command stopped (default: BERTH_DENIAL_STORM_THRESHOLD, BERTH_DENIAL_FAIL_FAST). */
  denialStorms?: StormSettings;
  /** The URL people use to reach this Berth, for links in pull requests (BERTH_PUBLIC_URL; default the listen address). */
  publicUrl?: string;
  /** The URL other replicas reach this one at, for the runners it holds (BERTH_REPLICA_URL; default the listen address). */
  replicaUrl?: string | undefined;
  /** How often the local runner writes its heartbeat (default 5 s). */
  runnerHeartbeatMs?: number;
  /** A runner whose heartbeat is older than this is offline: its environments lost, its tasks moved (BERTH_RUNNER_OFFLINE_AFTER, default 15 s). */
  runnerOfflineAfterMs?: number | undefined;
  /** Times a task whose runner went offline starts over on another runner before it fails (BERTH_TASK_RETRIES, default 2). */
  taskRetries?: number | undefined;
  /** The memory berth up's own runner offers to environments (BERTH_RUNNER_MEMORY; default the host's): placement never puts more limits on it. */
  runnerMemoryBytes?: number | undefined;
  /** Less free space on the data directory's disk makes the runner degraded (BERTH_MIN_FREE_DISK, default 2g). */
  minFreeDiskBytes?: number;
  /**
   * Which repositories may be named and reached from the host: directories for repositories
   * on this host (BERTH_LOCAL_REPOS) and private git hosts (BERTH_ALLOWED_GIT_HOSTS). By
   * default from those variables; none of either when unset.
   */
  repos?: RepoAccessConfig;
  /**
   * PEM files of company CAs (BERTH_EXTRA_CA_CERTS, comma-separated; `berth up --extra-ca`):
   * trusted by every environment and by the proxy, pulls and host-side git upstream.
   */
  extraCaFiles?: string[] | undefined;
  /**
   * `berth up --no-runner`: a control plane only. Environments go to runners that join
   * (`berth runner join`); `runner` then throws, and the image routes answer 409.
   */
  noRunner?: boolean | undefined;
  /**
   * berth up's own runner, instead of a LocalRunner (tests' FakeRunner): it is put in the pool
   * and works on tasks as the LocalRunner would; `runner` then throws, as with noRunner.
   */
  runner?: Runner | undefined;
  /**
   * Metrics and traces: `metricsToken` (BERTH_METRICS_TOKEN) guards /metrics on the main port,
   * `metricsListen` (BERTH_METRICS_LISTEN, host:port) serves it on a listener of its own, and
   * `otlpEndpoint` (BERTH_OTEL_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT) turns traces on.
   */
  observability?: ObservabilityOptions | undefined;
  /** The clock schedules read (tests inject one to cross a daylight-saving change); the system's by default. */
  clock?: (() => Date) | undefined;
}

/** Trusted networks and the upstream proxy from berth up's flags or the BERTH_EGRESS_* variables; a wrong one stops the start. */
function egressNetworkFrom(opts: StartOptions): EgressNetworkConfig {
  try {
    return egressNetworkConfigFrom({ ...opts.egressNetwork, env: process.env, controlPlanePort: opts.port ?? 7070 });
  } catch (err) {
    throw invalid((err as Error).message);
  }
}

/** BERTH_AUDIT_WEBHOOK (and BERTH_AUDIT_WEBHOOK_SECRET) send every audit entry to a SIEM. */
function auditSinks() {
  const url = process.env.BERTH_AUDIT_WEBHOOK;
  return url ? [new WebhookSink({ url, secret: process.env.BERTH_AUDIT_WEBHOOK_SECRET })] : [];
}

export interface RunningBerth {
  url: string;
  app: App;
  database: DatabaseHandle;
  environments: EnvironmentService;
  tasks: TaskService;
  /** Task transcripts: appended and followed on any replica. */
  taskEvents: TaskEvents;
  worker: TaskWorker;
  /** berth up's own LocalRunner; throws with `noRunner` or `runner`. */
  runner: LocalRunner;
  /** Runners on other hosts connected to this process (`berth runner join`). */
  joinedRunners: JoinedRunners;
  /** Metrics, probes and traces (observability/index.ts). */
  observability: Observability;
  /** Every runner this process reaches: its own and those joined over the network. */
  runners: RunnerPool;
  /** The file other `berth` commands read to reach this control plane. */
  clientConfigPath: string;
  /** Webhooks, schedules, integrations and the replies to issues and threads (triggers/). */
  triggers: Triggers;
  /** Projects' warm pools: environments from their newest prebuild that tasks claim (prebuilds/warm-pool.ts). */
  warmPools: WarmPoolService;
  /** Projects' prebuilds and the builder that makes them (prebuilds/). */
  prebuilds: PrebuildService;
  prebuildBuilder: PrebuildBuilder;
  /** Campaigns and the scheduler that starts and settles their tasks (campaigns/). */
  campaigns: CampaignService;
  campaignScheduler: CampaignScheduler;
  /** Campaigns' change requests on their forges: read back every minute, and approved (campaigns/forge.ts). */
  campaignForge: CampaignForge;
  /** A one-time link that signs the local administrator in to the web UI (`berth up` prints one). */
  signInLink(ttlMs?: number): Promise<string>;
  close(): Promise<void>;
}


/** `berth up`: control plane, embedded (or server) database and a local runner in one process. */
export async function startBerth(opts: StartOptions): Promise<RunningBerth> {
  // Checked before anything is made: a wrong file stops the start with its name.
  // The runner's settings, read once and checked (runner/config.ts): a wrong one stops the start.
  const runnerConfig = runnerConfigFrom(process.env, { allowedRegistries: opts.allowedRegistries, extraCaFiles: opts.extraCaFiles, maxImageBytes: opts.maxImageBytes, minFreeDiskBytes: opts.minFreeDiskBytes, taskConcurrency: opts.taskConcurrency });
  const companyCas = loadCompanyCas(runnerConfig.extraCaFiles);
  // Checked before anything is made too: trusted networks and the upstream proxy.
  const egressNetwork = egressNetworkFrom(opts);
  // And the metrics and traces settings.
  const observabilitySettings = observabilitySettingsFrom(opts.observability ?? {}, process.env);
  mkdirSync(opts.dataDir, { recursive: true, mode: 0o700 });
  const logger = opts.logger ?? pino({ level: process.env.BERTH_LOG_LEVEL ?? 'info' });
  if (egressNetwork.trustedNetworks.length || egressNetwork.upstreamProxy) logger.info(summarizeEgressNetwork(egressNetwork), 'egress: trusted networks and upstream proxy');
  const hostTrust = companyCas.length ? writeHostTrust(join(opts.dataDir, 'trust'), companyCas) : undefined;
  if (companyCas.length) logger.info({ cas: companyCas.map((c) => ({ file: c.file, subject: c.subject })) }, 'trusting company CAs in environments, the egress proxy, pulls and host-side git');
  const networkEventRetention = retentionFrom(process.env.BERTH_NETWORK_EVENT_RETENTION);
  const stormSettings = opts.denialStorms ?? stormSettingsFrom(process.env);
  const database = await openDatabase({ dataDir: opts.dataDir, databaseUrl: opts.databaseUrl, logger });
  const { db } = database;
  // The gateway is made below; its tokens are counted only when scraped.
  const observability = await Observability.start({ settings: observabilitySettings, db, logger, version: VERSION, pool: database.pool, gatewayTokens: () => gateway.outstandingTokens });

  const images = new ImageStore({
    dir: opts.imageDir ?? join(opts.dataDir, 'images'),
    logger,
    allowedRegistries: runnerConfig.allowedRegistries,
    registryMirrors: opts.registryMirrors ?? runnerConfig.registryMirrors,
    maxImageBytes: runnerConfig.maxImageBytes,
    registryCertDir: hostTrust?.certDir,
    egressNetwork,
  });
  if (!opts.noRunner) await images.buildDefault(opts.onImageProgress);
  const tokens = new TokenService(db);
  const authz = new Authorizer(db);
  // BERTH_AUDIT_KEY or DATA_DIR/audit.key: signs the audit chain's heads, and is never in the database.
  const auditKey = AuditKey.load({ env: process.env, dataDir: opts.dataDir });
  const audit = new AuditLog({ db, logger, sinks: auditSinks(), key: auditKey.key });
  // A key file made just now cannot have signed anything: heads written before Berth
  // signed heads (an upgrade) are adopted as they stand, once.
  if (auditKey.created) {
    const adopted = await audit.sealUnsigned();
    if (adopted > 0) logger.warn({ orgs: adopted }, 'signed the audit heads written before heads were signed; `berth audit verify` checks the entries below them');
  }
  const secretBox = SecretBox.load({ env: process.env, dataDir: opts.dataDir });
  const secrets = new SecretService({ db, box: secretBox });
  // Task event streams and the policy cache hear other replicas' changes through the feed.
  const taskEvents = new TaskEvents(db, database.feed);
  observability.watchTaskEvents(taskEvents);
  // The egress proxy asks the policies on every request; they are loaded before any
  // environment's proxy can be resumed.
  const policies = new PolicyService({ db, secrets, logger, changes: database.feed });
  await policies.start();
  const denials = new DenialAdvisor({ db, events: taskEvents, policies, logger, settings: stormSettings });
  const networkEvents = new NetworkEventRecorder({ db, audit, taskEvents, secrets, logger, denials, counted: observability.networkEvent });
  denials.flushWith(() => networkEvents.flush());
  const retention = new NetworkEventRetention({ db, logger, retentionMs: networkEventRetention, singletons: database.singletons });
  const local = opts.noRunner || opts.runner ? undefined : new LocalRunner({ dataDir: opts.dataDir, images, logger, runtime: runnerConfig.runtime, initBinary: runnerConfig.initBinary, agent: runnerConfig.agent, diskQuota: runnerConfig.diskQuota, stateStore: runnerConfig.stateStore, compiler: runnerConfig.compiler, network: { policies, events: networkEvents, companyCas: companyCas.map((c) => c.pem), egressNetwork, ...opts.network }, builder: new ImageBuilder({ store: images, egressNetwork }) });
  const runner: Runner | undefined = opts.runner ?? local;
  const pool = new RunnerPool({ db, logger });
  // berth up's own runner: the environments made before runners had ids are its.
  if (runner) pool.add(runner, { legacy: true });
  const environments = new EnvironmentService({ db, runners: pool, logger, audit, secrets, timer: observability.environmentTimer });
  const snapshots = new SnapshotService({ db, runners: pool, environments, logger });
  // Devcontainer Dockerfiles and features, built on this runner for tasks and `berth project check`.
  const oidcConfig = opts.oidc ?? oidcConfigFromEnv(process.env);
  const oidc = oidcConfig && { signIn: new OidcSignIn(oidcConfig), pending: new PendingSignIns(), groupRules: oidcConfig.groupRules, name: oidcConfig.name };
  const { userId, orgId: bootstrapOrgId } = await ensureBootstrap(db);

  const modelEnv = opts.modelEnv ?? process.env;
  const repoConfig = opts.repos ?? repoAccessFromEnv(process.env);
  // Host-side git and forge API calls go through the company's upstream proxy too.
  const repos = new RepoAccess({ ...repoConfig, caFile: hostTrust?.bundle }, { upstream: egressNetwork });
  routeHostFetch(egressNetwork);
  // The org's and projects' own model APIs; berth up's model variables stay the instance default.
  const models = new ModelSettingsService({ db, secrets, instanceEnv: modelEnv, allowedHosts: repoConfig.allowedModelHosts ?? [] });
  // Agent CLIs inside environments reach models through this, with a per-task token.
  const gateway = new LlmGateway({ upstreams: upstreamsFromEnv(modelEnv), logger, upstreamProxy: egressNetwork });
  let publicUrl = opts.publicUrl ?? process.env.BERTH_PUBLIC_URL ?? '';
  // One runner per data directory: the tasks it claimed are the ones it recovers.
  const runnerId = runner?.id ?? 'none';
  const runnerOfflineAfterMs = opts.runnerOfflineAfterMs ?? runnerOfflineAfterFrom(process.env.BERTH_RUNNER_OFFLINE_AFTER);
  const taskRetries = opts.taskRetries ?? taskRetriesFrom(process.env.BERTH_TASK_RETRIES);
  const runnerMemoryBytes = opts.runnerMemoryBytes ?? runnerMemoryFrom(process.env.BERTH_RUNNER_MEMORY);
  const prebuilds = new PrebuildService({ db, runners: pool, logger });
  const taskDeps: PipelineDeps = { snapshots, db, events: taskEvents, environments, secrets, audit, logger, workDir: join(opts.dataDir, 'tasks'), publicUrl: () => publicUrl, modelEnv, models, repos, gateway: sandboxGateway({ gateway, environments }), denials, images: { policies, runners: pool } };
  // A task worker per runner in the pool: berth up's own, and each runner that joins while it is connected.
  const workers = new RunnerWorkers({ db, pool, deps: taskDeps, logger, trace: observability.traceTask, taskRetries, concurrency: () => runnerConfig.taskConcurrency ?? 2 * availableParallelism() });
  // With no runner of its own, tasks wait for the runners that join (their workers are the placement's).
  const worker = runner ? workers.workerFor(runner) : new TaskWorker({ db, runnerId, trace: observability.traceTask, concurrency: 0, deps: taskDeps });
  // Queued and cancelled tasks reach every replica's workers at commit (migration 0022).
  const stopTaskSignals = database.feed.listen(CHANNELS.tasks, (payload) => {
    const [state, id] = payload.split(':');
    if (state === 'queued') workers.poke();
    else if (state === 'cancelled' && id) workers.cancel(id);
  });
  const tasks = new TaskService({ db, events: taskEvents, secrets, signals: workers, repos, checkModel: async (model, where) => {
      if (!(await models.hasSettings(where.orgId, where.projectId))) void modelClientFromEnv(modelEnv, { model });
    },
  });

  // Before serving: make the database agree with what is really running on this host.
  if (runner) await environments.reconcile(runner.id);
  await worker.recover();
  const triggers = new Triggers(
    { db, logger, audit, tasks, secrets, box: secretBox, environments, prebuilds, feed: database.feed, singletons: database.singletons, publicUrl: () => publicUrl, counted: observability.webhookDelivery, now: opts.clock },
    TRIGGER_SOURCES,
  );

  const runners = new RunnerRegistry({ db, authz, offlineAfterMs: runnerOfflineAfterMs });
  // Runners whose heartbeat stopped: their environments become lost and their tasks move, on one replica at a time.
  const runnerSweeper = new RunnerSweeper({ db, pool, environments, events: taskEvents, logger, offlineAfterMs: runnerOfflineAfterMs, taskRetries, exclusive: (name, fn) => database.singletons.run(name, fn) });
  // A runner that (re)connects: its lost environments are found again.
  pool.onAdded((r) => void environments.reconcile(r.id, { onlyLost: true }).catch((err) => logger.error({ err, runner: r.id }, 'could not reconcile a returning runner')));
  // Runners on other hosts join with a runner token and become RemoteRunners in the pool while connected.
  const runnerTokens = new RunnerTokenService(db);
  // Topped up on one replica at a time, never onto a runner whose task slots are all taken.
  const warmPools = new WarmPoolService({
    db,
    environments,
    snapshots,
    audit,
    logger,
    exclusive: (name, fn) => database.singletons.run(name, fn),
    busy: (id) => {
      const w = workers.get(id);
      return w !== undefined && w.concurrency > 0 && w.running >= w.concurrency;
    },
  });
  // Tasks of a project with a ready prebuild claim one of its warm environments first.
  taskDeps.warmPools = warmPools;
  const prebuildBuilder = new PrebuildBuilder({ db, prebuilds, environments, snapshots, secrets, repos, runners: pool, logger, workDir: join(opts.dataDir, 'prebuilds'), images: { policies, runners: pool }, staleAfterMs: opts.prebuildStaleAfterMs, onReady: () => warmPools.wake() });
  // One change across many repositories: started and settled on one replica at a time.
  const campaigns = new CampaignService({ db, tasks, repos, secrets });
  const campaignScheduler = new CampaignScheduler({ db, tasks, audit, logger, exclusive: (name, fn) => database.singletons.run(name, fn) });
  campaigns.signals = campaignScheduler;
  const campaignForge = new CampaignForge({ db, tasks, secrets, audit, logger, exclusive: (name, fn) => database.singletons.run(name, fn), onFreed: () => campaignScheduler.wake() });
  const joinedRunners = new JoinedRunners({ db, pool, registry: runners, environments, tokens: runnerTokens, policies, networkEvents, logger, heartbeatMs: opts.runnerHeartbeatMs, tasksOf: (id) => ({ running: workers.get(id)?.running ?? 0, concurrency: workers.get(id)?.concurrency ?? 0 }), replicaUrl: () => replicaUrl });
  // Runners another replica holds are reached through it; this one's are served to the others.
  let replicaUrl: string | undefined;
  const runnerRelay = new ReplicaRelay({ db, pool, box: secretBox, policies, logger, offlineAfterMs: runnerOfflineAfterMs, selfUrl: () => replicaUrl });
  pool.reachElsewhere((id) => runnerRelay.reach(id));
  const minFreeDiskBytes = runnerConfig.minFreeDiskBytes;
  const heartbeat = runner && new RunnerHeartbeat({
    registry: runners,
    runner: { id: runnerId, name: 'local', host: hostname(), version: VERSION },
    everyMs: opts.runnerHeartbeatMs ?? 5_000,
    logger,
    // Counted as each beat is made (the registry's write is its own).
    report: async () => (observability.heartbeat(runnerId), {
      ...probeHost({ backend: local?.backend.name ?? runner.name, runtime: Boolean(local), network: Boolean(local?.network), diskQuota: local?.diskQuota ?? false, dataDir: opts.dataDir, minFreeDiskBytes, egressNetwork: summarizeEgressNetwork(egressNetwork), checkpoint: await local?.checkpointSupport(), snapshots: await runner.snapshotSupport() }),
      // What placement counts against, when set, rather than the host's memory.
      ...(runnerMemoryBytes !== undefined && { offeredMemoryBytes: runnerMemoryBytes }),
      environments: await environments.counts(runner.id),
      tasks: { running: worker.running, concurrency: worker.concurrency },
    }),
  });
  await heartbeat?.start();

  const app = await buildApp({
    logger,
    db,
    tokens,
    authz,
    audit,
    secrets,
    oidc,
    tokenRateLimit: opts.tokenRateLimit ?? Number(process.env.BERTH_TOKEN_RATE_LIMIT ?? 6000),
    authFailureLimit: opts.authFailureLimit ?? authFailureLimitFromEnv(process.env.BERTH_AUTH_FAILURE_LIMIT),
    environments,
    tasks,
    taskEvents,
    policies,
    networkEvents,
    observability,
    triggers,
    snapshots,
    warmPools,
    prebuilds,
    campaigns,
    campaignForge,
    images,
    pool,
    runners,
    runnerTokens,
    joinedRunners,
    runnerRelay,
    noLocalRunner: !runner,
    repos,
    models,
    version: VERSION,
    publicUrl: () => publicUrl,
    health: () => ({ database: database.kind, runtime: local?.backend.name ?? runner?.name ?? 'none (no local runner)' }),
  });
  const metricsUrl = await observability.listen();
  if (metricsUrl) logger.info({ url: `${metricsUrl}/metrics` }, 'metrics: serving on their own address');
  await app.listen({ port: opts.port ?? 7070, host: opts.host ?? '127.0.0.1' });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : opts.port;
  const host = opts.host && opts.host !== '0.0.0.0' && opts.host !== '::' ? opts.host : '127.0.0.1';
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  const orgName = 'default';
  publicUrl ||= url;
  replicaUrl = opts.replicaUrl ?? (process.env.BERTH_REPLICA_URL || url);
  if (runner) await db.updateTable('runners').set({ replica_url: replicaUrl }).where('id', '=', runnerId).execute();
  workers.start();
  runnerSweeper.start();
  warmPools.start();
  prebuildBuilder.start();
  campaignScheduler.start();
  // A campaign's task that ended (or was cancelled), on any replica: its target settles and the next starts now.
  const stopCampaignSignals = database.feed.listen(CHANNELS.tasks, (payload) => {
    if (!payload.startsWith('queued:')) campaignScheduler.wake();
  });
  campaignForge.start();
  // Snapshots a killed control plane left half-recorded: settled once runners are here.
  void snapshots.recover().catch((err: unknown) => logger.error({ err }, 'cannot settle interrupted snapshots'));
  await triggers.start();

  const clientConfigPath = join(opts.dataDir, CLIENT_CONFIG_FILE);
  await writeClientConfig(
    clientConfigPath,
    url,
    orgName,
    async (token) => tokens.authenticate(`Bearer ${token}`).then(() => true, () => false),
    async () => (await tokens.create({ kind: 'user', userId, name: 'berth up (local administrator)' })).token,
  );

  // Every replica writes the activity its own commands saw; the sweep that stops idle and
  // expired environments runs on one replica at a time (db/singleton.ts).
  const sweeper = setInterval(
    () => void environments.flushActivity().then(() => database.singletons.run('environment-sweep', () => environments.sweep())).catch((err) => logger.error({ err }, 'sweep failed')),
    opts.sweepIntervalMs ?? 15_000,
  );
  sweeper.unref();

  return {
    url,
    app,
    database,
    environments,
    tasks,
    taskEvents,
    triggers,
    warmPools,
    prebuilds,
    prebuildBuilder,
    campaigns,
    campaignScheduler,
    campaignForge,
    worker,
    get runner(): LocalRunner {
      if (opts.runner) throw new Error('this control plane was started with a runner of its caller (StartOptions.runner): it has no LocalRunner');
      if (!local) throw new Error('this control plane was started with noRunner (berth up --no-runner): it has no local runner; use `runners` (the pool)');
      return local;
    },
    joinedRunners,
    observability,
    runners: pool,
    clientConfigPath,
    async signInLink(ttlMs = 3_600_000) {
      const code = await new InviteService({ db, tokens, audit }).createForBootstrap(bootstrapOrgId, userId, ttlMs);
      return `${publicUrl}${invitePath(code)}`;
    },
    async close() {
      clearInterval(sweeper);
      // Readiness says so at once: a load balancer stops sending work while the rest closes.
      observability.beginShutdown();
      await runnerSweeper.close();
      await prebuildBuilder.stop();
      stopCampaignSignals();
      await campaignScheduler.close();
      await campaignForge.close();
      await warmPools.close();
      await triggers.close();
      stopTaskSignals();
      await workers.close();
      await worker.close();
      await heartbeat?.close();
      await gateway.close();
      // Environments keep running: they are long-lived and found again on the next start.
      await app.close();
      await observability.close();
      await environments.flushActivity();
      await retention.close();
      await audit.close();
      joinedRunners.close();
      runnerRelay.close();
      local?.close();
      taskEvents.close();
      routeHostFetch(undefined);
      await database.close();
    },
  };
}

function authFailureLimitFromEnv(value: string | undefined): number {
  if (!value?.trim()) return 30;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw invalid(`BERTH_AUTH_FAILURE_LIMIT must be a whole number of failed authentications a minute per address (0 for no limit), not ${JSON.stringify(value)}`);
  return n;
}


/**
 * Keeps the admin token of an earlier start while the database still knows it (a new
 * DATABASE_URL does not), and updates the URL.
 */
async function writeClientConfig(
  path: string,
  url: string,
  org: string,
  stillValid: (token: string) => Promise<boolean>,
  newToken: () => Promise<string>,
): Promise<void> {
  let token: string | undefined;
  if (existsSync(path)) {
    try {
      token = (JSON.parse(readFileSync(path, 'utf8')) as ClientConfig).token;
    } catch {
      token = undefined;
    }
  }
  if (!token || !(await stillValid(token))) token = await newToken();
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify({ url, token, org } satisfies ClientConfig, null, 2), { mode: 0o600 });
  renameSync(tmp, path);
}

