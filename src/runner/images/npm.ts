// npm for the default image, fetched straight from the npm registry over HTTPS: the runner
// host needs no npm of its own, and the tarball is checked against the registry's
// integrity hash. npm publishes with its dependencies bundled, so one tarball is all of it.
import { createHash } from 'node:crypto';
import { lchown, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { extract } from 'tar';
import { z } from 'zod';
import { unavailable } from '../../shared/errors.ts';
import { mkdirOwned } from './rootfs.ts';
import { ROOT_OWNER } from './layers.ts';

const TIMEOUT_MS = 120_000;

const packumentSchema = z.object({
  versions: z.record(z.string(), z.object({ dist: z.object({ tarball: z.string().url(), integrity: z.string() }) })),
});

export interface NpmRelease {
  version: string;
  tarball: Buffer;
}

/** The newest stable release of npm `major`, downloaded and verified. */
export async function fetchNpm(registry: string, major: number): Promise<NpmRelease> {
  const base = registry.replace(/\/+$/, '');
  const packument = packumentSchema.parse(
    await getJson(`${base}/npm`, { accept: 'application/vnd.npm.install-v1+json' }),
  );
  const stable = new RegExp(`^${major}\\.\\d+\\.\\d+$`);
  const version = Object.keys(packument.versions)
    .filter((v) => stable.test(v))
    .sort(compareVersions)
    .at(-1);
  if (!version) throw unavailable(`the npm registry at ${base} has no npm ${major}.x release`);
  const { tarball: url, integrity } = packument.versions[version]!.dist;
  const tarball = Buffer.from(await (await get(url, {})).arrayBuffer());
  checkIntegrity(tarball, integrity, `npm ${version}`);
  return { version, tarball };
}

/** Unpacks npm to /usr/local/lib/node_modules/npm with `npm` and `npx` in /usr/local/bin, all owned by container root. */
export async function installNpm(rootfs: string, release: NpmRelease): Promise<void> {
  const dest = await mkdirOwned(rootfs, 'usr/local/lib/node_modules/npm');
  // node-tar refuses entries that climb out of `dest`; the owner option chowns every entry.
  await pipeline(
    Readable.from([release.tarball]),
    extract({ cwd: dest, strip: 1, uid: ROOT_OWNER, gid: ROOT_OWNER, strict: true }),
  );
  const bin = await mkdirOwned(rootfs, 'usr/local/bin');
  for (const [name, script] of [['npm', 'npm-cli.js'], ['npx', 'npx-cli.js']] as const) {
    const link = join(bin, name);
    await symlink(`../lib/node_modules/npm/bin/${script}`, link);
    await lchown(link, ROOT_OWNER, ROOT_OWNER);
  }
}

async function get(url: string, headers: Record<string, string>): Promise<Response> {
  let response: Response;
  try {
    response = await fetch(url, { headers, signal: AbortSignal.timeout(TIMEOUT_MS) });
  } catch (error) {
    throw unavailable(`cannot reach the npm registry (${url}): ${(error as Error).message}`);
  }
  if (!response.ok) throw unavailable(`the npm registry answered ${response.status} for ${url}`);
  return response;
}

const getJson = async (url: string, headers: Record<string, string>): Promise<unknown> => (await get(url, headers)).json();

function checkIntegrity(data: Buffer, integrity: string, what: string): void {
  // Subresource-integrity strings: "sha512-<base64>", possibly several separated by spaces.
  const sha512 = integrity.split(/\s+/).find((entry) => entry.startsWith('sha512-'));
  if (!sha512) throw unavailable(`the npm registry gives no sha512 integrity for ${what}`);
  const actual = `sha512-${createHash('sha512').update(data).digest('base64')}`;
  if (actual !== sha512) throw unavailable(`the download of ${what} does not match its integrity hash`);
}

function compareVersions(a: string, b: string): number {
  const [pa, pb] = [a, b].map((v) => v.split('.').map(Number)) as [number[], number[]];
  for (let i = 0; i < 3; i++) if (pa[i] !== pb[i]) return pa[i]! - pb[i]!;
  return 0;
}
