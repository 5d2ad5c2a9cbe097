// The web UI's file browser: a folder's entries, and one file downloaded as itself. The
// listing runs `find` (or a plain shell loop where find lacks -printf) inside the
// environment through its exec path, so it is audited (as `folder.listed`) and its output
// redacted of the project's secrets like any command's. A download is the copy out
// (copy-out.ts, every check of issue #11: the archive rule, the secret scan, the limits)
// of exactly one file, sent unpacked.
import { createReadStream } from 'node:fs';
import { PassThrough } from 'node:stream';
import { z } from 'zod';
import { EnvironmentRef, ErrorSchema, FilesQuery } from '../../shared/api.ts';
import { FileList, FileListQuery, MAX_LISTED, type FileEntry } from '../../shared/api-files.ts';
import { copyLimitsFrom } from '../../shared/copy-archive.ts';
import { BerthError, invalid, notFound } from '../../shared/errors.ts';
import { tarEntries } from '../../runner/index.ts';
import type { App, AppDeps } from '../app.ts';
import { watchedCopyOut } from './files.ts';

const tags = ['files'];
const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema };

// Each entry: type letter, size, mtime (seconds), name, NUL-terminated (names may hold newlines).
// Exit 3: no such folder; 4: not a folder.
const LIST = `[ -e "$1" ] || [ -L "$1" ] || exit 3
[ -d "$1" ] || exit 4
cd -- "$1" || exit 3
if find . -maxdepth 0 -printf '' >/dev/null 2>&1; then
  exec find . -mindepth 1 -maxdepth 1 -printf '%y\\t%s\\t%T@\\t%P\\0' 2>/dev/null
fi
for f in .* *; do
  [ "$f" = . ] || [ "$f" = .. ] && continue
  [ -e "$f" ] || [ -L "$f" ] || continue
  if [ -L "$f" ]; then t=l; elif [ -d "$f" ]; then t=d; elif [ -f "$f" ]; then t=f; else t=o; fi
  printf '%s\\t%s\\t\\t%s\\0' "$t" "$(stat -c %s -- "$f" 2>/dev/null || echo 0)" "$f"
done`;
/** Bytes of listing read at most: MAX_LISTED entries of long names, then the rest is cut. */
const MAX_LISTING_BYTES = 4 * 1024 * 1024;
const TYPES: Record<string, FileEntry['type']> = { f: 'file', d: 'folder', l: 'link' };

export function fileBrowserRoutes(app: App, { environments, audit }: AppDeps): void {
  const limits = copyLimitsFrom(process.env);

  app.get('/api/orgs/:org/environments/:id/files/list', {
    config: { permission: 'environment.exec', ownership: 'shared' },
    schema: {
      tags,
      summary: "A folder's entries, folders first",
      description: `At most ${MAX_LISTED} entries (\`truncated\` says when there are more). Names are redacted of the environment's secrets, as command output is. The listing is on record as \`folder.listed\`.`,
      params: EnvironmentRef,
      querystring: FileListQuery,
      response: { 200: FileList, ...errors },
    },
    handler: async (req) => {
      const path = req.query.path;
      const command = await environments.exec(req.scope, req.params.id, { cmd: ['sh', '-c', LIST, 'sh', path], timeoutMs: 60_000 }, { redact: true, intent: { action: 'folder.listed', path } });
      command.stdin.end();
      command.stderr.resume();
      const chunks: Buffer[] = [];
      let size = 0;
      let cut = false;
      command.stdout.on('data', (b: Buffer) => {
        if (cut) return;
        chunks.push(b);
        size += b.length;
        if (size > MAX_LISTING_BYTES) {
          cut = true;
          void command.signal('SIGKILL');
        }
      });
      const release = app.openStreams.watch(req, () => void command.signal('SIGKILL'));
      const status = await command.exited.finally(release);
      if (status.exitCode === 3) throw notFound(`no folder ${path} in the environment`);
      if (status.exitCode === 4) throw invalid(`${path} is a file, not a folder: download it instead`, 'path');
      if (status.exitCode !== 0 && !cut) throw new BerthError('unavailable', `could not list ${path} (exit code ${status.exitCode})`);
      const records = Buffer.concat(chunks).toString('utf8').split('\0');
      // A cut listing's last record may be partial.
      if (cut || records.at(-1) === '') records.pop();
      const entries: FileEntry[] = [];
      for (const rec of records) {
        const [t, s, m, ...rest] = rec.split('\t');
        const name = rest.join('\t');
        if (!name) continue;
        const secs = Number(m);
        entries.push({ name, type: TYPES[t ?? ''] ?? 'other', size: Number(s) || 0, modifiedAt: m && Number.isFinite(secs) ? new Date(secs * 1000).toISOString() : null });
      }
      entries.sort((a, b) => Number(b.type === 'folder') - Number(a.type === 'folder') || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      return { path, entries: entries.slice(0, MAX_LISTED), truncated: cut || entries.length > MAX_LISTED };
    },
  });

  app.get('/api/orgs/:org/environments/:id/files/download', {
    config: { permission: 'environment.exec', ownership: 'shared' },
    schema: {
      tags,
      summary: 'Download one file as itself (not an archive)',
      description:
        'The file is copied out as `GET …/files` copies (the same checks: a file holding one of the environment\'s secrets, or larger than ' +
        'BERTH_COPY_MAX_BYTES, is refused whole and recorded as `file.copy_refused`), then sent unpacked. A folder or a link is refused: copy it as an archive.',
      params: EnvironmentRef,
      querystring: FilesQuery,
      response: errors,
    },
    handler: async (req, reply) => {
      const { copied, release } = await watchedCopyOut(app, { environments, audit, limits }, req, reply);
      const entries = tarEntries(createReadStream(copied.file));
      const done = () => {
        release();
        void entries.return(undefined);
        void copied.discard();
      };
      try {
        // The checked archive's first entry is the one asked for (copy-out.ts).
        const first = (await entries.next()).value;
        if (!first || first.type !== 'File') {
          throw invalid(`${req.query.path} is ${first?.type === 'Directory' ? 'a folder' : 'not a regular file'}: download a folder as an archive (\`berth env cp\`)`, 'path');
        }
        const name = first.path.split('/').pop() ?? 'download';
        const body = new PassThrough();
        first.pipe(body);
        reply.raw.once('close', done);
        return reply
          .type('application/octet-stream')
          .header('content-length', first.size ?? 0)
          .header('content-disposition', `attachment; filename="${name.replace(/[^\x20-\x7e]|["\\]/g, '_')}"; filename*=UTF-8''${encodeURIComponent(name)}`)
          .header('x-content-type-options', 'nosniff')
          .send(body as never);
      } catch (err) {
        done();
        throw err;
      }
    },
  });
}
