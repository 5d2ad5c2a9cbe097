// `npm run bench -- NAME`: runs bench/NAME.ts (all of them with no name).
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const dir = new URL('.', import.meta.url).pathname;
const all = readdirSync(dir).filter((f) => f.endsWith('.ts') && !['run.ts', 'stats.ts'].includes(f)).map((f) => f.slice(0, -3));
const wanted = process.argv.slice(2);
for (const name of wanted.length ? wanted : all) {
  if (!all.includes(name)) {
    console.error(`no benchmark '${name}': choose from ${all.join(', ')}`);
    process.exit(2);
  }
  const r = spawnSync(process.execPath, ['--disable-warning=ExperimentalWarning', join(dir, `${name}.ts`)], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
