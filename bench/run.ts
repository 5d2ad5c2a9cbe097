// `npm run bench -- NAME`: runs bench/NAME.ts (all of them with no name).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const dir = new URL('.', import.meta.url).pathname;
// A benchmark is a file, or a folder with an index.ts (bench/real-repos/).
const all = readdirSync(dir).flatMap((f) => (f.endsWith('.ts') && !['run.ts', 'stats.ts'].includes(f) ? [f.slice(0, -3)] : existsSync(join(dir, f, 'index.ts')) ? [f] : []));
const wanted = process.argv.slice(2);
for (const name of wanted.length ? wanted : all) {
  if (!all.includes(name)) {
    console.error(`no benchmark '${name}': choose from ${all.join(', ')}`);
    process.exit(2);
  }
  const r = spawnSync(process.execPath, ['--disable-warning=ExperimentalWarning', existsSync(join(dir, `${name}.ts`)) ? join(dir, `${name}.ts`) : join(dir, name, 'index.ts')], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
