import fastifySwagger from '@fastify/swagger';
import fastifyWebsocket from '@fastify/websocket';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyRequest } from 'fastify';
import {
  hasZodFastifySchemaValidationErrors,
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import type { Logger } from 'pino';
import { BerthError, KIND_BY_STATUS, STATUS_BY_KIND, type ErrorBody } from '../shared/errors.ts';
import type { Caller, TokenService } from './auth.ts';
import type { EnvironmentService } from './environments/service.ts';
import { attachRoutes } from './routes/attach.ts';
import { environmentRoutes } from './routes/environments.ts';
import { fileRoutes } from './routes/files.ts';
import { imageRoutes } from './routes/images.ts';
import { metaRoutes } from './routes/meta.ts';
import type { ImageStore } from '../runner/index.ts';

declare module 'fastify' {
  interface FastifyRequest {
    caller: Caller;
  }
}

export interface AppDeps {
  logger: Logger;
  tokens: TokenService;
  environments: EnvironmentService;
  images: ImageStore;
  health: () => { database: 'pglite' | 'postgres'; runtime: string };
  version: string;
}

export type App = FastifyInstance<any, any, any, FastifyBaseLogger, ZodTypeProvider>;

const PUBLIC_ROUTES = new Set(['/health', '/openapi.json']);

export async function buildApp(deps: AppDeps): Promise<App> {
  const app = Fastify({
    loggerInstance: deps.logger,
    // Request lines would drown the log; errors are logged by the error handler.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 32 * 1024 * 1024,
  }).withTypeProvider<ZodTypeProvider>();

  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.decorateRequest('caller', null as unknown as Caller);

  await app.register(fastifySwagger, {
    openapi: {
      info: { title: 'Berth API', description: 'Sandboxed, persistent environments for background coding agents.', version: deps.version },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    transform: jsonSchemaTransform,
  });
  await app.register(fastifyWebsocket, { options: { maxPayload: 16 * 1024 * 1024 } });

  app.addHook('onRequest', async (req: FastifyRequest) => {
    const path = req.url.split('?')[0]!;
    if (PUBLIC_ROUTES.has(path) || !path.startsWith('/api/')) return;
    req.caller = await deps.tokens.authenticate(req.headers.authorization);
  });

  app.setErrorHandler((err: FastifyError | BerthError | Error, req, reply) => {
    const body = errorBody(err);
    const status = STATUS_BY_KIND[body.error.kind] ?? 500;
    if (status >= 500 && !(err instanceof BerthError)) req.log.error({ err, url: req.url.split('?')[0] }, 'request failed');
    void reply.code(status).send(body);
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send({ error: { kind: 'not_found', message: `no route ${req.method} ${req.url.split('?')[0]}: see /openapi.json` } });
  });

  await app.register(async (scope) => {
    const api = scope.withTypeProvider<ZodTypeProvider>() as App;
    metaRoutes(api, deps);
    environmentRoutes(api, deps);
    attachRoutes(api, deps);
    fileRoutes(api, deps);
    imageRoutes(api, deps);
  });

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  return app as unknown as App;
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
  return { error: { kind: 'internal', message: 'internal error: the server log has the details' } };
}
