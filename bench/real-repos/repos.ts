// The three repositories the real-repos bench works on, made here the same way every time
// (a seeded generator, fixed file times): a Node library whose lockfile pulls a few hundred
// small packages, a Python package with a requirements.txt of twenty wheels, and a
// devcontainer whose Dockerfile builds the tools its test needs. What the mirror serves
// comes with them.
import { readFileSync } from 'node:fs';
import { integrityOf, npmTarball, wheels, type NpmPackage, type PypiFile } from '../../test/fakes/package-mirror.ts';

/** A small, fast, seeded PRNG (mulberry32): the same tree on every run. */
function random(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
  const pick = <T>(from: T[], n: number): T[] => {
    const pool = [...from];
    const out: T[] = [];
    while (out.length < n && pool.length) out.push(pool.splice(int(0, pool.length - 1), 1)[0]!);
    return out;
  };
  return { int, pick, shuffle: <T>(from: T[]) => pick(from, from.length) };
}

const PREFIXES = ['tiny', 'fast', 'micro', 'deep', 'safe', 'lazy', 'pure', 'smart', 'clean', 'simple', 'mini', 'open'];
const NOUNS = ['args', 'color', 'parse', 'merge', 'path', 'stream', 'cache', 'event', 'glob', 'json', 'date', 'queue', 'hash', 'retry', 'log', 'diff', 'semver', 'uuid', 'env', 'format', 'escape', 'chunk'];

export interface NodeLibrary {
  files: Record<string, string>;
  packages: NpmPackage[];
  /** How many packages npm ci puts in node_modules (what the test counts). */
  installed: number;
}

/**
 * Layers like a real tree: leaf utilities, helpers on them, frameworks on those; the library
 * depends on the top layer and a few below. Every package is reached; each is its own version.
 */
export function nodeLibrary(): NodeLibrary {
  const r = random(13);
  const names = r.shuffle(PREFIXES.flatMap((p) => NOUNS.map((n) => `${p}-${n}`)));
  const layers = [names.slice(0, 100), names.slice(100, 180), names.slice(180, 230), names.slice(230)];
  const deps = new Map<string, string[]>(names.map((n) => [n, []]));
  for (const [i, layer] of layers.entries()) {
    const below = layers.slice(0, i).flat();
    for (const n of layer) if (i > 0) deps.set(n, r.pick(below, r.int(i === 1 ? 1 : 2, i === 1 ? 3 : i + 2)));
  }
  const top = [...layers[3]!, ...r.pick(layers[2]!, 6)];
  // What nothing reaches yet hangs under a top-layer package, as real trees pick up strays.
  const reached = new Set<string>();
  const visit = (n: string) => {
    if (reached.has(n)) return;
    reached.add(n);
    for (const d of deps.get(n)!) visit(d);
  };
  top.forEach(visit);
  for (const n of names) {
    if (reached.has(n)) continue;
    const host = layers[3]![r.int(0, layers[3]!.length - 1)]!;
    deps.get(host)!.push(n);
    visit(n);
  }
  const version = (n: string) => {
    const i = names.indexOf(n);
    return `${1 + (i % 4)}.${i % 9}.${i % 5}`;
  };
  const range = (n: string) => `^${version(n)}`;

  const packages: NpmPackage[] = names.map((name) => {
    const own = [...deps.get(name)!].sort();
    const dependencies = Object.fromEntries(own.map((d) => [d, range(d)]));
    const tarball = npmTarball({
      'package.json': `${JSON.stringify({ name, version: version(name), description: `The ${name} helper.`, main: 'index.js', license: 'MIT', dependencies }, null, 2)}\n`,
      'index.js': [
        "'use strict';",
        ...own.map((d, i) => `const d${i} = require('${d}');`),
        `const NAME = '${name}';`,
        '/** Walks this package and what it requires: how many packages are loaded. */',
        'function visit(seen) {',
        '  if (seen.has(NAME)) return seen;',
        '  seen.add(NAME);',
        `  ${own.map((_, i) => `d${i}.visit(seen);`).join(' ')}`,
        '  return seen;',
        '}',
        'function transform(value) {',
        "  return String(value).split('').reverse().join('') + NAME.length;",
        '}',
        `module.exports = { name: NAME, version: '${version(name)}', visit, transform };`,
        '',
      ].join('\n'),
      'README.md': `# ${name}\n\nA small helper: \`require('${name}').transform(x)\`.\n`,
      LICENSE: 'MIT License\n\nPermission is hereby granted, free of charge, to any person obtaining a copy of this software.\n',
    });
    return { name, version: version(name), dependencies, tarball };
  });

  const byName = new Map(packages.map((p) => [p.name, p]));
  const rootDeps = Object.fromEntries([...top].sort().map((n) => [n, range(n)]));
  const lock = {
    name: 'acme-widgets',
    version: '2.3.0',
    lockfileVersion: 3,
    requires: true,
    packages: {
      '': { name: 'acme-widgets', version: '2.3.0', license: 'MIT', dependencies: rootDeps },
      ...Object.fromEntries(
        [...names].sort().map((n) => {
          const p = byName.get(n)!;
          // As npm writes them: the public registry's URL, which npm swaps for the configured mirror.
          const entry: Record<string, unknown> = { version: p.version, resolved: `https://registry.npmjs.org/${n}/-/${n}-${p.version}.tgz`, integrity: integrityOf(p.tarball), license: 'MIT' };
          if (Object.keys(p.dependencies ?? {}).length) entry.dependencies = p.dependencies;
          return [`node_modules/${n}`, entry];
        }),
      ),
    },
  };
  const files = {
    'package.json': `${JSON.stringify({ name: 'acme-widgets', version: '2.3.0', description: 'Widgets for Acme.', main: 'index.js', license: 'MIT', scripts: { test: 'node --test test/*.test.js' }, dependencies: rootDeps }, null, 2)}\n`,
    'package-lock.json': `${JSON.stringify(lock, null, 2)}\n`,
    'index.js': [
      "'use strict';",
      ...[...top].sort().map((n, i) => `const t${i} = require('${n}');`),
      `const all = [${top.map((_, i) => `t${i}`).join(', ')}];`,
      'exports.loaded = () => { const seen = new Set(); for (const d of all) d.visit(seen); return seen.size; };',
      'exports.widget = (x) => all.reduce((v, d) => d.transform(v).slice(0, 40), x);',
      '',
    ].join('\n'),
    'test/widgets.test.js': [
      "'use strict';",
      "const { test } = require('node:test');",
      "const assert = require('node:assert/strict');",
      "const lib = require('../index.js');",
      `test('every dependency loads', () => assert.equal(lib.loaded(), ${names.length}));`,
      "test('a widget is made', () => assert.equal(typeof lib.widget('acme'), 'string'));",
      '',
    ].join('\n'),
    '.gitignore': 'node_modules/\n',
    'berth.yaml': 'setup: npm ci --no-audit --no-fund\ncheck: npm test\n',
  };
  return { files, packages, installed: names.length };
}

export interface PythonPackage {
  files: Record<string, string>;
  pypi: PypiFile[];
}

/** pip itself, from the host's Debian wheel: the default image has Python but no pip, so setup takes it from the mirror. */
export const PIP_WHEEL = '/usr/share/python-wheels/pip-23.0.1-py3-none-any.whl';

/** Twenty wheels, some requiring others; requirements.txt pins the ones the package imports. */
export function pythonPackage(): PythonPackage {
  const r = random(7);
  const NAMES = ['attrs', 'colors', 'dates', 'envs', 'files', 'globs', 'hashes', 'idna', 'jsons', 'keys', 'logs', 'maps', 'nums', 'opts', 'paths', 'queues', 'retries', 'specs', 'texts', 'urls'];
  const projects = NAMES.map((n) => `acme-${n}`);
  const requires = new Map<string, string[]>(projects.map((p, i) => [p, i < 6 ? [] : r.pick(projects.slice(0, i), r.int(1, 3))]));
  const module = (p: string) => p.replace(/-/g, '_');
  const version = (i: number) => `${1 + (i % 3)}.${i % 7}.0`;
  const specs = projects.map((p, i) => ({
      name: p,
      version: version(i),
      requires: requires.get(p)!.map((d) => `${d}==${version(projects.indexOf(d))}`),
      files: {
        [`${module(p)}/__init__.py`]: [
          ...requires.get(p)!.map((d) => `import ${module(d)}`),
          `NAME = '${p}'`,
          '',
          'def visit(seen):',
          '    if NAME not in seen:',
          '        seen.add(NAME)',
          ...requires.get(p)!.map((d) => `        ${module(d)}.visit(seen)`),
          '    return seen',
          '',
          'def shout(text):',
          "    return str(text).upper() + '!' * (len(NAME) % 3 + 1)",
          '',
        ].join('\n'),
      },
  }));
  const pypi: PypiFile[] = wheels(specs).map((w, i) => ({ project: projects[i]!, ...w }));
  pypi.push({ project: 'pip', filename: PIP_WHEEL.split('/').at(-1)!, data: readFileSync(PIP_WHEEL) });
  // What the package imports: everything no other wheel requires, and a few more.
  const required = new Set([...requires.values()].flat());
  const top = projects.filter((p, i) => !required.has(p) || i % 5 === 0);
  const files = {
    'requirements.txt': `${top.map((p) => `${p}==${version(projects.indexOf(p))}`).join('\n')}\n`,
    'widgets/__init__.py': [
      ...top.map((p) => `import ${module(p)}`),
      '',
      'def loaded():',
      '    seen = set()',
      ...top.map((p) => `    ${module(p)}.visit(seen)`),
      '    return len(seen)',
      '',
    ].join('\n'),
    'tests/__init__.py': '',
    'tests/test_widgets.py': [
      'import unittest',
      'import widgets',
      'import acme_texts',
      '',
      'class Widgets(unittest.TestCase):',
      '    def test_every_requirement_loads(self):',
      `        self.assertEqual(widgets.loaded(), ${projects.length})`,
      '',
      '    def test_shout(self):',
      "        self.assertTrue(acme_texts.shout('hi').startswith('HI!'))",
      '',
    ].join('\n'),
    // pip from the mirror when the image has none; the image's Python is Debian's (PEP 668).
    'berth.yaml': [
      'setup: |',
      '  if python3 -m pip --version >/dev/null 2>&1; then pip="python3 -m pip"; else',
      `    curl -fsS -o /tmp/pip.whl "\${PIP_INDEX_URL%simple/}packages/${PIP_WHEEL.split('/').at(-1)}" && pip="python3 /tmp/pip.whl/pip"; fi`,
      '  $pip install --quiet --no-cache-dir --break-system-packages --disable-pip-version-check -r requirements.txt',
      'check: python3 -m unittest discover -s tests -t .',
      '',
    ].join('\n'),
  };
  return { files, pypi };
}

/** The Dockerfile's RUN steps, also what the by-hand baseline runs on the host. */
export const DEVCONTAINER_STEPS = [
  'mkdir -p "$PREFIX/bin" "$PREFIX/share/acme"',
  'printf \'#!/bin/sh\\nset -e\\nfor f in "$@"; do sha256sum "$f"; done | sort\\n\' > "$PREFIX/bin/acme-digest" && chmod +x "$PREFIX/bin/acme-digest"',
  'seq 1 2000 | sed "s/^/widget-/" > "$PREFIX/share/acme/widgets.txt"',
];

/** A devcontainer built from a Dockerfile (FROM the default image); its test needs what the build made. */
export function devcontainerRepo(): { files: Record<string, string>; check: string } {
  return {
    files: {
      '.devcontainer/devcontainer.json': `${JSON.stringify({ name: 'acme-tools', build: { dockerfile: 'Dockerfile', context: '..' } }, null, 2)}\n`,
      '.devcontainer/Dockerfile': ['FROM default', 'ENV PREFIX=/opt/acme', ...DEVCONTAINER_STEPS.map((s) => `RUN ${s}`), 'COPY VERSION /opt/acme/share/acme/VERSION', 'ENV PATH=/opt/acme/bin:$PATH', ''].join('\n'),
      VERSION: '4.1.0\n',
      'test.sh': [
        '#!/bin/sh',
        'set -e',
        'test "$(wc -l < "${PREFIX:-/opt/acme}/share/acme/widgets.txt")" -eq 2000',
        '"${PREFIX:-/opt/acme}/bin/acme-digest" VERSION test.sh | grep -q VERSION',
        'echo ok',
        '',
      ].join('\n'),
    },
    check: 'sh test.sh',
  };
}
