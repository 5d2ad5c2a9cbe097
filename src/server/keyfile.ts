// Server keys that must not live in the database: each comes from an environment variable
// or from a file in the data dir, created (32 random bytes, base64, mode 0600) on first
// use. The secrets key (secrets/crypto.ts) and the audit key (audit/key.ts) are both kept
// this way. Errors never include a key.
import { randomBytes } from 'node:crypto';
import { closeSync, constants, fstatSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';

export const KEY_BYTES = 32;

export const KEY_FORMAT = 'must hold 32 bytes as base64 (44 characters) or hex (64 characters), e.g. the output of `openssl rand -base64 32`';

export interface KeySource {
  env: Readonly<Record<string, string | undefined>>;
  dataDir: string;
}

export interface KeyKind {
  /** The environment variable that overrides the file: 'BERTH_SECRET_KEY'. */
  variable: string;
  /** The file's name in the data dir: 'secret.key'. */
  file: string;
  /** How messages name it: 'secret key'. */
  what: string;
  /** What is lost without the right key, for the message about a damaged file. */
  loss: string;
}

/** The key, and whether this call created its file (nothing can have used it before). */
export function loadKey(kind: KeyKind, opts: KeySource): { key: Buffer; created: boolean } {
  const fromEnv = opts.env[kind.variable];
  if (fromEnv === undefined) return loadKeyFile(kind, join(opts.dataDir, kind.file));
  // Set but empty is most likely a failed substitution; falling back to the key file would
  // quietly use a different key than the operator meant.
  if (fromEnv.trim() === '') throw new Error(`${kind.variable} is set but empty: it ${KEY_FORMAT}, or unset it to use the key file in the data dir`);
  const key = parseKey(fromEnv);
  if (!key) throw new Error(`${kind.variable} ${KEY_FORMAT}; the value given is not (it is not shown here)`);
  return { key, created: false };
}

/** Exactly 32 bytes of hex or base64 (standard or URL-safe), else null. */
export function parseKey(text: string): Buffer | null {
  const s = text.trim();
  if (/^[0-9a-fA-F]{64}$/.test(s)) return Buffer.from(s, 'hex');
  // Buffer.from skips characters outside the alphabet, so check the shape before decoding.
  if (/^[A-Za-z0-9+/_-]{43}=?$/.test(s)) return Buffer.from(s, 'base64');
  return null;
}

function loadKeyFile(kind: KeyKind, path: string): { key: Buffer; created: boolean } {
  const key = readKeyFile(kind, path);
  return key ? { key, created: false } : createKeyFile(kind, path);
}

/** The key in `path`, or null when there is no such file. */
function readKeyFile(kind: KeyKind, path: string): Buffer | null {
  let fd: number;
  try {
    // O_NOFOLLOW: the permission check below must be about the file itself, not a symlink's target.
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`cannot read the ${kind.what} file ${path}: ${(err as Error).message}`);
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new Error(`the ${kind.what} file ${path} is not a regular file`);
    if ((stat.mode & 0o077) !== 0) {
      const mode = (stat.mode & 0o777).toString(8).padStart(4, '0');
      throw new Error(`the ${kind.what} file ${path} has mode ${mode}, so other users may read it; run \`chmod 600 ${path}\` and start again`);
    }
    const key = parseKey(readFileSync(fd, 'utf8'));
    if (!key) throw new Error(`the ${kind.what} file ${path} does not hold 32 bytes as base64 or hex; restore it from a backup, since ${kind.loss}`);
    return key;
  } finally {
    closeSync(fd);
  }
}

/** Writes a new key so that no reader ever sees a partial file or one with looser permissions. */
function createKeyFile(kind: KeyKind, path: string): { key: Buffer; created: boolean } {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const key = randomBytes(KEY_BYTES);
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    // base64, so the operator can move the key into the environment variable as it is.
    writeSync(fd, `${key.toString('base64')}\n`);
    // Losing the key loses what it protects: make it durable before it becomes visible.
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    // link, not rename: it fails if another process created the key meanwhile, and we then use
    // that key instead of replacing one it may already have used.
    linkSync(tmp, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return loadKeyFile(kind, path);
  } finally {
    unlinkSync(tmp);
  }
  syncDir(dir);
  return { key, created: true };
}

function syncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
