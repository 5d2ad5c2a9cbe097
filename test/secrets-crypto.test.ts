// Secret values at rest: AES-256-GCM with the AAD bound to the row, and where the key comes from.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { after, describe, test } from 'node:test';
import { decryptSecret, encryptSecret, loadSecretKey, SecretBox, secretAad } from '../src/server/secrets/crypto.ts';

const dirs: string[] = [];
const tempDir = () => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-secrets-'));
  dirs.push(dir);
  return dir;
};
after(() => dirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

const key = randomBytes(32);
const AAD = 'org_1/prj_1/DATABASE_URL';
const undecryptable = (what = 'secret DATABASE_URL') => ({
  name: 'BerthError',
  kind: 'internal',
  message: `${what} could not be decrypted: wrong BERTH_SECRET_KEY or the data was altered`,
});
const UNDECRYPTABLE = undecryptable();

/** The blob with one byte flipped at `offset` of its decoded bytes. */
function flipped(blob: string, offset: number): string {
  const data = Buffer.from(blob, 'base64');
  data[offset]! ^= 0x01;
  return data.toString('base64');
}

describe('encryptSecret / decryptSecret', () => {
  test('round trip, including empty and non-ASCII values', () => {
    for (const value of ['postgres://u:p@db/app', '', 'pässwörd 🔑', 'x'.repeat(10_000)]) {
      assert.equal(decryptSecret(key, encryptSecret(key, value, AAD), AAD), value);
    }
  });

  test('the blob is iv | tag | ciphertext, with a fresh iv each time', () => {
    const a = Buffer.from(encryptSecret(key, 'hunter22', AAD), 'base64');
    const b = Buffer.from(encryptSecret(key, 'hunter22', AAD), 'base64');
    assert.equal(a.length, 12 + 16 + 'hunter22'.length);
    assert.notDeepEqual(a.subarray(0, 12), b.subarray(0, 12));
    assert.notDeepEqual(a, b);
  });

  test('tampering with the iv, the tag or the body is detected', () => {
    const blob = encryptSecret(key, 'hunter22', AAD);
    for (const [part, offset] of [['iv', 0], ['iv', 11], ['tag', 12], ['tag', 27], ['body', 28], ['body', 35]] as const) {
      assert.throws(() => decryptSecret(key, flipped(blob, offset), AAD, 'DATABASE_URL'), UNDECRYPTABLE, `${part} byte ${offset}`);
    }
    const short = Buffer.from(blob, 'base64').subarray(0, 20).toString('base64');
    assert.throws(() => decryptSecret(key, short, AAD, 'DATABASE_URL'), UNDECRYPTABLE);
    assert.throws(() => decryptSecret(key, '', AAD, 'DATABASE_URL'), UNDECRYPTABLE);
  });

  test('a ciphertext moved to another row does not decrypt', () => {
    const blob = encryptSecret(key, 'hunter22', AAD);
    assert.throws(() => decryptSecret(key, blob, 'org_1/prj_2/DATABASE_URL', 'DATABASE_URL'), UNDECRYPTABLE);
    assert.throws(() => decryptSecret(key, blob, 'org_1//DATABASE_URL', 'DATABASE_URL'), UNDECRYPTABLE);
  });

  test('a wrong key is reported without the value, as an internal error', () => {
    const blob = encryptSecret(key, 'hunter22', AAD);
    assert.throws(() => decryptSecret(randomBytes(32), blob, AAD, 'DATABASE_URL'), UNDECRYPTABLE);
    assert.throws(() => decryptSecret(randomBytes(32), blob, AAD), undecryptable('secret'));
  });
});

describe('SecretBox', () => {
  const box = new SecretBox(key);
  const row = { orgId: 'org_1', projectId: 'prj_1', name: 'DATABASE_URL' };

  test('seals to a row and opens only on that row', () => {
    const blob = box.seal(row, 'hunter22');
    assert.equal(box.open(row, blob), 'hunter22');
    assert.equal(decryptSecret(key, blob, secretAad(row)), 'hunter22');
    assert.throws(() => box.open({ ...row, projectId: null }, blob), UNDECRYPTABLE);
    assert.throws(() => box.open({ ...row, orgId: 'org_2' }, blob), UNDECRYPTABLE);
    assert.throws(() => box.open({ ...row, name: 'OTHER' }, blob), undecryptable('secret OTHER'));
  });

  test('keeps the key out of inspection', () => {
    assert.equal(inspect(box, { showHidden: true, depth: 5 }), 'SecretBox {}');
    assert.equal(JSON.stringify(box), '{}');
  });

  test('refuses a key that is not 32 bytes', () => {
    assert.throws(() => new SecretBox(randomBytes(16)), /32 bytes, not 16/);
  });
});

describe('loadSecretKey', () => {
  test('from BERTH_SECRET_KEY as base64 or hex', () => {
    const dataDir = tempDir();
    assert.deepEqual(loadSecretKey({ env: { BERTH_SECRET_KEY: key.toString('base64') }, dataDir }), key);
    assert.deepEqual(loadSecretKey({ env: { BERTH_SECRET_KEY: `${key.toString('base64')}\n` }, dataDir }), key);
    assert.deepEqual(loadSecretKey({ env: { BERTH_SECRET_KEY: key.toString('hex') }, dataDir }), key);
    assert.deepEqual(loadSecretKey({ env: { BERTH_SECRET_KEY: key.toString('hex').toUpperCase() }, dataDir }), key);
    assert.deepEqual(loadSecretKey({ env: { BERTH_SECRET_KEY: key.toString('base64url') }, dataDir }), key);
    assert.throws(() => statSync(join(dataDir, 'secret.key')), /ENOENT/, 'an env key creates no key file');
  });

  test('a bad BERTH_SECRET_KEY says what is expected and never shows the value', () => {
    const dataDir = tempDir();
    const bad = [
      'correct-horse-battery-staple',
      randomBytes(16).toString('base64'),
      randomBytes(33).toString('base64'),
      randomBytes(31).toString('hex'),
      `${key.toString('hex').slice(0, 63)}g`,
      `${key.toString('base64').slice(0, 40)}!!!=`,
      ' ',
    ];
    for (const value of bad) {
      assert.throws(
        () => loadSecretKey({ env: { BERTH_SECRET_KEY: value }, dataDir }),
        (err: Error) => {
          assert.match(err.message, /BERTH_SECRET_KEY .*32 bytes as base64 \(44 characters\) or hex \(64 characters\)/);
          if (value.trim()) assert.ok(!err.message.includes(value.trim()), `message shows the value: ${err.message}`);
          return true;
        },
      );
    }
  });

  test('creates the key file 0600 on first use and reuses it', () => {
    const dataDir = tempDir();
    const first = loadSecretKey({ env: {}, dataDir });
    assert.equal(first.length, 32);
    const path = join(dataDir, 'secret.key');
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal(readFileSync(path, 'utf8'), `${first.toString('base64')}\n`);
    assert.deepEqual(loadSecretKey({ env: {}, dataDir }), first);
    assert.deepEqual(loadSecretKey({ env: { BERTH_SECRET_KEY: undefined }, dataDir }), first);
    // The file's content works as BERTH_SECRET_KEY, so the key can be moved into the environment.
    assert.deepEqual(loadSecretKey({ env: { BERTH_SECRET_KEY: readFileSync(path, 'utf8') }, dataDir: tempDir() }), first);
  });

  test('creates the data dir when it does not exist yet', () => {
    const dataDir = join(tempDir(), 'nested', 'data');
    assert.equal(loadSecretKey({ env: {}, dataDir }).length, 32);
    assert.equal(statSync(join(dataDir, 'secret.key')).mode & 0o777, 0o600);
  });

  test('refuses a key file other users may read, and says to chmod 600 it', () => {
    const dataDir = tempDir();
    loadSecretKey({ env: {}, dataDir });
    const path = join(dataDir, 'secret.key');
    const content = readFileSync(path, 'utf8');
    chmodSync(path, 0o644);
    assert.throws(() => loadSecretKey({ env: {}, dataDir }), (err: Error) => {
      assert.ok(err.message.includes(`has mode 0644`), err.message);
      assert.ok(err.message.includes(`chmod 600 ${path}`), err.message);
      assert.ok(!err.message.includes(content.trim()));
      return true;
    });
    chmodSync(path, 0o600);
    assert.equal(loadSecretKey({ env: {}, dataDir }).toString('base64'), content.trim());
  });

  test('refuses a key file that does not hold a key, without showing its content', () => {
    const dataDir = tempDir();
    writeFileSync(join(dataDir, 'secret.key'), 'not-a-key-at-all', { mode: 0o600 });
    assert.throws(() => loadSecretKey({ env: {}, dataDir }), (err: Error) => {
      assert.match(err.message, /does not hold 32 bytes as base64 or hex; restore it from a backup/);
      assert.ok(!err.message.includes('not-a-key-at-all'));
      return true;
    });
  });
});
