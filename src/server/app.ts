import { snapshotRoutes } from './routes/snapshots.ts';
import { SnapshotService } from './snapshots/service.ts';
import { prebuildRoutes } from './routes/prebuilds.ts';
import { campaignRoutes } from './routes/campaigns.ts';
import type { CampaignService } from './campaigns/service.ts';
import type { CampaignForge } from './campaigns/forge.ts';
import type { PrebuildService } from './prebuilds/service.ts';
import type { WarmPoolService } from './prebuilds/warm-pool.ts';
import fastifySwagger from '@fastify/swagger';
import fastifyWebsocket from '@fastify/websocket';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyReply, type FastifyError, type FastifyInstance, type FastifyRequest } from 'fastify';
import {
  hasZodFastifySchemaValidationErrors,
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import fastJson from 'fast-json-stringify';
import type { Logger } from 'pino';
import { z } from 'zod';
import { BerthError, conflict, invalid, KIND_BY_STATUS, STATUS_BY_KIND, type ErrorBody } from '../shared/errors.ts';
import type { TokenService } from './auth.ts';
import type { Authorizer, Caller, Permission, Scope } from './authz.ts';
import { OWNERSHIPS, type Ownership } from './ownership.ts';
import type { EnvironmentService } from './environments/service.ts';
import { attachRoutes, websocketBearer } from './routes/attach.ts';
import { environmentRoutes } from './routes/environments.ts';
import { fileRoutes } from './routes/files.ts';
import { fileBrowserRoutes } from './routes/file-browser.ts';
import { imageRoutes } from './routes/images.ts';
import { metaRoutes } from './routes/meta.ts';
import { orgRoutes } from './routes/orgs.ts';
import { orgSettingsRoutes } from './routes/org-settings.ts';
import { authRoutes } from './routes/auth.ts';
import { auditRoutes } from './routes/audit.ts';
import { secretRoutes } from './routes/secrets.ts';
import { projectRoutes } from './routes/projects.ts';
import { projectCheckRoutes } from './routes/project-check.ts';
import { taskRoutes } from './routes/tasks.ts';
import { modelRoutes } from './routes/models.ts';
import type { ModelSettingsService } from './models/service.ts';
import { runnerRoutes } from './routes/runners.ts';
import { runnerJoinRoutes } from './routes/runner-join.ts';
import { RunnerTokenService, type JoinedRunners } from './runners/index.ts';
import { CONNECT_PATH as RUNNER_CONNECT_PATH } from '../runner/remote/protocol.ts';
import { RELAY_PATH, type ReplicaRelay } from './runners/relay.ts';
import type { RunnerRegistry } from './runners/index.ts';
import { policyRoutes } from './routes/policy.ts';
import { PolicyService } from './policy/index.ts';
import { NetworkEventRecorder } from './network-events/index.ts';
import { webRoutes } from './routes/web.ts';
import type { TaskEvents, TaskService } from './tasks/index.ts';
import type { ImageStore } from '../runner/index.ts';
import type { RunnerPool } from './runners/pool.ts';
import { isDatabaseUnavailable, type Db } from './db/index.ts';
import type { AuditLog } from './audit/index.ts';
import type { GroupRule, OidcSignIn, PendingSignIns } from './oidc/index.ts';
import type { SecretService } from './secrets/service.ts';
import type { RepoAccess } from '../forges/index.ts';
import fastifyRateLimit from '@fastify/rate-limit';
import { AuthFailures } from './auth-failures.ts';
import { OpenStreams } from './open-streams.ts';
import type { Observability } from './observability/index.ts';
import { WEBHOOK_PREFIX, type Triggers } from './triggers/index.ts';
import { integrationRoutes } from './routes/integrations.ts';

declare module 'fastify' {
  interface FastifyRequest {
    caller: Caller;
    /** The caller inside the route's org, for routes under /api/orgs/:org. */
    scope: Scope;
    /** What a handler adds to its route's audit entry (the setting it changed, and to what). */
    auditDetails?: Record<string, unknown>;
  }
  interface FastifyInstance {
    /** Every route with what it needs: the tests walk it so a new route cannot be forgotten. */
    routeTable: RouteEntry[];
    /** Egress policies: the PolicySource the runner's egress proxy reads. */
    policies: PolicyService;
    /** Where the egress proxy's NetworkEvents go. */
    networkEvents: NetworkEventRecorder;
    /** Every open stream, checked each second against its caller's token and role. */
    openStreams: OpenStreams;
  }
  interface FastifyContextConfig {
    /** What the route needs in its org; required for every route under /api/orgs/:org. */
    permission?: Permission;
    /** The audit action a successful call records; required for every route that changes something. */
    audit?: string;
    /**
     * What the route does with the environment or task it names, and so who may (ownership.ts):
     * required for every route on one (OWNED_ROUTE). The services enforce it; the tests check the two agree.
     */
    ownership?: Ownership;
  }
}

export interface RouteEntry {
  method: string;
  url: string;
  permission: Permission | undefined;
  audit: string | undefined;
  ownership: Ownership | undefined;
  websocket: boolean;
}

/** Routes on one environment or task: each declares its ownership (ownership.ts). */
export const OWNED_ROUTE = /^\/api\/orgs\/:org\/(?:.+\/)?(?:environments|tasks)\/:id(?:\/|$)/;

export interface AppDeps {
  logger: Logger;
  tokens: TokenService;
  authz: Authorizer;
  audit: AuditLog;
  secrets: SecretService;
  oidc: { signIn: OidcSignIn; pending: PendingSignIns; groupRules: GroupRule[]; name?: string | undefined } | undefined;
  /** Requests per minute one token may make. */
  tokenRateLimit: number;
  /** Failed authentications per minute one client address may make before it is refused unheard (0: no limit; default 30). */
  authFailureLimit?: number | undefined;
  db: Db;
  environments: EnvironmentService;
  tasks: TaskService;
  taskEvents: TaskEvents;
  images: ImageStore;
  /** The runners this process reaches: `berth project check` builds on one placement chooses. */
  pool: RunnerPool;
  runners: RunnerRegistry;
  /** Runner tokens (made over `db` when not given), and the runners that join with them (none join without it). */
  runnerTokens?: RunnerTokenService | undefined;
  joinedRunners?: JoinedRunners | undefined;
  /** Runners this replica holds, served to the other replicas; those they hold, reached through them. */
  runnerRelay?: ReplicaRelay | undefined;
  /** berth up --no-runner: no runner of its own, so no images on this host; the image routes say so (409). */
  noLocalRunner?: boolean | undefined;
  /** Which repositories may be named (projects, one-off tasks) and reached from the host. */
  repos: RepoAccess;
  health: () => { database: 'pglite' | 'postgres'; runtime: string };
  /** The org's and projects' model settings; without them the model routes are not served. */
  models?: ModelSettingsService | undefined;
  /** The URL people reach this Berth at (BERTH_PUBLIC_URL, else the listen address), for links such as invites. */
  publicUrl?: (() => string) | undefined;
  version: string;
  /** Egress policies; made here when not given. Started and closed with the app either way. */
  policies?: PolicyService | undefined;
  /** The egress proxy's event sink; made here when not given. Flushed when the app closes. */
  networkEvents?: NetworkEventRecorder | undefined;
  /** Metrics, probes, request logs and traces (observability/index.ts); without it, none of them. */
  observability?: Observability | undefined;
  /** Webhooks (GitHub, GitLab, Slack, generic), schedules and integrations; without it, none of them. */
  triggers?: Triggers | undefined;
  /** Snapshots and forks (snapshots/service.ts); made here over `environments` when not given. */
  snapshots?: SnapshotService | undefined;
  /** Projects' prebuilds (prebuilds/service.ts); without it, no prebuild routes. */
  prebuilds?: PrebuildService | undefined;
  /** Projects' warm pools (prebuilds/warm-pool.ts): `berth project show` tells them. */
  warmPools?: WarmPoolService | undefined;
  /** Campaigns (campaigns/service.ts); without it, no campaign routes. */
  campaigns?: CampaignService | undefined;
  /** Campaigns' change requests on their forges (campaigns/forge.ts): approve, and reading them back. */
  campaignForge?: CampaignForge | undefined;
}

export type App = FastifyInstance<any, any, any, FastifyBaseLogger, ZodTypeProvider>;

const PUBLIC_ROUTES = new Set(['/health', '/openapi.json']);

export async function buildApp(deps: AppDeps): Promise<App> {
  const app = Fastify({
    loggerInstance: deps.logger,
    // Request lines would drown the log; errors are logged by the error handler.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 32 * 1024 * 1024,
    // Errors the router raises itself (a path parameter too long, a bad URL) get the same
    // JSON error body as every other refusal.
    frameworkErrors: (err, _req, reply) => {
      const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 400;
      void (reply as FastifyReply).code(status).send({ error: { kind: KIND_BY_STATUS[status] ?? 'invalid', message: err.message } });
    },
  }).withTypeProvider<ZodTypeProvider>();
  // First of all hooks: a request's span and timing cover everything after it.
  deps.observability?.instrument(app as unknown as App);

  app.setValidatorCompiler(validatorCompiler);
  // Replies are serialized by fast-json-stringify from the JSON Schema of each route's zod
  // reply schema: the same shapes, several times faster than encoding through zod.
  app.setSerializerCompiler(({ schema, method, url, httpStatus }) => {
    try {
      return fastJson(z.toJSONSchema(schema as z.ZodType, { io: 'output', unrepresentable: 'any', target: 'draft-07' }) as never);
    } catch {
      return serializerCompiler({ schema, method, url, httpStatus } as never);
    }
  });
  const policies = deps.policies ?? new PolicyService({ db: deps.db, secrets: deps.secrets, logger: deps.logger });
  const networkEvents = deps.networkEvents ?? new NetworkEventRecorder({ db: deps.db, audit: deps.audit, taskEvents: deps.taskEvents, secrets: deps.secrets, logger: deps.logger });
  await policies.start();
  // Same-process changes are in policyFor before their caller hears of them: a new
  // environment before it starts, secrets and projects before the reply.
  deps.environments.onCreated(async (e) => (e.ownPolicy ? policies.reload().catch(() => {}) : policies.noteEnvironment(e)));
  app.decorate('policies', policies);
  app.decorate('networkEvents', networkEvents);
  const openStreams = new OpenStreams({ tokens: deps.tokens, authz: deps.authz, logger: deps.logger });
  app.decorate('openStreams', openStreams);
  app.addHook('onClose', async () => {
    openStreams.close();
    policies.close();
    await networkEvents.close();
  });
  app.decorateRequest('caller', null as unknown as Caller);
  app.decorateRequest('scope', null as unknown as Scope);

  // A route that forgets its permission or its audit action does not start.
  const routeTable: RouteEntry[] = [];
  app.decorate('routeTable', routeTable);
  app.addHook('onRoute', (route) => {
    const url = route.url ?? route.path;
    for (const method of ([] as string[]).concat(route.method)) {
      if (method !== 'HEAD') {
        routeTable.push({ method, url, permission: route.config?.permission, audit: route.config?.audit, ownership: route.config?.ownership, websocket: Boolean((route as { websocket?: boolean }).websocket) });
      }
    }
    if (url.startsWith('/api/orgs/:org') && !route.config?.permission) {
      throw new Error(`route ${route.method} ${url} declares no permission`);
    }
    if (OWNED_ROUTE.test(url) && !OWNERSHIPS.includes(route.config?.ownership as Ownership)) {
      throw new Error(`route ${route.method} ${url} declares no ownership: 'org' (reads it), 'shared' (uses it) or 'owner' (removes or shares it); see src/server/ownership.ts`);
    }
    const methods = ([] as string[]).concat(route.method);
    const changes = methods.some((m) => !['GET', 'HEAD', 'OPTIONS'].includes(m));
    if (url.startsWith('/api/') && changes && !route.config?.audit && !route.config?.permission?.endsWith('.exec')) {
      throw new Error(`route ${route.method} ${url} changes something but names no audit action`);
    }
  });

  await app.register(fastifySwagger, {
    openapi: {
      info: { title: 'Berth API', description: 'Sandboxed, persistent environments for background coding agents.', version: deps.version },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    transform: jsonSchemaTransform,
  });
  await app.register(fastifyWebsocket, { options: { maxPayload: 16 * 1024 * 1024 } });
  // Per token for API calls (a leaked or runaway token cannot flood the control plane),
  // per address for sign-in and public routes. This hook runs after authentication (route
  // hooks follow the app's), so a request that reaches it either has a verified caller or
  // needs none; failed authentication has its own per-address limit below.
  await app.register(fastifyRateLimit, {
    global: true,
    max: deps.tokenRateLimit,
    timeWindow: '1 minute',
    keyGenerator: (req) => (req.caller ? `token:${req.caller.tokenId}` : `ip:${req.ip}`),
    errorResponseBuilder: (_req, ctx) => new BerthError('rate_limited', `too many requests (at most ${ctx.max} per ${ctx.after}): try again in ${Math.ceil(ctx.ttl / 1000)} s`),
  });

  // An address that keeps failing to authenticate is refused before its token is looked
  // up: a flood of wrong tokens costs a hash and a map lookup each, not a query.
  const authFailures = new AuthFailures({ limit: deps.authFailureLimit ?? 30 });
  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    const path = req.url.split('?')[0]!;
    // A joining runner authenticates with its runner token, another replica with its credential,
    // a webhook's sender with its signature, in their own routes (runner-join.ts, triggers/).
    if (PUBLIC_ROUTES.has(path) || !path.startsWith('/api/') || path.startsWith('/api/auth/') || path === RUNNER_CONNECT_PATH || RELAY_PATH.test(path) || path.startsWith(WEBHOOK_PREFIX)) return;
    const wait = authFailures.retryAfter(req.ip);
    // A token that worked lately is still checked in full: the limit is for guessers, and
    // everyone behind the same address would otherwise be locked out with them.
    if (wait && !deps.tokens.authenticatedLately(req.headers.authorization ?? websocketBearer(req.headers))) {
      void reply.header('retry-after', String(wait));
      throw new BerthError('rate_limited', `too many requests with a missing or invalid API token from this address (at most ${authFailures.limit} a minute): try again in ${wait} s with a valid token`);
    }
    try {
      req.caller = await deps.tokens.authenticate(req.headers.authorization ?? websocketBearer(req.headers));
    } catch (err) {
      if (err instanceof BerthError && err.kind === 'unauthorized') authFailures.note(req.ip);
      throw err;
    }
    refuseNul([['params', req.params], ['querystring', req.query]]);
    if (deps.noLocalRunner && /^\/api\/(?:orgs\/[^/]+\/)?images(?:\/|$)/.test(path)) {
      throw conflict('this control plane runs no runner of its own (berth up --no-runner), so it keeps no images: an environment\'s image is pulled by the runner it is placed on (`berth env create --image REGISTRY/NAME:TAG`); to import a file, run `berth image import` against a berth up with a runner');
    }
    const permission = req.routeOptions.config?.permission;
    const org = (req.params as { org?: string } | undefined)?.org;
    if (permission && org !== undefined) req.scope = await deps.authz.scope(req.caller, org, permission);
  });

  // PostgreSQL text cannot hold NUL: refuse it at the edge with the field's name, rather
  // than let it reach a query and fail there.
  app.addHook('preValidation', async (req) => refuseNul([['body', req.body]]));

  // A change is on record before its caller hears it succeeded.
  app.addHook('onSend', async (req, reply, payload) => {
    const action = req.routeOptions.config?.audit;
    if (!action || reply.statusCode >= 400 || !req.scope) return payload;
    const params = req.params as { id?: string; name?: string };
    try {
      await deps.audit.append({
        orgId: req.scope.orgId,
        actor: req.scope.actor,
        action,
        target: params.id ?? params.name ?? auditTarget(payload),
        details: { method: req.method, path: req.url.split('?')[0], ...req.auditDetails },
      });
    } catch (err) {
      // The change is made and this hook cannot take it back; what it must not do is let
      // the caller hear it succeeded while the log lost it. The 503 says both.
      req.log.error({ err, action }, 'a change was made but could not be recorded in the audit log');
      throw new BerthError('unavailable', `the change (${action}) was made but not recorded in the audit log, which is not taking entries: check its result before trying again, and ask an administrator to look at the server log`);
    }
    return payload;
  });

  app.addHook('onSend', async (req, reply, payload) => {
    const action = req.routeOptions.config?.audit;
    if (action && reply.statusCode < 400 && /^(secret|project)\./.test(action)) await policies.reload();
    return payload;
  });

  app.setErrorHandler((err: FastifyError | BerthError | Error, req, reply) => {
    const body = errorBody(err);
    const status = STATUS_BY_KIND[body.error.kind] ?? 500;
    if (status === 503 && isDatabaseUnavailable(err)) {
      req.log.warn({ err: { code: (err as { code?: string }).code, message: err.message }, url: req.url.split('?')[0] }, 'request failed: the database is not answering');
      void reply.header('retry-after', '2');
    } else if (status >= 500 && !(err instanceof BerthError)) req.log.error({ err, url: req.url.split('?')[0] }, 'request failed');
    void reply.code(status).send(body);
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send({ error: { kind: 'not_found', message: `no route ${req.method} ${req.url.split('?')[0]}: see /openapi.json` } });
  });

  await app.register(async (scope) => {
    const api = scope.withTypeProvider<ZodTypeProvider>() as App;
    metaRoutes(api, deps);
    deps.observability?.routes(api);
    authRoutes(api, deps);
    orgRoutes(api, deps);
    orgSettingsRoutes(api, deps);
    secretRoutes(api, deps);
    projectRoutes(api, deps);
    projectCheckRoutes(api, deps);
    taskRoutes(api, deps);
    if (deps.models) modelRoutes(api, deps.models);
    auditRoutes(api, deps);
    environmentRoutes(api, deps);
    snapshotRoutes(api, { snapshots: deps.snapshots ?? new SnapshotService({ db: deps.db, runners: deps.pool, environments: deps.environments, logger: deps.logger }) });
    if (deps.prebuilds) prebuildRoutes(api, { prebuilds: deps.prebuilds });
    if (deps.campaigns) campaignRoutes(api, { campaigns: deps.campaigns, forge: deps.campaignForge });
    attachRoutes(api, deps);
    fileRoutes(api, deps);
    fileBrowserRoutes(api, deps);
    imageRoutes(api, deps);
    runnerRoutes(api, deps);
    runnerJoinRoutes(api, { ...deps, runnerTokens: deps.runnerTokens ?? new RunnerTokenService(deps.db) });
    policyRoutes(api, { policies, networkEvents });
    if (deps.triggers) {
      integrationRoutes(api, { ...deps, triggers: deps.triggers });
      deps.triggers.routes(api);
    }
    webRoutes(api);
  });

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  return app as unknown as App;
}

function refuseNul(parts: [string, unknown][]): void {
  for (const [where, value] of parts) {
    const field = findNul(value, where);
    if (field) throw invalid(`${field} contains a NUL character`, field);
  }
}

function findNul(value: unknown, path: string, depth = 0): string | undefined {
  if (typeof value === 'string') return value.includes('\u0000') ? path : undefined;
  if (depth > 32 || value === null || typeof value !== 'object') return undefined;
  // Parsed values only: a streamed body (a tar upload) is not walked.
  if (typeof (value as { pipe?: unknown }).pipe === 'function' || Buffer.isBuffer(value)) return undefined;
  for (const [k, v] of Object.entries(value)) {
    const found = findNul(v, `${path}.${k}`, depth + 1);
    if (found) return found;
  }
  return undefined;
}

/** The id of what a create call made, read from its JSON reply. */
function auditTarget(payload: unknown): string | null {
  if (typeof payload !== 'string') return null;
  try {
    const v = JSON.parse(payload) as { id?: unknown; name?: unknown };
    return typeof v.id === 'string' ? v.id : typeof v.name === 'string' ? v.name : null;
  } catch {
    return null;
  }
}

/** One place that turns any error into the API's error body. */
export function errorBody(err: unknown): ErrorBody {
  if (err instanceof BerthError) {
    return { error: { kind: err.kind, message: err.message, ...(err.field ? { field: err.field } : {}) } };
  }
  if (hasZodFastifySchemaValidationErrors(err)) {
    const first = err.validation[0]!;
    const where = (err as FastifyError).validationContext ?? 'body';
    const path = first.instancePath.replace(/^\//, '').replaceAll('/', '.');
    const field = path ? `${where}.${path}` : where;
    const params = first.params as { issue?: { keys?: string[] } };
    const extra = params.issue?.keys?.length ? ` (${params.issue.keys.join(', ')})` : '';
    return { error: { kind: 'invalid', field, message: `${field}: ${first.message}${extra}` } };
  }
  const status = (err as FastifyError).statusCode;
  if (status && status >= 400 && status < 500) {
    return { error: { kind: KIND_BY_STATUS[status] ?? 'invalid', message: (err as Error).message } };
  }
  if (isDatabaseUnavailable(err)) return { error: { kind: 'unavailable', message: 'the database is not answering (it may be restarting): try again in a few seconds' } };
  return { error: { kind: 'internal', message: 'internal error: the server log has the details' } };
}
