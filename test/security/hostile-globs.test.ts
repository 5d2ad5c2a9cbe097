// A repository's berth.yaml names the paths an incremental setup step watches (`when`), and the
// control plane matches them against every changed path of a task. The first matcher compiled
// them to regular expressions: `**/**/…/x` or `*a*a*a…b` backtracked exponentially and held the
// control plane's event loop (every org's requests) for minutes. Rule: a pattern from a
// repository is never compiled to a backtracking regex. The timeout only stops a hang.
// sandbox: none
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { globMatch, planIncremental } from '../../src/server/prebuilds/incremental.ts';

test('hostile patterns from a repository are matched at once, not in minutes', { timeout: 20_000 }, () => {
  const deep = 'a/'.repeat(200) + 'y';
  assert.equal(globMatch(Array(64).fill('**').join('/') + '/x', deep), false);
  assert.equal(globMatch(`${'*a'.repeat(100)}b`, 'a'.repeat(4000)), false);
  assert.equal(globMatch(`${'**/*a'.repeat(50)}/b`, `${'aa/'.repeat(300)}c`), false);
  const steps = [{ run: 'npm ci', incremental: true as const, when: [Array(40).fill('**').join('/') + '/z', `${'*?'.repeat(200)}!`], always: false }];
  const changed = Array.from({ length: 2000 }, (_, i) => `${'dir/'.repeat(20)}file-${i}.${'a'.repeat(100)}`);
  assert.equal(planIncremental(steps as never, changed)[0]!.rerun, false);
});

test('what the patterns mean: * within a folder, ** across (none too), ? one character, a trailing / a folder', () => {
  const yes: [string, string][] = [
    ['package-lock.json', 'package-lock.json'],
    ['./package-lock.json', 'package-lock.json'],
    ['**/package-lock.json', 'package-lock.json'],
    ['**/package-lock.json', 'apps/web/package-lock.json'],
    ['src/', 'src/a/b.ts'],
    ['src/**', 'src/a.ts'],
    ['*.lock', 'yarn.lock'],
    ['requirements?.txt', 'requirements2.txt'],
    ['**', 'anything/at/all'],
    ['a/**/b', 'a/b'],
    ['a/**/b', 'a/x/y/b'],
  ];
  const no: [string, string][] = [
    ['package-lock.json', 'apps/package-lock.json'],
    ['**/package-lock.json', 'xpackage-lock.json'],
    ['*.lock', 'sub/yarn.lock'],
    ['src/', 'srcs/a.ts'],
    ['requirements?.txt', 'requirements.txt'],
    ['a/**/b', 'a/x/c'],
  ];
  for (const [p, path] of yes) assert.equal(globMatch(p, path), true, `${p} matches ${path}`);
  for (const [p, path] of no) assert.equal(globMatch(p, path), false, `${p} does not match ${path}`);
});
