// Copies for backups: a tree written as a tar stream into one file, hashed and counted as
// it is written (one pass), and a file's checksum for the restore's check.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/** Progress of a long copy: the file being written or read and its bytes so far. */
export type BackupProgress = (p: { step: string; file: string; bytes: number }) => void;

/**
 * GNU tar flags that keep what an environment's state needs: numeric (mapped) owners,
 * xattrs (overlayfs marks opaque directories with trusted.overlay.*), ACLs, and holes in
 * sparse disk images.
 */
const TAR_KEEP = ['--numeric-owner', '--xattrs', '--xattrs-include=*', '--acls', '--sparse'];

/** Where tar runs: here, or in a mount namespace that sees what it reads (the runner's state store). */
export interface TarRunner {
  tar(args: string[]): { stdout: Readable; stderr: Readable; exited: Promise<{ code: number | null }> };
}

const HERE: TarRunner = {
  tar(args) {
    const child = spawn('tar', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<{ code: number | null }>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code) => resolve({ code }));
    });
    return { stdout: child.stdout, stderr: child.stderr, exited };
  },
};

/** Writes `entries` of `dir` (minus `exclude`) as a tar file at `out`; returns its size and sha256. */
export async function tarTree(opts: { dir: string; entries: string[]; exclude?: string[]; out: string; step: string; progress?: BackupProgress | undefined; runner?: TarRunner }): Promise<{ bytes: number; sha256: string }> {
  // Anchored: `./disk` is the top-level entry only, never a file of that name deeper in.
  const args = ['--create', '--file=-', ...TAR_KEEP, '--anchored', ...(opts.exclude ?? []).map((e) => `--exclude=${e}`), '-C', opts.dir, '--', ...opts.entries];
  const tar = (opts.runner ?? HERE).tar(args);
  let stderr = '';
  tar.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const hash = createHash('sha256');
  let bytes = 0;
  let told = 0;
  const count = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      bytes += chunk.length;
      if (bytes - told >= 64 << 20) {
        told = bytes;
        opts.progress?.({ step: opts.step, file: opts.out, bytes });
      }
      done(null, chunk);
    },
  });
  await pipeline(tar.stdout, count, createWriteStream(opts.out, { mode: 0o600 }));
  const { code } = await tar.exited;
  if (code !== 0) throw new Error(`tar could not copy ${opts.dir} (exit ${code}): ${stderr.trim() || 'no message'}`);
  opts.progress?.({ step: opts.step, file: opts.out, bytes });
  return { bytes, sha256: hash.digest('hex') };
}

/** Unpacks a tar file written by tarTree into `dir`, owners, xattrs and holes kept. */
export async function untarInto(file: string, dir: string, runner: TarRunner = HERE): Promise<void> {
  const tar = runner.tar(['--extract', `--file=${file}`, '--same-permissions', '--same-owner', ...TAR_KEEP, '-C', dir]);
  let stderr = '';
  tar.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  tar.stdout.resume();
  const { code } = await tar.exited;
  if (code !== 0) throw new Error(`tar could not unpack ${file} into ${dir} (exit ${code}): ${stderr.trim() || 'no message'}`);
}

/** A file's sha256 and size, read once. */
export async function hashFile(path: string, progress?: BackupProgress): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash('sha256');
  let bytes = 0;
  let told = 0;
  for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    bytes += chunk.length;
    if (bytes - told >= 64 << 20) {
      told = bytes;
      progress?.({ step: 'checking', file: path, bytes });
    }
  }
  return { bytes, sha256: hash.digest('hex') };
}
