// berth backup and berth restore on a real berth (embedded database, real sandbox): one
// environment with BENCH_BACKUP_MB of random data in BENCH_BACKUP_FILES files, written while
// it runs; the backup pauses it while copying (on its own disk image) or only while a
// read-only snapshot of it is made (in the btrfs state store, the default where the host has
// btrfs). Prints each phase's time and the sizes.
// BERTH_TEST_DATABASE=postgres: on PostgreSQL (pg_dump, restored into a fresh database).
// BERTH_STATE_STORE=image: the environment on its own ext4 image (the layout before the store), as a baseline.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backup, restore } from '../src/server/backup/index.ts';
import { removeRunnerHostState, sh, startTestBerth } from '../test/helpers.ts';
import { freshDatabase, ON_POSTGRES } from '../test/postgres.ts';

const MB = Number(process.env.BENCH_BACKUP_MB ?? 256);
const FILES = Number(process.env.BENCH_BACKUP_FILES ?? 1000);
const root = mkdtempSync(join(tmpdir(), 'berth-bench-backup-'));
const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
const t = await startTestBerth({ dataDir: join(root, 'data') });
const target = ON_POSTGRES ? await freshDatabase() : undefined;
try {
  const env = (await t.api('POST', '/api/orgs/default/environments', { name: 'bench' })).body.id as string;
  const per = Math.max(1, Math.floor((MB * 1024) / FILES));
  const w = await sh(t, env, `mkdir -p /workspace/data && i=0; while [ $i -lt ${FILES} ]; do head -c ${per}k /dev/urandom > /workspace/data/f$i; i=$((i+1)); done`, { timeout: '10m' });
  if (w.exitCode !== 0) throw new Error(w.stderr);
  await t.close();

  let start = performance.now();
  const m = await backup({ dataDir: t.dataDir, databaseUrl: t.database?.url, dir: join(root, 'backup') });
  const backupMs = performance.now() - start;
  start = performance.now();
  await restore({ dir: join(root, 'backup'), dataDir: join(root, 'restored'), databaseUrl: target?.url });
  const restoreMs = performance.now() - start;

  const e = m.environments[0]!;
  console.log(`database: ${m.database.kind}`);
  console.log(`workspace: ${MB} MiB of random data in ${FILES} files; environment directory on disk ${mib(e.bytes)}`);
  console.log(`layout: ${e.stored ? 'btrfs state store' : 'own disk image'}`);
  console.log(`backup: ${(backupMs / 1000).toFixed(2)} s total; environment paused ${e.pausedMs} ms (${e.copied})`);
  for (const f of m.files) console.log(`  ${f.path}: ${mib(f.bytes)}`);
  console.log(`restore (checksums checked, then unpacked and loaded): ${(restoreMs / 1000).toFixed(2)} s`);
} finally {
  await t.close();
  await removeRunnerHostState(t.dataDir);
  await t.database?.drop();
  await target?.drop();
  rmSync(root, { recursive: true, force: true });
}
