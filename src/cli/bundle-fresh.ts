import { readFileSync, statSync } from 'node:fs';

/**
 * Whether the bundle in `dir` (dist/cli) is at least as new as every file it was built from
 * (inputs.json, paths from the repository root): a checkout with edits runs its sources instead.
 * About thirty stat calls: a few ms on a slow machine, which is why packages are not listed.
 */
export function bundleIsFresh(dir: string): boolean {
  try {
    const built = statSync(`${dir}/berth.cjs`).mtimeMs;
    const repo = `${dir}/../../`;
    const inputs = JSON.parse(readFileSync(`${dir}/inputs.json`, 'utf8')) as string[];
    return inputs.every((file) => statSync(repo + file).mtimeMs <= built);
  } catch {
    return false; // an input gone, or no list: the sources decide
  }
}
