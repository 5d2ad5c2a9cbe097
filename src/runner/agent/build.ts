// Builds the runner's C programs (the agent, agent.c, and the start helper,
// ../mount-exec.c) into static binaries, once per version of their source.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Spawner } from '../spawner/index.ts';

export const AGENT_SOURCE = new URL('./agent.c', import.meta.url).pathname;
export const MOUNT_EXEC_SOURCE = new URL('../mount-exec.c', import.meta.url).pathname;

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
export function buildAgent(opts: BuildAgent): Promise<string | undefined> {
  return buildStatic(opts, { source: AGENT_SOURCE, name: 'berth-agent', label: 'the Berth agent', fallback: 'environments will run catatonit and commands will go through the OCI runtime\'s exec (slower)' });
}

/** The start helper (mount-exec.c); without it a start mounts through sh and mount(8). */
export function buildMountExec(opts: BuildAgent): Promise<string | undefined> {
  return buildStatic(opts, { source: MOUNT_EXEC_SOURCE, name: 'berth-mount-exec', label: 'the start helper', fallback: 'starts will mount through sh and mount(8) (slower)' });
}

interface Program {
  source: string;
  /** The binary's name in the cache (with the source hash after it). */
  name: string;
  /** What warnings call it, and what happens without it. */
  label: string;
  fallback: string;
}

/** Never rejects: a runner without its C programs still works, more slowly. */
function buildStatic(opts: BuildAgent, program: Program): Promise<string | undefined> {
  return compile(opts, program).catch((err: unknown) => {
    if (!opts.signal?.aborted) opts.logger.warn({ err }, `cannot build ${program.label}; ${program.fallback}`);
    return undefined;
  });
}

async function compile({ spawner, cacheDir, compiler, logger, signal }: BuildAgent, program: Program): Promise<string | undefined> {
  const { name, label, fallback } = program;
  const prefix = `${name}-`;
  const source = await readFile(program.source);
  const hash = createHash('sha256').update(source).digest('hex');
  const binary = join(cacheDir, `${prefix}${hash.slice(0, 32)}`);
  if (existsSync(binary)) return binary;

  await mkdir(cacheDir, { recursive: true, mode: 0o700 });
  // Built under a temporary name and renamed, so a reader (or a second runner on the
  // same data dir) never sees half a binary.
  const tmp = `${binary}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    const r = await spawner.run(compiler, ['-O2', '-static', '-Wall', '-Wextra', '-o', tmp, program.source]);
    if (signal?.aborted) return undefined;
    if (r.code !== 0) {
      const why = r.code === 127 || /ENOENT/.test(r.stderr) ? `no C compiler (${compiler}) found` : `${compiler} failed: ${r.stderr.trim() || `exit ${r.code}`}`;
      logger.warn(`cannot build ${label}: ${why}; ${fallback}. Install gcc and libc6-dev (scripts/setup.sh does) to fix this.`);
      return undefined;
    }
    // The environment's root runs it: readable and executable by all.
    await chmod(tmp, 0o755);
    await rename(tmp, binary);
  } finally {
    await rm(tmp, { force: true });
  }
  // Older builds: a running environment keeps its own copy mounted, so they can go.
  for (const file of await readdir(cacheDir)) {
    if (file.startsWith(prefix) && join(cacheDir, file) !== binary && !file.endsWith('.tmp')) await rm(join(cacheDir, file), { force: true });
  }
  logger.info({ binary }, `built ${label}`);
  return binary;
}
