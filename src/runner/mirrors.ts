// Package mirrors inside an environment: the configuration each ecosystem's tools read,
// rendered from the mirrors its policy names (server/policy/mirrors.ts checks them).
// Pure: the runner writes the files and mounts them read-only at every start, so a
// policy change reaches the environment when it starts again, and a removed mirror
// leaves the image's own configuration in place.

export const MIRROR_ECOSYSTEMS = ['npm', 'pypi', 'go', 'crates', 'maven', 'apt'] as const;
export type MirrorEcosystem = (typeof MIRROR_ECOSYSTEMS)[number];

export const isMirrorEcosystem = (name: string): name is MirrorEcosystem => (MIRROR_ECOSYSTEMS as readonly string[]).includes(name);

/** One ecosystem's mirror: the URL its tools take (npm's registry, pip's index URL, GOPROXY, a sparse cargo index, a Maven repository, an apt archive). */
export interface PackageMirror {
  ecosystem: MirrorEcosystem;
  url: string;
}

/** Where the rendered files are inside the environment (a read-only bind of the runner's copy). */
export const MIRRORS_DIR = '/.berth/mirrors';

/** What the image says it is (its /etc/os-release), for apt's sources. */
export interface Distro {
  id: string;
  codename: string;
}

export interface MirrorConfig {
  /** Files for MIRRORS_DIR, by name. */
  files: Record<string, string>;
  /** Files of MIRRORS_DIR also bound at a path the tool reads whatever its environment variables. */
  mounts: { name: string; destination: string }[];
  /** Variables for the environment's init and every command. */
  env: string[];
  /** What could not be configured, for the runner's log. */
  skipped: string[];
}

const HEADER = "Written by Berth from the org's or project's package mirrors (berth policy show); rewritten at each start";

/**
 * The configuration for `mirrors`. `caBundle` is the trust bundle that includes the
 * runner's CA: tools with their own trust store (apt, cargo) need it for a mirror whose
 * credential the egress proxy adds, as it terminates that TLS itself.
 */
export function mirrorConfig(mirrors: readonly PackageMirror[], opts: { distro: Distro | null; caBundle: string }): MirrorConfig {
  const out: MirrorConfig = { files: {}, mounts: [], env: [], skipped: [] };
  for (const m of mirrors) {
    switch (m.ecosystem) {
      case 'npm':
        // Environment over files: every npm, wherever installed, and yarn and pnpm read it; a project's .npmrc scopes still apply.
        out.env.push(`npm_config_registry=${m.url}`, `YARN_NPM_REGISTRY_SERVER=${m.url}`);
        break;
      case 'pypi':
        out.env.push(`PIP_INDEX_URL=${m.url}`, `UV_DEFAULT_INDEX=${m.url}`);
        break;
      case 'go':
        // No ",direct": the origin hosts are not reachable anyway. The go command asks the proxy for the checksum database too.
        out.env.push(`GOPROXY=${m.url}`);
        break;
      case 'crates':
        out.files['cargo-config.toml'] = cargoConfig(m.url, opts.caBundle);
        // Cargo reads .cargo/config.toml in every directory above the one it runs in: / covers them all.
        out.mounts.push({ name: 'cargo-config.toml', destination: '/.cargo/config.toml' });
        break;
      case 'maven':
        out.files['maven-settings.xml'] = mavenSettings(m.url);
        // The global settings (a user's ~/.m2/settings.xml still applies over them); Maven 3.9+ reads MAVEN_ARGS.
        out.env.push(`MAVEN_ARGS=--global-settings ${MIRRORS_DIR}/maven-settings.xml`);
        break;
      case 'apt': {
        const sources = opts.distro && aptSources(m.url, opts.distro);
        if (!sources) {
          out.skipped.push(`apt: the image is not Debian or Ubuntu with a release codename (its /etc/os-release), so its sources were left as they are`);
          break;
        }
        out.files['apt-sources.list'] = sources;
        out.files['apt.conf'] = aptConf(opts.caBundle);
        // apt has no variable for its sources (APT_CONFIG is lost under sudo): a conf file that points them here.
        out.mounts.push({ name: 'apt.conf', destination: '/etc/apt/apt.conf.d/99berth-mirror' });
        break;
      }
    }
  }
  if (Object.keys(out.files).length || out.env.length) out.files.README = `${HEADER}.\n${mirrors.map((m) => `${m.ecosystem} ${m.url}`).join('\n')}\n`;
  return out;
}

/** The distribution an image's /etc/os-release names, or null when it is not one apt sources can be written for. */
export function distroOf(osRelease: string): Distro | null {
  const field = (k: string) => new RegExp(`^${k}=("?)([^"\\n]*)\\1$`, 'm').exec(osRelease)?.[2]?.trim() ?? '';
  const id = field('ID');
  const like = field('ID_LIKE').split(/\s+/);
  // Debian and Ubuntu themselves; a derivative only when it names the Ubuntu release it follows
  // (Mint, Pop!_OS): another's own codename (kali-rolling) is no suite of Debian's archive.
  const distro =
    id === 'debian' || id === 'ubuntu' ? { id, codename: (id === 'ubuntu' && field('UBUNTU_CODENAME')) || field('VERSION_CODENAME') }
    : like.includes('ubuntu') && field('UBUNTU_CODENAME') ? { id: 'ubuntu', codename: field('UBUNTU_CODENAME') }
    : null;
  return distro && /^[a-z][a-z0-9-]{1,30}$/.test(distro.codename) ? distro : null;
}

/**
 * The mirror stands in for the distribution's main archive (deb.debian.org/debian,
 * archive.ubuntu.com/ubuntu): the release and its updates. Debian's security archive is
 * another repository; Ubuntu's archive carries its -security suite.
 */
function aptSources(url: string, d: Distro): string {
  const suites = d.id === 'ubuntu' ? [d.codename, `${d.codename}-updates`, `${d.codename}-security`] : [d.codename, `${d.codename}-updates`];
  const components = d.id === 'ubuntu' ? 'main restricted universe multiverse' : 'main';
  return `# ${HEADER}.\n${suites.map((s) => `deb ${url} ${s} ${components}`).join('\n')}\n`;
}

function aptConf(caBundle: string): string {
  return [
    `// ${HEADER}.`,
    '// The mirror replaces the image\'s sources: apt reads its list here, and no sources.list.d.',
    `Dir::Etc::SourceList "${MIRRORS_DIR}/apt-sources.list";`,
    `Dir::Etc::SourceParts "${MIRRORS_DIR}/apt-sources.list.d";`,
    `Acquire::https::CAInfo "${caBundle}";`,
    '',
  ].join('\n');
}

function cargoConfig(url: string, caBundle: string): string {
  return [
    `# ${HEADER}.`,
    '[source.crates-io]',
    'replace-with = "berth-mirror"',
    '',
    '[source.berth-mirror]',
    `registry = ${tomlString(`sparse+${url}`)}`,
    '',
    '[http]',
    `cainfo = ${tomlString(caBundle)}`,
    '',
  ].join('\n');
}

function mavenSettings(url: string): string {
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<!-- ${HEADER}. -->`,
    '<settings xmlns="http://maven.apache.org/SETTINGS/1.2.0" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"',
    '          xsi:schemaLocation="http://maven.apache.org/SETTINGS/1.2.0 https://maven.apache.org/xsd/settings-1.2.0.xsd">',
    '  <mirrors>',
    '    <mirror>',
    '      <id>berth-mirror</id>',
    '      <name>Package mirror from the Berth policy</name>',
    `      <url>${xmlText(url)}</url>`,
    '      <mirrorOf>*</mirrorOf>',
    '    </mirror>',
    '  </mirrors>',
    '</settings>',
    '',
  ].join('\n');
}

const tomlString = (s: string) => JSON.stringify(s);
const xmlText = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
