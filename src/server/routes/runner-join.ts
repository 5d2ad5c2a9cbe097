import type { WebSocket } from 'ws';
import { z } from 'zod';
import { ErrorSchema } from '../../shared/api.ts';
import { CreatedRunnerToken, CreateRunnerToken, RunnerToken, RunnerTokenList } from '../../shared/api-runners.ts';
import { CONNECT_PATH, MIN_PROTOCOL_VERSION, PROTOCOL_HEADER, PROTOCOL_VERSION } from '../../runner/remote/protocol.ts';
import { errorBody, type App, type AppDeps } from '../app.ts';
import { actorOf, forbidden, type Caller } from '../authz.ts';
import type { AuditLog } from '../audit/index.ts';
import type { Db } from '../db/index.ts';
import { JoinedRunners } from '../runners/joined.ts';
import { RELAY_ROUTE, type ReplicaRelay } from '../runners/relay.ts';
import { RunnerTokenService } from '../runners/tokens.ts';

const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema };
const tags = ['runners'];

function assertInstanceAdmin(caller: Caller): void {
  if (!caller.instanceAdmin) throw forbidden('runner tokens are for instance administrators (the user `berth up` made): a runner serves every org');
}

/** Runners serve every org, so each org's log says a token to join one was made or revoked (as image imports and integrations do). */
export async function auditEveryOrg(db: Db, audit: AuditLog, caller: Caller, action: string, target: string, details: Record<string, unknown>): Promise<void> {
  const orgs = await db.selectFrom('orgs').select('id').execute();
  for (const { id } of orgs) await audit.append({ orgId: id, actor: actorOf(caller), action, target, details: { ...details, scope: 'instance' } });
}

/**
 * Runners on other hosts: the tokens they join with (instance administrators), and the
 * WebSocket they dial (`berth runner join`), authenticated by its runner token, not an API token.
 */
export function runnerJoinRoutes(app: App, deps: AppDeps & { runnerTokens: RunnerTokenService; joinedRunners?: JoinedRunners | undefined; runnerRelay?: ReplicaRelay | undefined }): void {
  const { db, audit, runnerTokens: tokens, joinedRunners } = deps;

  app.post('/api/runners/tokens', {
    config: { audit: 'runner_token.create' },
    schema: {
      tags,
      summary: 'Make a token a runner on another host joins with (instance administrators; the token is shown once)',
      body: CreateRunnerToken,
      response: { 201: CreatedRunnerToken, ...errors },
    },
    handler: async (req, reply) => {
      assertInstanceAdmin(req.caller);
      const created = await tokens.create({ labels: req.body.labels ?? {}, name: req.body.name ?? null, createdBy: actorOf(req.caller) });
      const view = (await tokens.list()).find((t) => t.id === created.id)!;
      // The token's hash and value stay out of the log.
      await auditEveryOrg(db, audit, req.caller, 'runner_token.create', created.id, { name: view.name, labels: view.labels });
      return reply.code(201).send({ ...view, token: created.token });
    },
  });

  app.get('/api/runners/tokens', {
    schema: { tags, summary: 'The runner tokens (instance administrators); never the tokens themselves', response: { 200: RunnerTokenList, ...errors } },
    handler: async (req) => {
      assertInstanceAdmin(req.caller);
      return { items: await tokens.list() };
    },
  });

  app.delete('/api/runners/tokens/:id', {
    config: { audit: 'runner_token.revoke' },
    schema: {
      tags,
      summary: 'Revoke a runner token: runners holding it are disconnected and refused from then on',
      params: z.object({ id: z.string().max(64) }),
      response: { 200: RunnerToken, ...errors },
    },
    handler: async (req) => {
      assertInstanceAdmin(req.caller);
      const revoked = await tokens.revoke(req.params.id);
      await auditEveryOrg(db, audit, req.caller, 'runner_token.revoke', revoked.id, { name: revoked.name });
      return revoked;
    },
  });

  const relay = deps.runnerRelay;
  if (relay) {
    app.get(
      RELAY_ROUTE,
      {
        websocket: true,
        schema: { tags, hide: true, summary: 'A runner this replica holds, served to another replica of the deployment (WebSocket)', params: z.object({ id: z.string().max(256) }) },
        // Only a replica's credential (an HMAC under the shared secret key), never an API token.
        onRequest: async (req, reply) => {
          const id = (req.params as { id: string }).id;
          if (!relay.verify(id, req.headers.authorization)) return reply.code(401).send({ error: { kind: 'unauthorized', message: 'not a replica of this deployment' } });
          if (!relay.holds(id)) return reply.code(404).send({ error: { kind: 'not_found', message: 'this replica does not hold that runner' } });
        },
      },
      (socket: WebSocket, req) => relay.accept(socket, (req.params as { id: string }).id),
    );
  }

  if (!joinedRunners) return;
  app.get(
    CONNECT_PATH,
    {
      websocket: true,
      schema: {
        tags,
        summary: 'Where a runner joins (WebSocket; `berth runner join`)',
        description: `Authorization: Bearer <runner token>; ${PROTOCOL_HEADER}: the runner's protocol version (this control plane speaks ${PROTOCOL_VERSION}, takes ${MIN_PROTOCOL_VERSION} and up).`,
      },
      // Before the upgrade: a refused runner gets a plain HTTP answer it can print.
      onRequest: async (req, reply) => {
        try {
          const token = await tokens.authenticate(req.headers.authorization);
          const version = Number(req.headers[PROTOCOL_HEADER]);
          if (!Number.isInteger(version) || version < MIN_PROTOCOL_VERSION) {
            return reply.code(426).send({
              error: { kind: 'invalid', message: `this runner speaks protocol ${Number.isInteger(version) ? version : 'unknown'}, older than this control plane takes (${MIN_PROTOCOL_VERSION} and up): upgrade Berth on the runner's host` },
            });
          }
          (req as unknown as { runnerToken: typeof token }).runnerToken = token;
        } catch (err) {
          return reply.code(401).send(errorBody(err));
        }
      },
    },
    (socket: WebSocket, req) => {
      const token = (req as unknown as { runnerToken: { id: string; labels: Record<string, string> } }).runnerToken;
      joinedRunners.accept(socket, token, req.ip);
    },
  );
}
