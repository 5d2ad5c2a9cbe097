import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { z } from 'zod';
import { EnvironmentRef, ErrorSchema, FilesQuery, STARTED_HEADER } from '../../shared/api.ts';
import { copyLimitsFrom, SKIPPED_HEADER } from '../../shared/copy-archive.ts';
import { BerthError, invalid } from '../../shared/errors.ts';
import { Redactor } from '../../shared/redact.ts';
import type { App, AppDeps } from '../app.ts';
import { copyOut, type CopiedOut, type CopyOutDeps } from '../environments/copy-out.ts';
import type { AutoStart } from '../environments/service.ts';
import type { FastifyReply, FastifyRequest } from 'fastify';

const tags = ['files'];
const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema };

// tar runs inside the environment, in its mount namespace: a symlink there resolves to
// a path in the environment, never to the host's files (copy-out.ts reads the other way).
const UNPACK = 'mkdir -p -- "$1" && cd -- "$1" && exec tar -xof -';

/**
 * PATH copied out for this request through copy-out.ts's checks. Reading and checking come
 * first, so a caller who loses the right meanwhile (open-streams.ts) or hangs up stops the
 * read; the caller of this calls `release` once its reply is done.
 */
export async function watchedCopyOut(
  app: App,
  deps: CopyOutDeps,
  req: FastifyRequest<{ Params: { id: string }; Querystring: { path: string } }>,
  reply: FastifyReply,
  autoStart?: AutoStart,
): Promise<{ copied: CopiedOut; release: () => void }> {
  const lost = new AbortController();
  const release = app.openStreams.watch(req, (why) => {
    lost.abort(why);
    reply.raw.destroy();
  });
  reply.raw.once('close', () => lost.abort(new BerthError('unavailable', 'the caller went away')));
  try {
    return { copied: await copyOut(deps, req.scope, req.params.id, req.query.path, lost.signal, autoStart), release };
  } catch (err) {
    release();
    throw err;
  }
}

export function fileRoutes(app: App, { environments, audit }: AppDeps): void {
  // Read once, when the routes are made: a bad value stops the control plane from starting.
  const limits = copyLimitsFrom(process.env);
  app.addContentTypeParser('application/x-tar', (_req, payload, done) => done(null, payload));

  app.get('/api/orgs/:org/environments/:id/files', {
    config: { permission: 'environment.exec', ownership: 'shared' },
    schema: {
      tags,
      summary: 'Download a file or folder as a tar archive',
      description:
        'The archive holds one top-level entry, the last component of `path`, and nothing outside it: entries are files, folders and ' +
        'links that stay inside it, with no owners and only permission bits (no setuid, setgid or sticky); device nodes and FIFOs are left out (counted in the `X-Berth-Skipped` header). ' +
        'A copy that breaks this (the environment makes the archive), holds one of the environment\'s secrets, or is larger than ' +
        'BERTH_COPY_MAX_ENTRIES / BERTH_COPY_MAX_BYTES is refused whole (403 or 400) and recorded as `file.copy_refused`. A stopped environment is started first (the `X-Berth-Started` header names it), unless the org turns auto-start off (409).',
      params: EnvironmentRef,
      querystring: FilesQuery,
      response: errors,
    },
    handler: async (req, reply) => {
      // A stopped environment starts first, and the reply says so.
      const { copied, release } = await watchedCopyOut(app, { environments, audit, limits }, req, reply, { via: 'copy', starting: (name) => void reply.header(STARTED_HEADER, name) });
      // A caller who loses the right mid-download gets a broken transfer, never a short
      // archive that looks complete.
      const archive = createReadStream(copied.file);
      reply.raw.once('close', () => {
        release();
        archive.destroy();
        void copied.discard();
      });
      // The tar stream is not a JSON reply: send it past the serializer.
      // What was left out is said, so that a person copying hears of it.
      if (copied.skipped) void reply.header(SKIPPED_HEADER, copied.skipped);
      return reply.type('application/x-tar').header('content-length', copied.size).send(archive as never);
    },
  });

  app.put('/api/orgs/:org/environments/:id/files', {
    config: { permission: 'environment.exec', ownership: 'shared' },
    schema: {
      tags,
      summary: 'Upload a tar archive and unpack it into a folder',
      description: 'Send `Content-Type: application/x-tar`. The folder `path` is created if missing. A stopped environment is started first (the `X-Berth-Started` header names it), unless the org turns auto-start off (409).',
      params: EnvironmentRef,
      querystring: FilesQuery,
      response: { 204: z.null().describe('unpacked'), ...errors },
    },
    handler: async (req, reply) => {
      if (req.headers['content-type'] !== 'application/x-tar') throw invalid('send the files as a tar archive with Content-Type: application/x-tar', 'content-type');
      const body = req.body as Readable;
      const command = await environments.exec(req.scope, req.params.id, { cmd: ['sh', '-c', UNPACK, 'sh', req.query.path], timeoutMs: 3_600_000 }, {
        redact: false,
        autoStart: { via: 'copy', starting: (name) => void reply.header(STARTED_HEADER, name) },
      });
      const stderr: Buffer[] = [];
      command.stderr.on('data', (b: Buffer) => stderr.push(b));
      command.stdout.resume();
      // A caller who loses the right mid-upload stops unpacking and hears why.
      let lostRight: BerthError | undefined;
      const release = app.openStreams.watch(req, (why) => {
        lostRight = why;
        void command.signal('SIGKILL');
      });
      body.pipe(command.stdin);
      const status = await command.exited.finally(release);
      if (lostRight) throw lostRight;
      if (status.exitCode !== 0) {
        // The environment's tar wrote this (its output is not redacted on the way): no secret in it leaves.
        const redactor = new Redactor((await environments.secretsOf(req.scope, req.params.id)).secrets);
        throw invalid(`could not unpack into ${req.query.path}: ${redactor.redact(Buffer.concat(stderr).toString().trim()) || `tar exited ${status.exitCode}`}`, 'body');
      }
      return reply.code(204).send(null);
    },
  });
}
