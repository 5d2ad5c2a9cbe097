// Builds the agent (agent.c) into a static binary, once per version of its source.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Spawner } from '../spawner/index.ts';

export const AGENT_SOURCE = new URL('./agent.c', import.meta.url).pathname;
const PREFIX = 'berth-agent-';

export interface BuildAgent {
  spawner: Spawner;
  /** Where binaries are kept, one per source hash. */
  cacheDir: string;
  /** The C compiler: $CC, else cc. */
  compiler: string;
  logger: Logger;
  /** Aborted when the runner closes: a build cut short then is no news. */
  signal?: AbortSignal | undefined;
}

/**
 * The path of the agent binary for the current agent.c, compiling it if this cache has
 * none. Undefined (with a warning) when it cannot be built, e.g. without a C compiler:
 * environments then run catatonit and commands go through `crun exec`.
 */
export async function buildAgent({ spawner, cacheDir, compiler, logger, signal }: BuildAgent): Promise<string | undefined> {
  const source = await readFile(AGENT_SOURCE);
  const hash = createHash('sha256').update(source).digest('hex');
  const binary = join(cacheDir, `${PREFIX}${hash.slice(0, 32)}`);
  if (existsSync(binary)) return binary;

  await mkdir(cacheDir, { recursive: true, mode: 0o700 });
  // Built under a temporary name and renamed, so a reader (or a second runner on the
  // same data dir) never sees half a binary.
  const tmp = `${binary}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const fallback = 'environments will run catatonit and commands will go through the OCI runtime\'s exec (slower)';
  try {
    const r = await spawner.run(compiler, ['-O2', '-static', '-Wall', '-Wextra', '-o', tmp, AGENT_SOURCE]);
    if (signal?.aborted) return undefined;
    if (r.code !== 0) {
      const why = r.code === 127 || /ENOENT/.test(r.stderr) ? `no C compiler (${compiler}) found` : `${compiler} failed: ${r.stderr.trim() || `exit ${r.code}`}`;
      logger.warn(`cannot build the Berth agent: ${why}; ${fallback}. Install gcc and libc6-dev (scripts/setup.sh does) to fix this.`);
      return undefined;
    }
    // The environment's root runs it: readable and executable by all.
    await chmod(tmp, 0o755);
    await rename(tmp, binary);
  } catch (err) {
    if (!signal?.aborted) logger.warn({ err }, `cannot build the Berth agent; ${fallback}`);
    return undefined;
  } finally {
    await rm(tmp, { force: true });
  }
  // Older builds: a running environment keeps its own copy mounted, so they can go.
  for (const name of await readdir(cacheDir)) {
    if (name.startsWith(PREFIX) && join(cacheDir, name) !== binary && !name.endsWith('.tmp')) await rm(join(cacheDir, name), { force: true });
  }
  logger.info({ binary }, 'built the Berth agent');
  return binary;
}
