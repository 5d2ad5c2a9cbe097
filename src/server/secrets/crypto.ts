// Secret values at rest: AES-256-GCM under one server key, which comes from
// BERTH_SECRET_KEY or from <dataDir>/secret.key (created on first use). Each ciphertext is
// bound to its row by the AAD, so a ciphertext copied onto another secret's row does not decrypt.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { closeSync, constants, fstatSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { BerthError } from '../../shared/errors.ts';

export const SECRET_KEY_FILE = 'secret.key';

const ALGORITHM = 'aes-256-gcm';
const KEY_BYTES = 32;
/** 96 bits, the nonce size GCM is designed for; random per encryption. */
const IV_BYTES = 12;
const TAG_BYTES = 16;

const KEY_FORMAT = 'must hold 32 bytes as base64 (44 characters) or hex (64 characters), e.g. the output of `openssl rand -base64 32`';

/** Where a secret is stored: the fields its ciphertext is bound to. */
export interface SecretScope {
  orgId: string;
  projectId: string | null;
  name: string;
}

/** The AAD of a secret row. Ids never contain '/', so only the last part is free-form and the join is unambiguous. */
export const secretAad = (scope: SecretScope): string => `${scope.orgId}/${scope.projectId ?? ''}/${scope.name}`;

/**
 * The server's secret key: BERTH_SECRET_KEY when set, else `<dataDir>/secret.key`, which is
 * created (32 random bytes, base64, mode 0600) on first use. Errors never include the key.
 */
export function loadSecretKey(opts: { env: Readonly<Record<string, string | undefined>>; dataDir: string }): Buffer {
  const fromEnv = opts.env.BERTH_SECRET_KEY;
  if (fromEnv === undefined) return loadKeyFile(join(opts.dataDir, SECRET_KEY_FILE));
  // Set but empty is most likely a failed substitution; falling back to the key file would
  // quietly encrypt new secrets under a different key than the operator meant.
  if (fromEnv.trim() === '') throw new Error(`BERTH_SECRET_KEY is set but empty: it ${KEY_FORMAT}, or unset it to use the key file in the data dir`);
  const key = parseKey(fromEnv);
  if (!key) throw new Error(`BERTH_SECRET_KEY ${KEY_FORMAT}; the value given is not (it is not shown here)`);
  return key;
}

/** base64 of iv (12 bytes) | tag (16 bytes) | ciphertext, the format of `secrets.ciphertext`. */
export function encryptSecret(key: Buffer, plaintext: string, aad: string): string {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv(ALGORITHM, key, iv, { authTagLength: TAG_BYTES }).setAAD(Buffer.from(aad, 'utf8'));
  const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64');
}

/**
 * The plaintext of `blob`; throws when the key is wrong, the blob was altered or it belongs to
 * another row (`aad` differs). `name` only labels the error, which never includes a value.
 */
export function decryptSecret(key: Buffer, blob: string, aad: string, name?: string): string {
  const data = Buffer.from(blob, 'base64');
  try {
    if (data.length < IV_BYTES + TAG_BYTES) throw new Error('too short');
    const decipher = createDecipheriv(ALGORITHM, key, data.subarray(0, IV_BYTES), { authTagLength: TAG_BYTES });
    decipher.setAAD(Buffer.from(aad, 'utf8')).setAuthTag(data.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
    return Buffer.concat([decipher.update(data.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8');
  } catch {
    // The cause is deliberately dropped: GCM cannot tell a wrong key from altered data anyway.
    const what = name === undefined ? 'secret' : `secret ${name}`;
    throw new BerthError('internal', `${what} could not be decrypted: wrong BERTH_SECRET_KEY or the data was altered`);
  }
}

/** The key and the two operations, with the AAD derived from where the secret is stored. */
export class SecretBox {
  // A private field keeps the key out of util.inspect, JSON and logged objects.
  readonly #key: Buffer;

  constructor(key: Buffer) {
    if (key.length !== KEY_BYTES) throw new Error(`a secret key is ${KEY_BYTES} bytes, not ${key.length}`);
    this.#key = key;
  }

  static load(opts: { env: Readonly<Record<string, string | undefined>>; dataDir: string }): SecretBox {
    return new SecretBox(loadSecretKey(opts));
  }

  seal(scope: SecretScope, value: string): string {
    return encryptSecret(this.#key, value, secretAad(scope));
  }

  open(scope: SecretScope, ciphertext: string): string {
    return decryptSecret(this.#key, ciphertext, secretAad(scope), scope.name);
  }
}

/** Exactly 32 bytes of hex or base64 (standard or URL-safe), else null. */
function parseKey(text: string): Buffer | null {
  const s = text.trim();
  if (/^[0-9a-fA-F]{64}$/.test(s)) return Buffer.from(s, 'hex');
  // Buffer.from skips characters outside the alphabet, so check the shape before decoding.
  if (/^[A-Za-z0-9+/_-]{43}=?$/.test(s)) return Buffer.from(s, 'base64');
  return null;
}

function loadKeyFile(path: string): Buffer {
  return readKeyFile(path) ?? createKeyFile(path);
}

/** The key in `path`, or null when there is no such file. */
function readKeyFile(path: string): Buffer | null {
  let fd: number;
  try {
    // O_NOFOLLOW: the permission check below must be about the file itself, not a symlink's target.
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`cannot read the secret key file ${path}: ${(err as Error).message}`);
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new Error(`the secret key file ${path} is not a regular file`);
    if ((stat.mode & 0o077) !== 0) {
      const mode = (stat.mode & 0o777).toString(8).padStart(4, '0');
      throw new Error(`the secret key file ${path} has mode ${mode}, so other users may read it; run \`chmod 600 ${path}\` and start again`);
    }
    const key = parseKey(readFileSync(fd, 'utf8'));
    if (!key) {
      throw new Error(`the secret key file ${path} does not hold 32 bytes as base64 or hex; restore it from a backup, since stored secrets only decrypt with the key that encrypted them`);
    }
    return key;
  } finally {
    closeSync(fd);
  }
}

/** Writes a new key so that no reader ever sees a partial file or one with looser permissions. */
function createKeyFile(path: string): Buffer {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const key = randomBytes(KEY_BYTES);
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    // base64, so the operator can move the key into BERTH_SECRET_KEY as it is.
    writeSync(fd, `${key.toString('base64')}\n`);
    // Losing the key loses every secret: make it durable before it becomes visible.
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    // link, not rename: it fails if another process created the key meanwhile, and we then use
    // that key instead of replacing one it may already have encrypted with.
    linkSync(tmp, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return loadKeyFile(path);
  } finally {
    unlinkSync(tmp);
  }
  syncDir(dir);
  return key;
}

function syncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
