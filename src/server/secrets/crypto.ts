// Secret values at rest: AES-256-GCM under one server key, which comes from
// BERTH_SECRET_KEY or from <dataDir>/secret.key (created on first use). Each ciphertext is
// bound to its row by the AAD, so a ciphertext copied onto another secret's row does not decrypt.
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import { BerthError } from '../../shared/errors.ts';
import { KEY_BYTES, loadKey, type KeyKind, type KeySource } from '../keyfile.ts';

export const SECRET_KEY_FILE = 'secret.key';

const ALGORITHM = 'aes-256-gcm';
/** 96 bits, the nonce size GCM is designed for; random per encryption. */
const IV_BYTES = 12;
const TAG_BYTES = 16;

const SECRET_KEY: KeyKind = { variable: 'BERTH_SECRET_KEY', file: SECRET_KEY_FILE, what: 'secret key', loss: 'stored secrets only decrypt with the key that encrypted them' };

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
export function loadSecretKey(opts: KeySource): Buffer {
  return loadKey(SECRET_KEY, opts).key;
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

  static load(opts: KeySource): SecretBox {
    return new SecretBox(loadSecretKey(opts));
  }

  seal(scope: SecretScope, value: string): string {
    return encryptSecret(this.#key, value, secretAad(scope));
  }

  open(scope: SecretScope, ciphertext: string): string {
    return decryptSecret(this.#key, ciphertext, secretAad(scope), scope.name);
  }

  /**
   * An HMAC-SHA256 of `message` for `purpose` under the key: what every replica sharing
   * BERTH_SECRET_KEY computes alike and nobody without it can (the purpose keeps uses apart).
   */
  mac(purpose: string, message: string): Buffer {
    return createHmac('sha256', this.#key).update(`berth:${purpose}\0${message}`, 'utf8').digest();
  }
}
