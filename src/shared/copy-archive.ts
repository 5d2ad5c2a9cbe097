// The rule for a tar archive copied out of an environment (`berth env cp ENV:PATH …`): the
// archive comes from the sandbox's own `tar`, so every name, link, owner and mode in it is
// the sandbox's choice. The host decides every path instead: each entry lies under the one
// name that was asked for, links stay inside it, owners are dropped (files belong to whoever
// unpacks them), modes keep only the permission bits (no setuid, setgid or sticky), device
// nodes and FIFOs are dropped, and the archive is bounded in entries and bytes. Anything
// else refuses the whole copy. The control plane checks this before it hands an archive
// out; the CLI checks it again before it writes anything, so neither trusts the other.
import { posix } from 'node:path';
import { formatSize, parseSize } from './units.ts';

export interface CopyLimits {
  /** Entries (files, folders, links) one copy may hold. */
  maxEntries: number;
  /** Bytes one copy may be, as a tar archive (headers included). */
  maxBytes: number;
}

/** The response header in which the control plane counts the device nodes and FIFOs it left out of a copy. */
export const SKIPPED_HEADER = 'x-berth-skipped';

export const DEFAULT_COPY_LIMITS: CopyLimits = { maxEntries: 200_000, maxBytes: 4 * 1024 ** 3 };

/** BERTH_COPY_MAX_ENTRIES and BERTH_COPY_MAX_BYTES ("2g", "512m"), else the defaults; a bad value is an error, not a silent default. */
export function copyLimitsFrom(env: NodeJS.ProcessEnv): CopyLimits {
  const entries = env.BERTH_COPY_MAX_ENTRIES?.trim();
  const bytes = env.BERTH_COPY_MAX_BYTES?.trim();
  const maxEntries = entries ? Number(entries) : DEFAULT_COPY_LIMITS.maxEntries;
  const maxBytes = bytes ? parseSize(bytes) : DEFAULT_COPY_LIMITS.maxBytes;
  if (!Number.isSafeInteger(maxEntries) || maxEntries < 1) throw new Error(`BERTH_COPY_MAX_ENTRIES must be a whole number above 0, not '${entries}'`);
  if (maxBytes === undefined || maxBytes < 1) throw new Error(`BERTH_COPY_MAX_BYTES must be a size such as 4g or 512m, not '${bytes}'`);
  return { maxEntries, maxBytes };
}

/** Why a copy was refused; `message` is safe to show (it names entries, never their contents). */
export class CopyRefused extends Error {
  /** 'entry': the archive broke the path rule; 'limit': it is too big. */
  readonly reason: 'entry' | 'limit';
  constructor(reason: 'entry' | 'limit', message: string) {
    super(message);
    this.name = 'CopyRefused';
    this.reason = reason;
  }
}

/** What an archive entry says about itself, as node-tar's ReadEntry has it. */
export interface ArchiveEntry {
  path: string;
  type: string;
  linkpath?: string | undefined;
  size?: number | undefined;
  mode?: number | undefined;
}

/** An entry that may be written: its path normalised, its mode only permission bits. */
export type CheckedEntry =
  | { kind: 'file' | 'directory'; path: string; mode: number; size: number }
  | { kind: 'symlink' | 'hardlink'; path: string; mode: number; size: 0; linkpath: string }
  /** A device node or FIFO: dropped, as `docker cp` drops them. */
  | { kind: 'skip'; path: string };

const FILE_TYPES = new Set(['File', 'OldFile', 'ContiguousFile']);
const SKIPPED_TYPES = new Set(['CharacterDevice', 'BlockDevice', 'FIFO']);

/**
 * Checks the entries of one archive in order, for a copy of `name` (the last component of
 * the path asked for). Throws CopyRefused at the first entry that breaks the rule.
 */
export class CopyChecker {
  readonly #name: string;
  readonly #limits: CopyLimits;
  /** Every path seen, by kind: a name appearing twice could swap a file for a link. */
  readonly #seen = new Map<string, CheckedEntry['kind']>();
  #entries = 0;
  #bytes = 0;
  skipped = 0;

  constructor(name: string, limits: CopyLimits) {
    if (!isPlainName(name)) throw new CopyRefused('entry', `'${name}' cannot be copied: name a file or folder, not '/', '.' or '..'`);
    this.#name = name;
    this.#limits = limits;
  }

  /** Counts raw archive bytes as they arrive, before any parsing, so no archive is unbounded. */
  count(bytes: number): void {
    this.#bytes += bytes;
    if (this.#bytes > this.#limits.maxBytes) {
      throw new CopyRefused('limit', `refusing to copy ${this.#name}: it is larger than ${formatSize(this.#limits.maxBytes)} as an archive (BERTH_COPY_MAX_BYTES): copy a smaller folder, or raise the limit`);
    }
  }

  check(entry: ArchiveEntry): CheckedEntry {
    if (++this.#entries > this.#limits.maxEntries) {
      throw new CopyRefused('limit', `refusing to copy ${this.#name}: it has more than ${this.#limits.maxEntries} entries (BERTH_COPY_MAX_ENTRIES): copy a smaller folder, or raise the limit`);
    }
    const path = this.#under(entry.path, 'entry');
    const refuse = (why: string) => new CopyRefused('entry', `refusing archive entry ${show(entry.path)}: ${why}`);
    // Nothing may be written through a link: a later entry under a symlink of this archive
    // would land wherever the link points once it is made.
    // Its folders count as folders from here on, also when the archive never lists them, so
    // a link arriving later under one of their names is a repeat (refused below).
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const folder = parts.slice(0, i).join('/');
      const kind = this.#seen.get(folder);
      if (kind === undefined) this.#seen.set(folder, 'directory');
      else if (kind !== 'directory') throw refuse(`it lies under ${show(folder)}, which is not a folder`);
    }
    const kind: CheckedEntry['kind'] | undefined = FILE_TYPES.has(entry.type) ? 'file'
      : entry.type === 'Directory' ? 'directory'
      : entry.type === 'SymbolicLink' ? 'symlink'
      : entry.type === 'Link' ? 'hardlink'
      : SKIPPED_TYPES.has(entry.type) ? 'skip'
      : undefined;
    if (!kind) throw refuse(`it is a ${entry.type}, not a file, folder or link`);
    const before = this.#seen.get(path);
    // tar writes a folder once per mention; any other repeat could replace what came first.
    if (before !== undefined && !(before === 'directory' && kind === 'directory')) throw refuse('it appears twice in the archive');
    this.#seen.set(path, kind);
    if (kind === 'skip') {
      this.skipped++;
      return { kind, path };
    }
    if ((kind === 'symlink' || kind === 'hardlink') && path === this.#name) {
      throw refuse(`${this.#name} is a ${kind === 'symlink' ? 'symbolic' : 'hard'} link: copy the file it points to`);
    }
    const mode = (entry.mode ?? (kind === 'directory' ? 0o755 : 0o644)) & 0o777;
    if (kind === 'file' || kind === 'directory') return { kind, path, mode, size: kind === 'file' ? (entry.size ?? 0) : 0 };
    const linkpath = entry.linkpath ?? '';
    if (kind === 'symlink') {
      // A symlink's target is read from its own folder; it must not lead out of the copy. No
      // entry lies under a link (above), so the folders a leading '..' climbs are real ones;
      // a '..' after a name could climb out of wherever that name, if a link, points.
      const steps = linkpath.split('/').filter((p) => p !== '' && p !== '.');
      const climbs = steps.findIndex((p) => p !== '..');
      const inside = linkpath !== '' && !linkpath.startsWith('/') && (climbs === -1 || !steps.slice(climbs).includes('..'));
      if (!inside || !this.#isUnder(posix.normalize(posix.join(posix.dirname(path), linkpath)))) {
        throw refuse(`it is a symbolic link to ${show(linkpath)}, outside ${this.#name}`);
      }
      return { kind, path, mode, size: 0, linkpath };
    }
    // A hard link names an earlier file of the same archive, from the archive's root.
    const target = this.#under(linkpath, 'hard link target');
    if (this.#seen.get(target) !== 'file') throw refuse(`it is a hard link to ${show(linkpath)}, which is not a file earlier in the copy`);
    return { kind, path, mode, size: 0, linkpath: target };
  }

  /** After the last entry: the copy holds the name asked for. */
  finish(): void {
    if (!this.#seen.has(this.#name)) throw new CopyRefused('entry', `refusing to copy ${this.#name}: the archive does not hold it`);
  }

  /** `path` normalised, when it lies under the name asked for; else a refusal. */
  #under(raw: string, what: string): string {
    const parts = raw.split('/').filter((p) => p !== '' && p !== '.');
    const path = parts.join('/');
    if (raw.startsWith('/') || parts.includes('..') || raw.includes('\0') || !this.#isUnder(path)) {
      throw new CopyRefused('entry', `refusing archive ${what} ${show(raw)}: it is not under ${this.#name}, the name asked for`);
    }
    return path;
  }

  #isUnder(path: string): boolean {
    return path === this.#name || path.startsWith(`${this.#name}/`);
  }
}

/** A name a copy can be of: one path component, neither '.' nor '..'. */
export const isPlainName = (name: string): boolean => name !== '' && name !== '.' && name !== '..' && !name.includes('/') && !name.includes('\0');

/** An entry name as it may be shown: quoted, control characters escaped, cut short. */
const show = (name: string): string => JSON.stringify(name.length > 200 ? `${name.slice(0, 200)}…` : name);
