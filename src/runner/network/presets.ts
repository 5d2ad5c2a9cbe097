// Package registries and forges a policy can allow by name. Each is the set of hosts a
// stock client of that ecosystem talks to (including where it downloads from), nothing more.

export const PRESETS = {
  npm: ['registry.npmjs.org', 'registry.npmjs.com', 'registry.yarnpkg.com'],
  pypi: ['pypi.org', 'pypi.python.org', 'files.pythonhosted.org'],
  crates: ['crates.io', 'index.crates.io', 'static.crates.io', 'static.rust-lang.org'],
  go: ['proxy.golang.org', 'sum.golang.org', 'index.golang.org', 'golang.org', 'go.dev', 'dl.google.com'],
  debian: ['deb.debian.org', 'security.debian.org', 'ftp.debian.org', 'snapshot.debian.org'],
  ubuntu: ['archive.ubuntu.com', '*.archive.ubuntu.com', 'security.ubuntu.com', 'ports.ubuntu.com'],
  github: ['github.com', '*.github.com', '*.githubusercontent.com', 'ghcr.io'],
} as const satisfies Record<string, readonly string[]>;

export type PresetName = keyof typeof PRESETS;

export const PRESET_NAMES = Object.keys(PRESETS) as PresetName[];

export function isPreset(name: string): name is PresetName {
  return Object.hasOwn(PRESETS, name);
}
