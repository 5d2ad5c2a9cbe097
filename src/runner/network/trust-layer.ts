// The trust layer: a small read-only overlay layer put above an environment's image, so
// that its system trust store (the files apt, wget, OpenSSL and GnuTLS read whatever the
// environment's variables say) also trusts the runner's egress CA and the company CAs.
// Each store file the image has is written again with those CAs appended, and the CAs are
// dropped in the image's anchor directories too, so update-ca-certificates (run by apt when
// a package brings certificates) builds them into the store it writes. A layer rather than
// a bind mount over the file: update-ca-certificates replaces the file by a rename, which a
// mount point refuses, and apt would fail. Images pulled or built later get theirs on their
// first start; none is rebuilt. Made once per image and set of CAs, then reused. Java's
// keystores too, when the host has keytool (java-trust.ts).
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync, type Stats } from 'node:fs';
import { join, posix } from 'node:path';
import { ID_BASE } from '../idmap.ts';
import { javaKeystores, keystoreWith } from './java-trust.ts';
import { lstatQuiet, resolveInRoot } from './resolve-in-root.ts';

/** Where images keep their bundle: Debian and Ubuntu, RHEL and Fedora, Alpine (a link to the first, often), SUSE. */
const STORE_FILES = ['/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt', '/etc/ssl/cert.pem', '/etc/ssl/ca-bundle.pem'];
/** Where update-ca-certificates (Debian, Alpine) and update-ca-trust (RHEL) look for local CAs. */
const ANCHOR_DIRS = ['/usr/local/share/ca-certificates', '/etc/pki/ca-trust/source/anchors'];
/** A store larger than this is not a store: it is left as it is. */
const MAX_STORE_BYTES = 8 * 1024 * 1024;
/** Changes when what a layer holds changes, so older layers are not reused. */
const LAYOUT = 'trust-layer-2';

export interface TrustCa {
  /** File name stem in the anchor directories (`berth-egress`, `company-1`). */
  name: string;
  pem: string;
}

export interface TrustLayerOptions {
  /** The host's keytool, for the image's Java keystores; without it they are left as they are. */
  keytool?: string | undefined;
  /** What could not be done (a keystore left as it was), for the runner's log. */
  warn?: ((message: string) => void) | undefined;
}

/**
 * The layer for the image at `rootfs` trusting `cas`, under `dir`; undefined when the image
 * has neither a store file nor an anchor directory nor a keystore (its variables still
 * point at the runner's bundle). The image is untrusted: its links are followed inside
 * `rootfs` only, and only regular files are read.
 */
export async function trustLayer(dir: string, rootfs: string, cas: readonly TrustCa[], opts: TrustLayerOptions = {}): Promise<string | undefined> {
  const key = createHash('sha256').update(`${LAYOUT}\0${rootfs}\0${opts.keytool ?? ''}\0`).update(cas.map((c) => `${c.name}\0${c.pem}`).join('\0')).digest('hex').slice(0, 32);
  const layer = join(dir, key);
  if (existsSync(layer)) return layer;

  const stores = new Set<string>();
  for (const path of STORE_FILES) {
    const real = resolveInRoot(rootfs, path);
    const st = real === undefined ? undefined : lstatQuiet(join(rootfs, real));
    if (real && st?.isFile() && st.size <= MAX_STORE_BYTES) stores.add(real);
  }
  const anchors = ANCHOR_DIRS.map((d) => resolveInRoot(rootfs, d)).filter((d): d is string => d !== undefined && Boolean(lstatQuiet(join(rootfs, d))?.isDirectory()));
  const keystores = javaKeystores(rootfs);
  if (keystores.length && !opts.keytool) opts.warn?.(`the image has a Java keystore (${keystores.join(', ')}) but this host has no keytool: Java in its environments does not trust the runner's and company CAs (install a JRE on the runner's host, e.g. apt-get install default-jre-headless)`);
  if (stores.size === 0 && anchors.length === 0 && (keystores.length === 0 || !opts.keytool)) return undefined;

  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // Starts of two environments on one image may make it at once (keytool is awaited): each its own.
  const tmp = `${layer}.tmp-${randomBytes(6).toString('hex')}`;
  mkdirSync(tmp, { mode: 0o755 });
  const added = cas.map((c) => `# ${c.name}\n${c.pem.trim()}\n`).join('');
  for (const store of stores) {
    const image = join(rootfs, store);
    const text = readFileSync(image, 'utf8');
    writeLike(tmp, rootfs, store, `${text.trimEnd()}\n${added}`, lstatSync(image));
  }
  for (const anchor of new Set(anchors)) {
    for (const c of cas) writeLike(tmp, rootfs, posix.join(anchor, `${c.name}.crt`), `${c.pem.trim()}\n`, undefined);
  }
  for (const keystore of opts.keytool ? keystores : []) {
    const image = join(rootfs, keystore);
    try {
      writeLike(tmp, rootfs, keystore, await keystoreWith(opts.keytool!, image, cas), lstatSync(image));
    } catch (e) {
      opts.warn?.(`the image's Java keystore ${keystore} is left as it is, without the runner's and company CAs: ${(e as Error).message}`);
    }
  }
  try {
    renameSync(tmp, layer);
  } catch (e) {
    // Another start made the same layer first: theirs is as good.
    rmSync(tmp, { recursive: true, force: true });
    if (!existsSync(layer)) throw e;
  }
  return layer;
}

/**
 * Writes `text` at `path` in `layer`, its directories owned and moded as the image's (the
 * top layer's directory is the one the environment sees), the file as `like`, or as the
 * environment's root's, 0644.
 */
function writeLike(layer: string, rootfs: string, path: string, text: string | Buffer, like: Stats | undefined): void {
  const parts = posix.dirname(path).split('/').filter(Boolean);
  let rel = '';
  for (const part of parts) {
    rel = `${rel}/${part}`;
    const target = join(layer, rel);
    if (existsSync(target)) continue;
    const st = lstatSync(join(rootfs, rel));
    mkdirSync(target);
    chownSync(target, st.uid, st.gid);
    chmodSync(target, st.mode & 0o7777);
  }
  const file = join(layer, path);
  writeFileSync(file, text);
  chownSync(file, like?.uid ?? ID_BASE, like?.gid ?? ID_BASE);
  chmodSync(file, like ? like.mode & 0o777 : 0o644);
}
