// The Dev Container properties about who runs commands, where the repository goes, which
// ports and which volumes: remoteUser/containerUser, workspaceFolder, forwardPorts, mounts,
// and initializeCommand (refused). The file is input from outside: bad values are clear
// errors naming the property, and what Berth will not do is a note.
import { posix } from 'node:path';
import { invalid } from '../../shared/errors.ts';
import { MAX_UID, MAX_VOLUMES, RUN_AS_USER, VOLUME_NAME, volumeTargetProblem, type VolumeMount } from '../../shared/env-spec.ts';

/** A port the environment serves: a number, or "service:port" as the spec allows. Recorded only. */
export type ForwardPort = number | string;

export interface DevContainerFields {
  user: string | null;
  /** Which property named the user: remoteUser wins over containerUser, as in the spec. */
  userFrom: 'remoteUser' | 'containerUser' | null;
  forwardPorts: ForwardPort[];
  volumes: VolumeMount[];
  workspaceFolder: string | null;
  notes: string[];
}

/** A user name or uid checked as the runner will use it. */
export function checkUser(value: unknown, where: string): string {
  if (typeof value !== 'string' || !RUN_AS_USER.test(value) || (/^\d+$/.test(value) && Number(value) > MAX_UID)) {
    throw invalid(`${where}: '${String(value).slice(0, 64)}' is not a user name or a uid (0-${MAX_UID}): name a user of the image, like "node", or give a uid`, where);
  }
  return value;
}

export function devContainerFields(dc: Record<string, unknown>, file: string): DevContainerFields {
  const notes: string[] = [];
  const userFrom = dc.remoteUser !== undefined ? 'remoteUser' : dc.containerUser !== undefined ? 'containerUser' : null;
  const user = userFrom ? checkUser(dc[userFrom], `${file}: ${userFrom}`) : null;
  if (dc.remoteUser !== undefined && dc.containerUser !== undefined && dc.remoteUser !== dc.containerUser) {
    notes.push(`containerUser '${String(dc.containerUser)}' is not used: commands run as remoteUser '${user}' (Berth has no separate container user)`);
  }

  let workspaceFolder: string | null = null;
  if (dc.workspaceFolder !== undefined) {
    const w = dc.workspaceFolder;
    const problem = typeof w !== 'string' ? 'must be a path' : w.includes('${') ? 'may not use ${…} variables here' : volumeTargetProblem(w);
    if (problem) throw invalid(`${file}: workspaceFolder ${problem}: give an absolute path like /workspaces/app, or leave it out`, `${file}: workspaceFolder`);
    workspaceFolder = posix.normalize(w as string).replace(/(.)\/+$/, '$1');
  }

  const forwardPorts: ForwardPort[] = [];
  if (dc.forwardPorts !== undefined) {
    if (!Array.isArray(dc.forwardPorts) || dc.forwardPorts.length > 100) throw invalid(`${file}: forwardPorts must be a list of at most 100 ports`, `${file}: forwardPorts`);
    for (const p of dc.forwardPorts) {
      const ok = (typeof p === 'number' && Number.isInteger(p) && p >= 1 && p <= 65_535) || (typeof p === 'string' && /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}:\d{1,5}$/.test(p) && Number(p.split(':')[1]) <= 65_535 && Number(p.split(':')[1]) >= 1);
      if (!ok) throw invalid(`${file}: forwardPorts: ${JSON.stringify(p).slice(0, 64)} is not a port (1-65535) or "service:port"`, `${file}: forwardPorts`);
      forwardPorts.push(p as ForwardPort);
    }
  }

  const volumes: VolumeMount[] = [];
  if (dc.mounts !== undefined) {
    if (!Array.isArray(dc.mounts)) throw invalid(`${file}: mounts must be a list`, `${file}: mounts`);
    for (const m of dc.mounts) {
      const mount = parseMount(m);
      if (!mount) throw invalid(`${file}: mounts: ${JSON.stringify(m).slice(0, 120)} is not a mount ("source=NAME,target=/path,type=volume" or {"source","target","type"})`, `${file}: mounts`);
      const shown = `${mount.source ?? '(anonymous)'} → ${mount.target ?? '?'}`;
      if (mount.type !== 'volume') {
        notes.push(`mount ${shown} is refused: a ${mount.type} mount names a path on the host, and environments see no host paths; use a named volume (type=volume)`);
        continue;
      }
      if (!mount.source) {
        notes.push(`mount ${shown} is skipped: an anonymous volume keeps nothing; give it a name (source=NAME)`);
        continue;
      }
      if (mount.source.includes('${')) {
        notes.push(`mount ${shown} is skipped: Berth does not expand \${…} variables in a volume name; give a plain name`);
        continue;
      }
      if (!VOLUME_NAME.test(mount.source)) throw invalid(`${file}: mounts: volume name '${mount.source.slice(0, 64)}' must be letters, digits, . _ - (at most 63)`, `${file}: mounts`);
      const problem = mount.target === undefined ? 'is missing' : volumeTargetProblem(mount.target);
      if (problem) throw invalid(`${file}: mounts: the target of volume '${mount.source}' ${problem}`, `${file}: mounts`);
      const target = posix.normalize(mount.target!).replace(/(.)\/+$/, '$1');
      if (volumes.some((v) => v.target === target)) throw invalid(`${file}: mounts: two volumes at ${target}`, `${file}: mounts`);
      volumes.push({ name: mount.source, target });
    }
    if (volumes.length > MAX_VOLUMES) throw invalid(`${file}: mounts: at most ${MAX_VOLUMES} volumes`, `${file}: mounts`);
  }

  if (dc.initializeCommand !== undefined) {
    notes.push("initializeCommand is refused: it runs on the host, before the container exists, and Berth runs nothing from a repository outside its sandbox; put what the environment needs in onCreateCommand or postCreateCommand");
  }
  return { user, userFrom, forwardPorts, volumes, workspaceFolder, notes };
}

interface Mount {
  type: string;
  source?: string | undefined;
  target?: string | undefined;
}

/** A `mounts` entry: Docker's --mount string ("type=volume,source=x,target=/y") or the spec's object form. */
function parseMount(m: unknown): Mount | null {
  if (typeof m === 'string') {
    const fields = new Map<string, string>();
    for (const part of m.split(',')) {
      const eq = part.indexOf('=');
      const key = (eq < 0 ? part : part.slice(0, eq)).trim().toLowerCase();
      fields.set(key, eq < 0 ? 'true' : part.slice(eq + 1).trim());
    }
    return {
      type: fields.get('type') ?? 'volume',
      source: fields.get('source') ?? fields.get('src'),
      target: fields.get('target') ?? fields.get('destination') ?? fields.get('dst'),
    };
  }
  if (m && typeof m === 'object' && !Array.isArray(m)) {
    const o = m as Record<string, unknown>;
    if ((o.source !== undefined && typeof o.source !== 'string') || (o.target !== undefined && typeof o.target !== 'string') || (o.type !== undefined && typeof o.type !== 'string')) return null;
    return { type: (o.type as string | undefined) ?? 'volume', source: o.source as string | undefined, target: o.target as string | undefined };
  }
  return null;
}
