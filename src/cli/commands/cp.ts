import { existsSync, statSync } from 'node:fs';
import { mkdtemp, realpath, rename, rm, symlink } from 'node:fs/promises';
import { basename, dirname, join, posix, resolve } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar';
import type { ReadEntry } from 'tar';
import { STARTED_HEADER, type ExecResult } from '../../shared/api.ts';
import { CopyChecker, copyLimitsFrom, CopyRefused, isPlainName, SKIPPED_HEADER, type CopyLimits } from '../../shared/copy-archive.ts';
import type { ApiClient } from '../client.ts';
import { CliError } from '../output.ts';

interface RemotePath {
  env: string;
  path: string;
}

/** "ID:PATH" names a path in an environment; anything with a slash before the colon is local. */
function remote(arg: string): RemotePath | undefined {
  const m = /^([a-z0-9][a-z0-9_-]*):(.*)$/.exec(arg);
  if (!m) return undefined;
  const path = m[2]!;
  if (!path.startsWith('/')) throw new CliError(`${arg}: the path inside the environment must be absolute, e.g. ${m[1]}:/workspace/file`);
  return { env: m[1]!, path };
}

/** Says on stderr when the environment was stopped and Berth started it for this copy. */
function sayStarted(res: Response): void {
  const name = res.headers.get(STARTED_HEADER);
  if (name) process.stderr.write(`berth: environment ${name} was stopped; starting it\n`);
}

const filesUrl = (c: ApiClient, r: RemotePath) => c.orgPath(`environments/${encodeURIComponent(r.env)}/files?path=${encodeURIComponent(r.path)}`);

export async function copy(client: ApiClient, src: string, dest: string): Promise<void> {
  const from = remote(src);
  const to = remote(dest);
  if (from && to) throw new CliError('copy between two environments is not supported: copy out to a local folder, then in');
  if (!from && !to) throw new CliError('one side must be ID:PATH inside an environment');
  if (to) return upload(client, resolve(src), to);
  return download(client, from!, resolve(dest));
}

async function upload(client: ApiClient, local: string, to: RemotePath): Promise<void> {
  if (!existsSync(local)) throw new CliError(`${local}: no such file or folder`);
  // Like cp: into the folder when the destination is one, else under the destination's name.
  const probed = await client.fetch(client.orgPath(`environments/${encodeURIComponent(to.env)}/exec`), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ cmd: ['sh', '-c', '[ -d "$1" ]', 'sh', to.path] }),
  });
  // The probe is what starts a stopped environment; the upload then finds it running.
  sayStarted(probed);
  const probe = (await probed.json()) as ExecResult;
  // A trailing slash names a folder, made if missing.
  const intoDir = probe.exitCode === 0 || to.path.endsWith('/');
  const targetDir = intoDir ? to.path : dirname(to.path);
  const name = intoDir ? basename(local) : basename(to.path);
  const top = basename(local);
  const pack = tar.c(
    {
      cwd: dirname(local),
      onWriteEntry(entry) {
        if (entry.path === top || entry.path.startsWith(`${top}/`)) entry.path = name + entry.path.slice(top.length);
      },
    },
    [top],
  );
  const put = await client.fetch(filesUrl(client, { env: to.env, path: targetDir }), {
    method: 'PUT',
    headers: { 'content-type': 'application/x-tar' },
    body: Readable.toWeb(Readable.from(pack)) as ReadableStream,
    duplex: 'half',
  });
  sayStarted(put);
}

async function download(client: ApiClient, from: RemotePath, local: string): Promise<void> {
  // The host decides every path: the copy is of the name asked for, and lands there.
  const name = basename(posix.normalize(from.path).replace(/\/+$/, ''));
  if (!isPlainName(name)) throw new CliError(`${from.env}:${from.path}: name a file or folder to copy, not ${from.path}`);
  let limits: CopyLimits;
  try {
    limits = copyLimitsFrom(process.env);
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  const intoDir = existsSync(local) && statSync(local).isDirectory();
  const parent = intoDir ? local : dirname(local);
  if (!existsSync(parent)) throw new CliError(`${parent}: no such folder`);
  const res = await client.fetch(filesUrl(client, from));
  sayStarted(res);
  // Unpack beside the destination, then move into place: a failed copy leaves nothing half-written.
  const staging = await mkdtemp(join(parent, '.berth-cp-'));
  try {
    // The archive is checked here too, whoever made it: each entry under `name`, links
    // inside it, bounded. node-tar then refuses absolute paths and '..' once more and never
    // writes through a symlink it made; owners are not kept (files belong to whoever runs
    // the copy, root included) and modes keep only their permission bits. Symlinks are
    // held back and made last, so no entry of the archive can be written through one.
    const checker = new CopyChecker(name, limits);
    let refused: Error | undefined;
    const links: { path: string; target: string }[] = [];
    const extract = tar.x({
      cwd: staging,
      strict: true,
      preservePaths: false,
      preserveOwner: false,
      filter: (_path, entry) => {
        if (refused) return false;
        try {
          const checked = checker.check(entry as ReadEntry);
          if (checked.kind === 'skip') return false;
          if (checked.kind === 'symlink') {
            links.push({ path: checked.path, target: checked.linkpath });
            return false;
          }
          Object.assign(entry, { path: checked.path, mode: checked.mode }, checked.kind === 'hardlink' ? { linkpath: checked.linkpath } : {});
          return true;
        } catch (err) {
          refused = err as Error;
          return false;
        }
      },
    });
    // Raw bytes are counted before parsing, and a refusal stops the download at once.
    const guard = new Transform({
      transform(chunk: Buffer, _enc, done) {
        try {
          if (refused) throw refused;
          checker.count(chunk.length);
          done(null, chunk);
        } catch (err) {
          refused ??= err as Error;
          done(refused);
        }
      },
      flush(done) {
        done(refused ?? null);
      },
    });
    try {
      await pipeline(Readable.fromWeb(res.body as never), guard, extract);
      if (refused) throw refused;
      checker.finish();
    } catch (err) {
      throw new CliError(err instanceof CopyRefused || err instanceof CliError ? err.message : `the copy of ${from.env}:${from.path} failed: ${(err as Error).message}`);
    }
    for (const link of links) await makeLink(staging, link.path, link.target);
    const skipped = checker.skipped + (Number(res.headers.get(SKIPPED_HEADER)) || 0);
    if (skipped) process.stderr.write(`berth: skipped ${skipped} device nodes or FIFOs (they are not copied out)\n`);
    const target = intoDir ? join(local, name) : local;
    await rm(target, { recursive: true, force: true });
    await rename(join(staging, name), target);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/** Makes a symlink at `path` under `root`, refusing a path that leaves root or passes through a symlink. */
async function makeLink(root: string, path: string, target: string): Promise<void> {
  const base = await realpath(root);
  const at = resolve(base, path);
  if (!at.startsWith(`${base}/`)) throw new CliError(`refusing archive entry ${path}: it points outside the destination`);
  const parent = dirname(at);
  if ((await realpath(parent)) !== parent) throw new CliError(`refusing archive entry ${path}: its folder is a symlink`);
  await symlink(target, at);
}
