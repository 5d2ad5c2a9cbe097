import type { Readable } from 'node:stream';
import { z } from 'zod';
import { EnvironmentRef, ErrorSchema, FilesQuery } from '../../shared/api.ts';
import { BerthError, invalid, notFound } from '../../shared/errors.ts';
import type { App, AppDeps } from '../app.ts';

const tags = ['files'];
const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema };

// tar runs inside the environment, in its mount namespace: a symlink there resolves to
// a path in the environment, never to the host's files.
const PACK = 'cd -- "$1" 2>/dev/null || exit 3; [ -e "$2" ] || [ -L "$2" ] || exit 4; exec tar -cf - -- "$2"';
const UNPACK = 'mkdir -p -- "$1" && cd -- "$1" && exec tar -xof -';

function split(path: string): [string, string] {
  const trimmed = path.replace(/\/+$/, '') || '/';
  if (trimmed === '/') return ['/', '.'];
  const i = trimmed.lastIndexOf('/');
  return [trimmed.slice(0, i) || '/', trimmed.slice(i + 1)];
}

export function fileRoutes(app: App, { environments }: AppDeps): void {
  app.addContentTypeParser('application/x-tar', (_req, payload, done) => done(null, payload));

  app.get('/api/orgs/:org/environments/:id/files', {
    config: { permission: 'environment.exec' },
    schema: {
      tags,
      summary: 'Download a file or folder as a tar archive',
      description: 'The archive holds one top-level entry: the last component of `path`.',
      params: EnvironmentRef,
      querystring: FilesQuery,
      response: errors,
    },
    handler: async (req, reply) => {
      const [dir, base] = split(req.query.path);
      const command = await environments.exec(req.scope, req.params.id, { cmd: ['sh', '-c', PACK, 'sh', dir, base], timeoutMs: 3_600_000 }, { redact: false });
      command.stdin.end();
      const stderr: Buffer[] = [];
      command.stderr.on('data', (b: Buffer) => stderr.push(b));
      // Decide the status from the first chunk or the end, whichever comes first.
      const stdout = command.stdout;
      const first = await new Promise<'data' | 'end'>((resolve) => {
        const onEnd = () => resolve('end');
        stdout.once('end', onEnd);
        stdout.once('data', (chunk: Buffer) => {
          stdout.off('end', onEnd);
          stdout.pause();
          stdout.unshift(chunk);
          resolve('data');
        });
      });
      if (first === 'end') {
        const status = await command.exited;
        if (status.exitCode === 3 || status.exitCode === 4) throw notFound(`no file or folder ${req.query.path} in the environment`);
        throw new BerthError('unavailable', `could not read ${req.query.path}: ${Buffer.concat(stderr).toString().trim() || `tar exited ${status.exitCode}`}`);
      }
      req.raw.on('close', () => void command.signal('SIGKILL'));
      // The tar stream is not a JSON reply: send it past the serializer.
      return reply.type('application/x-tar').send(command.stdout as never);
    },
  });

  app.put('/api/orgs/:org/environments/:id/files', {
    config: { permission: 'environment.exec' },
    schema: {
      tags,
      summary: 'Upload a tar archive and unpack it into a folder',
      description: 'Send `Content-Type: application/x-tar`. The folder `path` is created if missing.',
      params: EnvironmentRef,
      querystring: FilesQuery,
      response: { 204: z.null().describe('unpacked'), ...errors },
    },
    handler: async (req, reply) => {
      if (req.headers['content-type'] !== 'application/x-tar') throw invalid('send the files as a tar archive with Content-Type: application/x-tar', 'content-type');
      const body = req.body as Readable;
      const command = await environments.exec(req.scope, req.params.id, { cmd: ['sh', '-c', UNPACK, 'sh', req.query.path], timeoutMs: 3_600_000 }, { redact: false });
      const stderr: Buffer[] = [];
      command.stderr.on('data', (b: Buffer) => stderr.push(b));
      command.stdout.resume();
      body.pipe(command.stdin);
      const status = await command.exited;
      if (status.exitCode !== 0) {
        throw invalid(`could not unpack into ${req.query.path}: ${Buffer.concat(stderr).toString().trim() || `tar exited ${status.exitCode}`}`, 'body');
      }
      return reply.code(204).send(null);
    },
  });
}
