// Who commands run as, and which named volumes an environment mounts: the rules the API,
// the repository's files and the runner share.

/** A user name as /etc/passwd has them (what useradd accepts), or a numeric uid inside the environment. */
export const RUN_AS_USER = /^(?:[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|\d{1,5})$/;
/** The highest uid an environment maps (runner/idmap.ts maps 65536 ids). */
export const MAX_UID = 65_535;

/** A volume's name: kept as a directory under the runner's data dir, so nothing that walks paths. */
export const VOLUME_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
export const MAX_VOLUMES = 16;

/** Places a volume may not cover: the kernel's views, Berth's own mounts, the whole file system. */
const RESERVED = ['/proc', '/sys', '/dev', '/.berth'];

/** Why `target` cannot hold a volume, or null when it can. */
export function volumeTargetProblem(target: string): string | null {
  if (!target.startsWith('/')) return 'must be an absolute path';
  if (target.length > 1024 || target.includes('\0')) return 'is not a usable path';
  if (target.split('/').includes('..')) return "may not contain '..'";
  const norm = normalTarget(target);
  if (norm === '/') return 'may not be /';
  if (RESERVED.some((r) => norm === r || norm.startsWith(`${r}/`))) return `may not be under ${RESERVED.join(', ')}`;
  return null;
}

/** `target` without empty or `.` parts (the browser reads this file too: no node:path). Checked by volumeTargetProblem first. */
export function normalTarget(target: string): string {
  return `/${target.split('/').filter((p) => p !== '' && p !== '.').join('/')}`;
}

export interface VolumeMount {
  /** The volume's name: the same name in two environments of one project is the same data. */
  name: string;
  /** Where it appears inside the environment. */
  target: string;
}
