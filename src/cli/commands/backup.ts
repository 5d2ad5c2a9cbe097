// `berth backup DIR` and `berth restore DIR`: offline, on the data dir of a stopped `berth up`
// (src/server/backup says why). They read DATABASE_URL as `berth up` does.
import type { Command } from 'commander';
import { printJson, Spinner } from '../output.ts';

const size = (bytes: number) => (bytes < 1 << 20 ? `${Math.ceil(bytes / 1024)} KiB` : bytes < 1 << 30 ? `${(bytes / (1 << 20)).toFixed(1)} MiB` : `${(bytes / (1 << 30)).toFixed(2)} GiB`);

const snapshots = (n: number) => (n ? `${n} snapshot${n === 1 ? '' : 's'}, ` : '');

/** Progress on one spinner line: the step, the file and its bytes so far. */
function progressLine(spinner: Spinner) {
  return (p: { step: string; file: string; bytes: number }) => spinner.update(`${p.step}: ${p.file.split('/').slice(-2).join('/')}${p.bytes ? ` (${size(p.bytes)})` : ''}`);
}

export function backupCommands(program: Command, dataDir: () => string): void {
  program
    .command('backup')
    .description('back up a stopped berth up: its database (PGlite, or pg_dump with DATABASE_URL), keys, volumes and every local environment, into a new directory')
    .argument('<dir>', 'a new or empty directory, best on another disk; it is made 0700 and holds the secret and audit keys')
    .option('--json', 'print the manifest (files, checksums, environments) as JSON')
    .addHelpText('after', '\nStop `berth up` first. Environments that still run are paused (frozen) while each is copied; those in the\nbtrfs state store only while a read-only snapshot of each is made.\nRestore with `berth restore DIR --data-dir NEW`.')
    .action(async (dir: string, o: { json?: boolean }) => {
      const { backup } = await import('../../server/backup/index.ts');
      const spinner = new Spinner('backing up');
      const started = performance.now();
      try {
        const m = await backup({ dataDir: dataDir(), databaseUrl: process.env.DATABASE_URL, dir, progress: progressLine(spinner) });
        const total = m.files.reduce((n, f) => n + f.bytes, 0);
        spinner.done(`backed up ${dataDir()} into ${dir}: ${m.database.kind} database, ${m.environments.length} environment${m.environments.length === 1 ? '' : 's'}, ${snapshots(m.snapshots.length)}${m.files.length} files, ${size(total)} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
        if (m.holdsSecrets.length) process.stderr.write(`  it holds the keys (${m.holdsSecrets.map((s) => s.replace(/^.*: /, '')).join(', ')}): whoever reads it can decrypt the orgs' secrets; keep it as safe as the data dir\n`);
        if (m.keysFromEnvironment.length) process.stderr.write(`  ${m.keysFromEnvironment.join(' and ')} ${m.keysFromEnvironment.length === 1 ? 'is' : 'are'} set and not in the backup: the restored Berth needs the same value${m.keysFromEnvironment.length === 1 ? '' : 's'}\n`);
        for (const e of m.environments.filter((x) => x.copied === 'paused while copied')) process.stderr.write(`  environment ${e.id} was running: paused for ${(e.pausedMs / 1000).toFixed(1)} s while copied\n`);
        for (const e of m.environments.filter((x) => x.copied === 'paused for a snapshot')) process.stderr.write(`  environment ${e.id} was running: paused for ${e.pausedMs} ms while snapshotted, then copied from the snapshot\n`);
        if (o.json) printJson(m);
      } catch (err) {
        spinner.done();
        throw err;
      }
    });

  program
    .command('restore')
    .description('restore a backup into an empty data dir (--data-dir; with DATABASE_URL, into an empty PostgreSQL database); every checksum is checked first')
    .argument('<dir>', 'the directory `berth backup` wrote')
    .option('--json', 'print the restored backup\'s manifest as JSON')
    .addHelpText('after', '\nThen start it: `berth up --data-dir NEW`.')
    .action(async (dir: string, o: { json?: boolean }) => {
      const { restore, runsHere } = await import('../../server/backup/index.ts');
      const spinner = new Spinner('restoring');
      const started = performance.now();
      try {
        const m = await restore({ dir, dataDir: dataDir(), databaseUrl: process.env.DATABASE_URL, progress: progressLine(spinner) });
        spinner.done(`restored the backup of ${m.createdAt} into ${dataDir()}: ${m.database.kind} database, ${m.environments.length} environment${m.environments.length === 1 ? '' : 's'}, ${snapshots(m.snapshots.length)}in ${((performance.now() - started) / 1000).toFixed(1)} s`);
        if (m.keysFromEnvironment.length) process.stderr.write(`  set ${m.keysFromEnvironment.join(' and ')} as the backed-up Berth had ${m.keysFromEnvironment.length === 1 ? 'it' : 'them'}\n`);
        // Environments are named by id on the host (cgroup, container): two of one id cannot run at once.
        const twins = m.environments.filter((e) => runsHere(e.id)).map((e) => e.id);
        if (twins.length) process.stderr.write(`  ${twins.join(', ')} still run${twins.length === 1 ? 's' : ''} on this host from ${m.dataDir}: stop ${twins.length === 1 ? 'it' : 'them'} there (berth env stop) before starting the restored Berth\n`);
        process.stderr.write(`  start it: berth up --data-dir ${dataDir()}\n`);
        if (o.json) printJson(m);
      } catch (err) {
        spinner.done();
        throw err;
      }
    });
}
