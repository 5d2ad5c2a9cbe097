// The default image: Debian from its own mirrors via mmdebstrap, plus the Node.js this
// runner runs on and npm. Agents need a shell, git, a compiler, Python and Node to work
// in most repositories, and building from packages needs nothing but Debian's mirrors and
// the npm registry.
import { spawn } from 'node:child_process';
import { chmod, copyFile, lchown } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { unavailable } from '../../shared/errors.ts';
import { ID_BASE } from '../idmap.ts';
import { sha256, type Digest } from './blobs.ts';
import { ROOT_OWNER, RootfsWriter } from './layers.ts';
import { fetchNpm, installNpm } from './npm.ts';
import { mkdirOwned } from './rootfs.ts';
import type { ImageConfig, ImageProgress } from './types.ts';

/** Everything that decides the default image's content; its digest is the image's address. */
export interface DebianRecipe {
  /** Bump when the build steps change, so cached images built the old way are not reused. */
  recipe: 1;
  suite: 'bookworm';
  variant: 'minbase';
  packages: readonly string[];
  /** The Node.js version copied in: the runner's own. */
  node: string;
  /** The npm major version fetched from the registry. */
  npmMajor: number;
  /** Files are owned by ID_BASE + their container id. */
  idBase: number;
}

const PACKAGES = [
  'bash',
  'build-essential',
  'ca-certificates',
  'coreutils',
  'curl',
  'git',
  'iproute2',
  'less',
  'openssh-client',
  'procps',
  'python3',
  'unzip',
  'xz-utils',
] as const;

export const DEFAULT_IMAGE_CONFIG: ImageConfig = {
  env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'LANG=C.UTF-8'],
  workingDir: '/workspace',
  cmd: ['/bin/bash'],
};

export function defaultRecipe(): DebianRecipe {
  const major = Number(process.versions.node.split('.')[0]);
  if (major < 24) throw unavailable(`the default image copies in this runner's Node.js, which must be 24 or newer, not ${process.version}`);
  return { recipe: 1, suite: 'bookworm', variant: 'minbase', packages: PACKAGES, node: process.version, npmMajor: 11, idBase: ID_BASE };
}

export const recipeDigest = (recipe: DebianRecipe): Digest => sha256(JSON.stringify(recipe));

export interface DebianBuildOptions {
  /** A Debian mirror URL; mmdebstrap's default (deb.debian.org) when unset. */
  mirror?: string;
  npmRegistry: string;
  progress: ImageProgress;
}

/** Builds the default image's tree into `rootfs` (which must not exist yet) and returns its config. */
export async function buildDebianRootfs(rootfs: string, recipe: DebianRecipe, options: DebianBuildOptions): Promise<ImageConfig> {
  const { progress } = options;
  // Fetch npm first: a registry problem then fails the build before the long bootstrap.
  progress({ phase: 'install', message: `fetching npm ${recipe.npmMajor}.x from ${options.npmRegistry}` });
  const npm = await fetchNpm(options.npmRegistry, recipe.npmMajor);

  await bootstrap(rootfs, recipe, options);

  progress({ phase: 'install', message: `adding Node.js ${recipe.node}` });
  const node = join(await mkdirOwned(rootfs, 'usr/local/bin'), 'node');
  await copyFile(process.execPath, node);
  await lchown(node, ROOT_OWNER, ROOT_OWNER);
  await chmod(node, 0o755);

  progress({ phase: 'install', message: `adding npm ${npm.version}` });
  await installNpm(rootfs, npm);
  return DEFAULT_IMAGE_CONFIG;
}

// mmdebstrap's "I:" lines, as rough progress through the bootstrap.
const MILESTONES: [prefix: string, fraction: number][] = [
  ['running apt-get update', 0.05],
  ['downloading packages', 0.15],
  ['extracting archives', 0.35],
  ['installing essential packages', 0.45],
  ['installing remaining packages', 0.6],
  ['cleaning package lists', 0.85],
  ['creating tarball', 0.9],
];

/** Runs mmdebstrap with its tarball on stdout, unpacked on the fly: no 500 MB intermediate file. */
async function bootstrap(rootfs: string, recipe: DebianRecipe, options: DebianBuildOptions): Promise<void> {
  const args = [
    `--variant=${recipe.variant}`,
    `--include=${recipe.packages.join(',')}`,
    '--format=tar',
    recipe.suite,
    '-',
    ...(options.mirror ? [options.mirror] : []),
  ];
  options.progress({ phase: 'bootstrap', message: `mmdebstrap ${recipe.suite} (${recipe.packages.length} packages)`, fraction: 0 });
  const child = spawn('mmdebstrap', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', resolve);
  });
  const log: string[] = [];
  createInterface({ input: child.stderr }).on('line', (line) => {
    log.push(line);
    if (log.length > 40) log.shift();
    const info = /^I: (.*)/.exec(line)?.[1];
    if (!info) return;
    const fraction = MILESTONES.find(([prefix]) => info.startsWith(prefix))?.[1];
    options.progress({ phase: 'bootstrap', message: info, ...(fraction !== undefined && { fraction }) });
  });

  const writer = RootfsWriter.create(rootfs);
  let unpackError: unknown;
  try {
    await writer.applyLayer(child.stdout);
    writer.finish();
  } catch (error) {
    unpackError = error;
    child.kill('SIGTERM');
  }
  let code: number | null;
  try {
    code = await exited;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw unavailable('building the default image needs mmdebstrap: install it with `apt-get install mmdebstrap`');
    }
    throw error;
  }
  if (code !== 0) {
    // Its log explains more than the truncated tarball it leaves; say both when both failed.
    const also = unpackError ? `\nunpacking its output failed: ${(unpackError as Error).message}` : '';
    throw unavailable(`mmdebstrap failed (${code === null ? 'stopped' : `exit ${code}`}):\n${log.slice(-15).join('\n')}${also}`);
  }
  if (unpackError) throw unpackError;
  options.progress({ phase: 'bootstrap', message: 'Debian is in place', fraction: 1 });
}
