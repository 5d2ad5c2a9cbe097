// Java reads neither SSL_CERT_FILE nor the PEM store: it trusts its own keystore (cacerts).
// When the host has keytool, the trust layer gets a copy of each keystore the image has
// with the CAs imported; without keytool the image's keystore is left as it is (a note
// says so). The keystore comes from an untrusted image: only JKS and PKCS#12 files of a
// sane size are read, and keytool runs as nobody, with a time limit.
import { execFile } from 'node:child_process';
import { chownSync, closeSync, existsSync, lstatSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import { resolveInRoot } from './resolve-in-root.ts';

/** Debian's and RHEL's shared keystores, and where Temurin images keep theirs; plus every JDK under /usr/lib/jvm. */
const KEYSTORES = ['/etc/ssl/certs/java/cacerts', '/etc/pki/ca-trust/extracted/java/cacerts', '/opt/java/openjdk/lib/security/cacerts'];
const JVM_DIR = '/usr/lib/jvm';
const MAX_KEYSTORE_BYTES = 4 * 1024 * 1024;
/** Every JDK's and distribution's default: keystores with another password are left alone. */
const STORE_PASSWORD = 'changeit';
const KEYTOOL_TIMEOUT_MS = 60_000;
const NOBODY = 65_534;

/** keytool on the host's PATH, or undefined. */
export function findKeytool(): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(delimiter)) {
    const path = join(dir, 'keytool');
    if (dir && existsSync(path)) return path;
  }
  return undefined;
}

/** The image's keystores (paths inside it, links followed inside it), JKS or PKCS#12 only. */
export function javaKeystores(rootfs: string): string[] {
  const candidates = [...KEYSTORES];
  const jvm = resolveInRoot(rootfs, JVM_DIR);
  if (jvm && lstatSync(join(rootfs, jvm)).isDirectory()) {
    for (const jdk of readdirSync(join(rootfs, jvm)).slice(0, 64)) candidates.push(`${jvm}/${jdk}/lib/security/cacerts`, `${jvm}/${jdk}/jre/lib/security/cacerts`);
  }
  const found = new Set<string>();
  for (const c of candidates) {
    const real = resolveInRoot(rootfs, c);
    if (real && isKeystore(join(rootfs, real))) found.add(real);
  }
  return [...found];
}

function isKeystore(path: string): boolean {
  try {
    const st = lstatSync(path);
    if (!st.isFile() || st.size > MAX_KEYSTORE_BYTES || st.size < 4) return false;
    const head = Buffer.alloc(4);
    const fd = openSync(path, 'r');
    try {
      readSync(fd, head, 0, 4, 0);
    } finally {
      closeSync(fd);
    }
    // JKS (0xFEEDFEED) or PKCS#12 (a DER SEQUENCE); not JCEKS, whose loading deserializes objects.
    return head.readUInt32BE(0) === 0xfeedfeed || head[0] === 0x30;
  } catch {
    return false;
  }
}

/** The keystore at `source` with `cas` imported as trusted certificates (alias = name). Throws with keytool's last line. */
export async function keystoreWith(keytool: string, source: string, cas: readonly { name: string; pem: string }[]): Promise<Buffer> {
  const work = mkdtempSync('/tmp/berth-keystore-');
  const asRoot = process.getuid?.() === 0;
  const own = (path: string) => asRoot && chownSync(path, NOBODY, NOBODY);
  try {
    own(work);
    const store = join(work, 'cacerts');
    writeFileSync(store, readFileSync(source));
    own(store);
    for (const ca of cas) {
      const pem = join(work, `${ca.name}.pem`);
      writeFileSync(pem, ca.pem);
      own(pem);
      const args = ['-J-XX:-UsePerfData', '-importcert', '-noprompt', '-keystore', store, '-storepass', STORE_PASSWORD, '-alias', ca.name, '-file', pem];
      await promisify(execFile)(keytool, args, { timeout: KEYTOOL_TIMEOUT_MS, cwd: work, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: work }, ...(asRoot ? { uid: NOBODY, gid: NOBODY } : {}) }).catch((e: { stdout?: string; stderr?: string; killed?: boolean }) => {
        const said = `${e.stderr ?? ''}${e.stdout ?? ''}`.trim().split('\n').at(-1) ?? '';
        throw new Error(e.killed ? 'keytool ran out of time' : `keytool: ${said.slice(0, 300)}`);
      });
    }
    return readFileSync(store);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
