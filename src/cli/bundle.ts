// The entry of the bundled CLI (scripts/build-cli.ts writes dist/cli/berth.cjs from it): the
// bundled commands while the bundle is as new as every file it was built from, the sources
// otherwise. In a checkout with edits `berth` must run what is there, not what was built before
// (`npm run build:cli` makes it fast again).
import { bundleIsFresh } from './bundle-fresh.ts';

const main: Promise<typeof import('./main.ts')> = bundleIsFresh(__dirname) ? import('./main.ts') : import(`${__dirname}/../../src/cli/main.ts`);
void main.then(({ run }) => run(process.argv.slice(2)));
