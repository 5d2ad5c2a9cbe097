// The trust layer: a small read-only overlay layer put above an environment's image, so
// that its system trust store (the files apt, wget, OpenSSL and GnuTLS read whatever the
// environment's variables say) also trusts the runner's egress CA and the company CAs.
// Each store file the image has is written again with those CAs appended, and the CAs are
// dropped in the image's anchor directories too, so update-ca-certificates (run by apt when
// a package brings certificates) builds them into the store it writes. A layer rather than
// a bind mount over the file: update-ca-certificates replaces the file by a rename, which a
// mount point refuses, and apt would fail. Images pulled or built later get theirs on their
// first start; none is rebuilt. Made once per image and set of CAs, then reused.
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, renameSync, rmSync, writeFileSync, type Stats } from 'node:fs';
import { join, posix } from 'node:path';
import { ID_BASE } from '../idmap.ts';

/** Where images keep their bundle: Debian and Ubuntu, RHEL and Fedora, Alpine (a link to the first, often), SUSE. */
const STORE_FILES = ['/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt', '/etc/ssl/cert.pem', '/etc/ssl/ca-bundle.pem'];
/** Where update-ca-certificates (Debian, Alpine) and update-ca-trust (RHEL) look for local CAs. */
const ANCHOR_DIRS = ['/usr/local/share/ca-certificates', '/etc/pki/ca-trust/source/anchors'];
/** A store larger than this is not a store: it is left as it is. */
const MAX_STORE_BYTES = 8 * 1024 * 1024;
/** Changes when what a layer holds changes, so older layers are not reused. */
const LAYOUT = 'trust-layer-1';

export interface TrustCa {
  /** File name stem in the anchor directories (`berth-egress`, `company-1`). */
  name: string;
  pem: string;
}

/**
 * The layer for the image at `rootfs` trusting `cas`, under `dir`; undefined when the image
 * has neither a store file nor an anchor directory (its variables still point at the
 * runner's bundle). The image is untrusted: its links are followed inside `rootfs` only,
 * and only regular files are read.
 */
export function trustLayer(dir: string, rootfs: string, cas: readonly TrustCa[]): string | undefined {
  const key = createHash('sha256').update(`${LAYOUT}\0${rootfs}\0`).update(cas.map((c) => `${c.name}\0${c.pem}`).join('\0')).digest('hex').slice(0, 32);
  const layer = join(dir, key);
  if (existsSync(layer)) return layer;

  const stores = new Set<string>();
  for (const path of STORE_FILES) {
    const real = resolveInRoot(rootfs, path);
    const st = real === undefined ? undefined : lstatQuiet(join(rootfs, real));
    if (real && st?.isFile() && st.size <= MAX_STORE_BYTES) stores.add(real);
  }
  const anchors = ANCHOR_DIRS.map((d) => resolveInRoot(rootfs, d)).filter((d): d is string => d !== undefined && Boolean(lstatQuiet(join(rootfs, d))?.isDirectory()));
  if (stores.size === 0 && anchors.length === 0) return undefined;

  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = `${layer}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
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
function writeLike(layer: string, rootfs: string, path: string, text: string, like: Stats | undefined): void {
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

/**
 * `path` inside the tree at `root`, every symbolic link on the way followed as the
 * environment would see it (absolute targets from `root`, never above it); undefined if
 * something on the way is missing or the links go round.
 */
export function resolveInRoot(root: string, path: string, hops = 0): string | undefined {
  const parts = posix.normalize(`/${path}`).split('/').filter(Boolean);
  let done = '';
  for (let i = 0; i < parts.length; i++) {
    const next = `${done}/${parts[i]}`;
    const st = lstatQuiet(join(root, next));
    if (!st) return undefined;
    if (st.isSymbolicLink()) {
      if (hops >= 16) return undefined;
      const target = readlinkSync(join(root, next));
      const rest = parts.slice(i + 1).join('/');
      return resolveInRoot(root, posix.normalize(`${target.startsWith('/') ? '' : `${done}/`}${target}/${rest}`), hops + 1);
    }
    done = next;
  }
  return done || '/';
}

function lstatQuiet(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}
