import { z } from 'zod';
import { atLeast } from '../authz.ts';
import {
  CreateEnvironmentBody,
  Environment,
  EnvironmentDetail,
  EnvironmentList,
  EnvironmentRef,
  ErrorSchema,
  OrgRef,
  ExecBody,
  ExecResult,
  ListEnvironmentsQuery,
  ShareRef,
  STARTED_HEADER,
} from '../../shared/api.ts';
import type { ExitStatus } from '../../runner/index.ts';
import { invalid, type BerthError } from '../../shared/errors.ts';
import { collectCapped } from '../../shared/output.ts';
import { formatDuration, MAX_TIMEOUT_MS, parseDuration } from '../../shared/units.ts';
import { errorBody, type App, type AppDeps } from '../app.ts';
import { environmentArchiveRoutes } from './environment-archive.ts';

const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema, 503: ErrorSchema };
const tags = ['environments'];

export const DEFAULT_EXEC_TIMEOUT_MS = 10 * 60_000;

export function timeoutMs(timeout: number | string | null | undefined): number | undefined {
  if (timeout === undefined) return DEFAULT_EXEC_TIMEOUT_MS;
  if (timeout === null || timeout === 0 || timeout === 'off') return undefined;
  const ms = typeof timeout === 'number' ? timeout : parseDuration(timeout);
  if (ms === undefined) throw invalid('timeout must be a duration such as 60s', 'timeout');
  // A timer cannot wait longer: past it the command would be killed at once.
  if (ms > MAX_TIMEOUT_MS) throw invalid(`timeout must be at most ${formatDuration(MAX_TIMEOUT_MS)}, got ${typeof timeout === 'number' ? `${timeout} ms` : timeout}: give a shorter one, or "off" for none`, 'timeout');
  return ms;
}

/** An exit status as the API gives it: whether the OOM killer ended the command, and what Berth says of it. */
export function exitFields(status: ExitStatus) {
  return { exitCode: status.exitCode, durationMs: status.durationMs, timedOut: status.timedOut, oomKilled: status.oomKilled ?? false, message: status.message ?? null };
}

export function environmentRoutes(app: App, deps: AppDeps): void {
  const { environments } = deps;
  environmentArchiveRoutes(app, deps);
  app.get('/api/orgs/:org/environments', {
    config: { permission: 'environment.read' },
    schema: { tags, summary: 'List environments', params: OrgRef, querystring: ListEnvironmentsQuery, response: { 200: EnvironmentList, ...errors } },
    handler: async (req) =>
      environments.list(req.scope, { ...req.query, includeDeleted: req.query.includeDeleted === 'true' }),
  });

  app.post('/api/orgs/:org/environments', {
    config: { permission: 'environment.write', audit: 'environment.create' },
    schema: { tags, summary: 'Create and start an environment', params: OrgRef, body: CreateEnvironmentBody, response: { 201: Environment, ...errors } },
    // An admin's --allow-domain may widen the org's and project's policy, as `berth policy set --env` may.
    handler: async (req, reply) => reply.code(201).send(await environments.create(req.scope, req.body, { mayWiden: atLeast(req.scope.role, 'admin'), hostPaths: req.caller.instanceAdmin, role: req.scope.role })),
  });

  app.get('/api/orgs/:org/environments/:id', {
    config: { permission: 'environment.read', ownership: 'org' },
    schema: { tags, summary: 'Show an environment with its resource use', params: EnvironmentRef, response: { 200: EnvironmentDetail, ...errors } },
    handler: async (req) => environments.show(req.scope, req.params.id),
  });

  app.post('/api/orgs/:org/environments/:id/start', {
    config: { permission: 'environment.write', audit: 'environment.start', ownership: 'shared' },
    schema: { tags, summary: 'Start a stopped environment', params: EnvironmentRef, response: { 200: Environment, ...errors } },
    handler: async (req) => environments.start(req.scope, req.params.id),
  });

  app.post('/api/orgs/:org/environments/:id/stop', {
    config: { permission: 'environment.write', audit: 'environment.stop', ownership: 'shared' },
    schema: { tags, summary: 'Stop an environment, keeping its files', params: EnvironmentRef, response: { 200: Environment, ...errors } },
    handler: async (req) => environments.stop(req.scope, req.params.id),
  });

  // Keeping processes and memory needs CRIU under the runner's runtime: where it cannot, 409 says why.
  for (const verb of ['pause', 'resume'] as const) {
    app.post(`/api/orgs/:org/environments/:id/${verb}`, {
      config: { permission: 'environment.write', audit: `environment.${verb}`, ownership: 'shared' },
      schema: {
        tags,
        summary: verb === 'pause' ? "Pause a running environment, keeping its processes and memory (where its runner can checkpoint: `GET /api/runners` says)" : 'Resume a paused environment',
        params: EnvironmentRef,
        response: { 200: Environment, ...errors },
      },
      handler: async (req) => environments.pause(req.scope, req.params.id, verb),
    });
  }

  app.delete('/api/orgs/:org/environments/:id', {
    config: { permission: 'environment.write', audit: 'environment.delete', ownership: 'owner' },
    schema: {
      tags,
      summary: 'Remove an environment and free its disk',
      description: 'With forget=true, a lost environment (its runner gone) is marked deleted without its runner; its files may remain on that host.',
      params: EnvironmentRef,
      querystring: z.strictObject({ forget: z.enum(['true', 'false']).optional() }),
      response: { 200: Environment, ...errors },
    },
    handler: async (req) => environments.remove(req.scope, req.params.id, { forget: req.query.forget === 'true' }),
  });

  // Its owner (or an admin) lets someone else use it: a member, or everyone in the org.
  app.put('/api/orgs/:org/environments/:id/shares/:grantee', {
    config: { permission: 'environment.write', audit: 'environment.share', ownership: 'owner' },
    schema: { tags, summary: 'Let a member of the org (by email), or everyone in it (`org`), use the environment as their role allows', params: ShareRef, response: { 200: Environment, ...errors } },
    handler: async (req) => environments.share(req.scope, req.params.id, req.params.grantee),
  });

  app.delete('/api/orgs/:org/environments/:id/shares/:grantee', {
    config: { permission: 'environment.write', audit: 'environment.unshare', ownership: 'owner' },
    schema: { tags, summary: 'Take back a share', params: ShareRef, response: { 200: Environment, ...errors } },
    handler: async (req) => environments.unshare(req.scope, req.params.id, req.params.grantee),
  });

  app.post('/api/orgs/:org/environments/:id/exec', {
    config: { permission: 'environment.exec', ownership: 'shared' },
    schema: {
      tags,
      summary: 'Run a command',
      description:
        'Runs a command and answers with its output and exit code as JSON. With `Accept: text/event-stream` the output streams as ' +
        'server-sent events instead: `stdout` and `stderr` events carry `{"data": "..."}`, and a final `exit` event carries the ExecResult fields without output. ' +
        "A stopped environment is started first (the reply then has the `X-Berth-Started` header, naming it), unless the org's settings turn auto-start off (409).",
      params: EnvironmentRef,
      body: ExecBody,
      response: { 200: ExecResult, ...errors },
    },
    handler: async (req, reply) => {
      const { cmd, cwd, env, stdin, timeout } = req.body;
      // A stopped environment starts first, and the reply says so.
      let started: string | undefined;
      const command = await environments.exec(req.scope, req.params.id, { cmd, cwd, env, timeoutMs: timeoutMs(timeout) }, { redact: true, autoStart: { via: 'exec', starting: (name) => (started = name) } });
      command.stdin.end(stdin ?? '');
      if (started) void reply.header(STARTED_HEADER, started);

      if (req.headers.accept?.includes('text/event-stream')) {
        reply.hijack();
        const res = reply.raw;
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', ...(started && { [STARTED_HEADER]: started }) });
        const send = (event: string, data: unknown) => !res.writableEnded && res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
        command.stdout.setEncoding('utf8').on('data', (data: string) => send('stdout', { data }));
        command.stderr.setEncoding('utf8').on('data', (data: string) => send('stderr', { data }));
        // A caller whose token or role no longer allows this ends with an error event.
        const release = app.openStreams.watch(req, (why) => {
          void command.signal('SIGKILL');
          if (!res.writableEnded) res.end(`event: error\ndata: ${JSON.stringify(errorBody(why))}\n\n`);
        });
        // A client that goes away takes its command with it.
        res.on('close', () => {
          release();
          void command.signal('SIGKILL');
        });
        const status = await command.exited;
        release();
        if (res.writableEnded) return;
        send('exit', exitFields(status));
        res.end();
        return;
      }

      // A caller whose token or role no longer allows this gets that error, not the output.
      let lostRight: BerthError | undefined;
      const release = app.openStreams.watch(req, (why) => {
        lostRight = why;
        void command.signal('SIGKILL');
      });
      void command.exited.then(release, release);

      // A caller that hangs up does not leave its command running until the timeout.
      reply.raw.on('close', () => {
        if (!reply.raw.writableFinished) void command.signal('SIGKILL');
      });
      // Each stream keeps at most 16 MiB, then a marker; the rest is read and dropped, so the
      // command still runs to its end and its exit code is the one answered.
      const out = collectCapped(command.stdout);
      const err = collectCapped(command.stderr);
      const status = await command.exited;
      if (lostRight) throw lostRight;
      return { ...exitFields(status), stdout: out.text(), stderr: err.text() };
    },
  });
}
