// Which prebuild a task starts from, and how its checkout catches up. A prebuild serves a
// task when it is ready, its spec key is the task's, it lives on the task's runner (a snapshot
// stays on one) and its commit is an ancestor of the task's base (asked of the host clone).
// The checkout then moves by what changed only: a git bundle of prebuild..base from the host
// clone, fetched inside the environment, and a forced checkout of the base (ignored files,
// node_modules say, stay; files the newer commits deleted go).
import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Db } from '../db/index.ts';
import type { PrebuildRow } from './service.ts';

const exec = promisify(execFile);

export type PrebuildChoice =
  | { prebuild: PrebuildRow; commit: string; ahead: number; changed: string[] }
  | { why: string };

const git = (dir: string, args: string[]) => exec('git', args, { cwd: dir, maxBuffer: 64 * 1024 * 1024 });

export async function choosePrebuild(db: Db, o: { projectId: string; runnerId: string | null; specKey: string; repoDir: string; baseSha: string }): Promise<PrebuildChoice> {
  const ready = await db.selectFrom('prebuilds').selectAll().where('project_id', '=', o.projectId).where('state', '=', 'ready').orderBy('created_at', 'desc').orderBy('id', 'desc').limit(20).execute();
  if (!ready.length) {
    const last = await db.selectFrom('prebuilds').select(['id', 'state', 'state_reason']).where('project_id', '=', o.projectId).orderBy('created_at', 'desc').limit(1).executeTakeFirst();
    if (!last) return { why: 'the project has no prebuild (`berth prebuild PROJECT` makes one)' };
    if (last.state === 'failed') return { why: `the project's prebuild ${last.id} failed (${last.state_reason ?? 'no reason'}) and none before it is ready` };
    return { why: `the project has no ready prebuild (the newest, ${last.id}, is ${last.state})` };
  }
  let why: string | null = null;
  for (const p of ready) {
    const say = (s: string) => (why ??= `prebuild ${p.id} ${s}`);
    if (p.spec_key !== o.specKey) {
      say('was built for another spec (the image, setup or workspace changed since)');
      continue;
    }
    if (p.runner_id !== o.runnerId) {
      say(`is on another runner (${p.runner_id}) than the task's`);
      continue;
    }
    const commit = p.commit_sha!;
    if (!(await isAncestor(o.repoDir, commit, o.baseSha))) {
      say(`at ${commit.slice(0, 12)} is not an ancestor of the task's base ${o.baseSha.slice(0, 12)}`);
      continue;
    }
    const [count, diff] = await Promise.all([git(o.repoDir, ['rev-list', '--count', `${commit}..${o.baseSha}`]), git(o.repoDir, ['-c', 'core.quotepath=off', 'diff', '--name-only', '--no-renames', commit, o.baseSha])]);
    const ahead = Number(count.stdout.trim());
    const changed = diff.stdout.split('\n').filter(Boolean);
    return { prebuild: p, commit, ahead, changed };
  }
  return { why: why! };
}

async function isAncestor(dir: string, commit: string, base: string): Promise<boolean> {
  try {
    await git(dir, ['merge-base', '--is-ancestor', commit, base]);
    return true;
  } catch {
    // 1: not an ancestor; 128: the commit is not in this clone (rewritten history).
    return false;
  }
}

/**
 * The commits from the prebuild's to the base as a bundle file in the host clone's folder, or
 * null when there are none. A temporary ref names the base (a bundle carries refs, not bare commits).
 */
export async function bundleSince(repoDir: string, from: string, base: string, file: string): Promise<string | null> {
  if (from === base) return null;
  const ref = 'refs/berth/task-base';
  await git(repoDir, ['update-ref', ref, base]);
  try {
    await git(repoDir, ['bundle', 'create', '--quiet', file, ref, `^${from}`]);
  } finally {
    await git(repoDir, ['update-ref', '-d', ref]).catch(() => {});
  }
  return file;
}

/** The script run in the environment, reading the bundle (if any) on stdin. */
export const CATCH_UP_SCRIPT = [
  'set -e',
  'b="$(mktemp)"; trap \'rm -f "$b"\' EXIT',
  'if [ "$1" = bundle ]; then cat > "$b"; git fetch --quiet --no-tags "$b" refs/berth/task-base; fi',
  'git checkout --quiet --force -B "$2" "$3"',
  'git update-ref "refs/remotes/origin/$2" "$3"',
].join('\n');

/** The bundle is read (opened) only when the catch-up runs: made early, it may never be. */
export async function catchUpInput(repoDir: string, dir: string, from: string, base: string): Promise<{ mode: 'bundle' | 'none'; stdin: () => ReturnType<typeof createReadStream> | undefined; done: () => Promise<void> }> {
  const file = await bundleSince(repoDir, from, base, join(dir, 'catch-up.bundle'));
  return { mode: file ? 'bundle' : 'none', stdin: () => (file ? createReadStream(file) : undefined), done: () => rm(join(dir, 'catch-up.bundle'), { force: true }) };
}
