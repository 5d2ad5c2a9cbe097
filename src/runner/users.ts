// Who a command runs as: a user name looked up in the environment's own /etc/passwd and
// /etc/group, or a uid. Those files are the environment's (its root can write anything in
// them), so they are read from inside it and parsed as hostile text: only ids the
// environment's user namespace maps are accepted.
import { invalid } from '../shared/errors.ts';
import { MAX_UID, RUN_AS_USER } from '../shared/env-spec.ts';
import { MAX_GROUPS, type RunAs } from './agent/protocol.ts';

export interface ResolvedUser extends RunAs {
  name: string;
  home: string;
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

const id = (s: string | undefined) => (s !== undefined && /^\d{1,10}$/.test(s) ? Number(s) : NaN);

function passwdEntries(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 7 || !f[0]) continue;
    const uid = id(f[2]);
    const gid = id(f[3]);
    if (!Number.isFinite(uid) || !Number.isFinite(gid)) continue;
    out.push({ name: f[0], uid, gid, home: f[5] ?? '/' });
  }
  return out;
}

/** The groups that list `name` as a member (/etc/group: name:x:gid:user1,user2). */
function memberOf(groupText: string, name: string): number[] {
  const gids: number[] = [];
  for (const line of groupText.split('\n')) {
    const f = line.split(':');
    if (f.length < 4) continue;
    const gid = id(f[2]);
    if (Number.isFinite(gid) && gid <= MAX_UID && f[3]!.split(',').includes(name)) gids.push(gid);
  }
  return gids;
}

/**
 * `user` (a name or a uid) as ids, from the environment's passwd and group files. A uid that
 * passwd does not list runs with gid 0 and home /, as `docker run --user UID` does.
 */
export function resolveUser(user: string, passwd: string, group: string): ResolvedUser {
  if (!RUN_AS_USER.test(user)) throw invalid(`'${user.slice(0, 64)}' is not a user name or a uid`);
  const entries = passwdEntries(passwd);
  const numeric = /^\d+$/.test(user);
  const entry = numeric ? entries.find((e) => e.uid === Number(user)) : entries.find((e) => e.name === user);
  if (!entry) {
    if (!numeric) throw invalid(`user '${user}' is not in the environment's /etc/passwd: use an image that has it (\`berth env exec ENV -- cat /etc/passwd\` lists its users), or give a uid instead`);
    if (Number(user) > MAX_UID) throw invalid(`uid ${user} is above ${MAX_UID}: environments map uids 0-${MAX_UID}`);
    return { name: user, uid: Number(user), gid: 0, groups: [], home: '/' };
  }
  if (entry.uid > MAX_UID || entry.gid > MAX_UID) throw invalid(`user '${user}' has uid ${entry.uid} and gid ${entry.gid} in the environment's /etc/passwd: environments map ids 0-${MAX_UID}`);
  const groups = [...new Set([entry.gid, ...memberOf(group, entry.name)])].slice(0, MAX_GROUPS);
  const home = entry.home.startsWith('/') && !entry.home.includes('\0') ? entry.home : '/';
  return { name: entry.name, uid: entry.uid, gid: entry.gid, groups, home };
}
