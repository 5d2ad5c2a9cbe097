// The rule for an environment's state as a tar (`berth env export` / `import`): the archive
// comes from a user, so before any of it is unpacked into a new environment's upper dir
// every entry is read and checked. Names stay under the root (no absolute path, no `..`),
// nothing lies under a link (a symlink to /etc followed by etc/passwd through it), a hard
// link names an earlier file of the archive, devices are refused but overlayfs whiteouts
// (character devices 0:0, which record a file of the image deleted), owners lie in the
// range the runner maps into environments, and the archive is bounded in entries. A
// symlink may point anywhere: it is read inside the environment, whose root is its own.
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { invalid } from '../shared/errors.ts';
import { tarEntries } from './images/tar-entries.ts';

/** GNU tar flags that keep a state's owners (as mapped on the host), xattrs and ACLs. */
export const STATE_TAR_KEEP = ['--numeric-owner', '--xattrs', '--xattrs-include=*', '--acls'];

/**
 * On unpack, only these xattrs are restored: overlayfs's opaque-directory mark, the user's
 * own, file capabilities (bounded by the environment's user namespace) and ACLs. Never
 * overlayfs's redirect, metacopy or origin marks, which would make a file of the new
 * environment stand for another path of its image.
 */
export const STATE_TAR_UNPACK = ['--same-permissions', '--same-owner', '--numeric-owner', '--xattrs', '--xattrs-include=trusted.overlay.opaque', '--xattrs-include=user.*', '--xattrs-include=security.capability', '--acls', '--no-overwrite-dir'];

export interface StateRules {
  /** The most entries a state may hold. */
  maxEntries: number;
  /** The uids and gids files may have, [base, base + count); absent: not checked (the control plane does not know the runner's mapping). */
  owners?: { base: number; count: number } | undefined;
}

export const DEFAULT_STATE_ENTRIES = 2_000_000;

const FILE_TYPES = new Set(['File', 'OldFile', 'ContiguousFile']);

/** Reads the whole tar stream and throws `invalid` at the first entry that breaks the rule; returns how many entries it holds. */
export async function checkStateTar(input: Readable, rules: StateRules): Promise<{ entries: number }> {
  const seen = new Map<string, 'directory' | 'other' | 'file'>();
  let entries = 0;
  for await (const entry of tarEntries(input)) {
    const refuse = (why: string) => invalid(`the environment's state is refused: entry ${show(entry.path)} ${why}`);
    if (++entries > rules.maxEntries) throw invalid(`the environment's state has more than ${rules.maxEntries} entries: it cannot be imported`);
    const path = normalised(entry.path);
    if (path === undefined) throw refuse('is not a path under the environment\'s root (absolute, or with ..)');
    // GNU sparse members carry their real name where this reader does not look; exports never hold them.
    if (entry.type === 'SparseFile' || /(^|\/)GNUSparseFile\./.test(path)) throw refuse('is a GNU sparse member, which an export never holds');
    const parts = path === '' ? [] : path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const folder = parts.slice(0, i).join('/');
      const kind = seen.get(folder);
      if (kind === undefined) seen.set(folder, 'directory');
      else if (kind !== 'directory') throw refuse(`lies under ${show(folder)}, which is not a folder: nothing is written through a link`);
    }
    const whiteout = entry.type === 'CharacterDevice' && entry.header.devmaj === 0 && entry.header.devmin === 0;
    const kind = FILE_TYPES.has(entry.type) ? 'file' : entry.type === 'Directory' ? 'directory' : ['SymbolicLink', 'Link', 'FIFO'].includes(entry.type) || whiteout ? 'other' : undefined;
    if (!kind) throw refuse(`is a ${entry.type}: only files, folders, links, FIFOs and overlay whiteouts may be imported`);
    if (path === '' && kind !== 'directory') throw refuse('is the root, and not a folder');
    const before = seen.get(path);
    if (before !== undefined && !(before === 'directory' && kind === 'directory')) throw refuse('appears twice in the archive');
    seen.set(path, kind);
    if (entry.type === 'Link') {
      const target = normalised(entry.linkpath ?? '');
      if (!target || seen.get(target) !== 'file') throw refuse(`is a hard link to ${show(entry.linkpath ?? '')}, which is not a file earlier in the archive`);
    }
    if (entry.type === 'SymbolicLink' && (!entry.linkpath || entry.linkpath.includes('\0'))) throw refuse('is a symbolic link to nothing');
    // A whiteout is the kernel's, owned by whoever mounted the overlay (the host's root): its owner means nothing.
    if (rules.owners && !whiteout) {
      const { base, count } = rules.owners;
      for (const id of [entry.uid, entry.gid]) {
        if (id === undefined || id < base || id >= base + count) throw refuse(`is owned by ${entry.uid}:${entry.gid}, outside the ids environments map (${base}–${base + count - 1})`);
      }
    }
    entry.resume();
  }
  if (entries === 0) throw invalid("the environment's state is an empty archive");
  return { entries };
}

/** Checks a state tar kept in a file. */
export function checkStateFile(file: string, rules: StateRules): Promise<{ entries: number }> {
  return checkStateTar(createReadStream(file), rules);
}

/** `./a//b/` as `a/b`, the root as ''; undefined for an absolute path, a `..` or a NUL. */
function normalised(raw: string): string | undefined {
  if (raw.startsWith('/') || raw.includes('\0')) return undefined;
  const parts = raw.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) return undefined;
  return parts.join('/');
}

const show = (name: string): string => JSON.stringify(name.length > 200 ? `${name.slice(0, 200)}…` : name);
