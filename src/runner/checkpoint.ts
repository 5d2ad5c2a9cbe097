// Whether this host can checkpoint an environment's processes and memory (CRIU) under the
// runner's OCI runtime, and if not, why and what would make it work. Probed, never assumed:
// the runtime must be built with CRIU (crun's `--version` says +CRIU; runc always is), criu
// must be installed, and `criu check` must pass on this kernel (it fails, for instance,
// where criu is older than the kernel's vDSO layout).
import { execFile } from 'node:child_process';
import { release } from 'node:os';
import { conflict, type BerthError } from '../shared/errors.ts';
import { installed } from './health.ts';

export type CheckpointSupport = { available: true } | { available: false; reason: string };

/** Runs a tool and gives its exit code and output; never throws. */
export type RunTool = (file: string, args: string[]) => Promise<{ code: number; output: string }>;

const runTool: RunTool = (file, args) =>
  new Promise((resolve) => {
    execFile(file, args, { timeout: 30_000, maxBuffer: 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, output: `${stdout}${stderr}` });
    });
  });

export async function probeCheckpoint(runtime: string, run: RunTool = runTool, has: (binary: string) => boolean = installed): Promise<CheckpointSupport> {
  const reasons: string[] = [];
  if (runtime === 'runsc') {
    reasons.push('the runtime is runsc, which Berth does not checkpoint: run environments with runc (BERTH_RUNTIME=runc) and criu');
  } else if (runtime === 'crun') {
    const version = await run('crun', ['--version']);
    if (!/\+CRIU\b/.test(version.output)) {
      reasons.push('crun here is built without CRIU (`crun --version` shows no +CRIU): run environments with runc (BERTH_RUNTIME=runc, apt-get install runc) or a crun built with CRIU');
    }
  }
  if (!has('criu')) {
    reasons.push('criu is not installed (apt-get install criu)');
  } else {
    const check = await run('criu', ['check']);
    if (check.code !== 0) {
      const version = (await run('criu', ['--version'])).output.match(/Version:\s*(\S+)/)?.[1] ?? '(version unknown)';
      reasons.push(`criu ${version} cannot checkpoint on this kernel (${release()}): \`criu check\` says "${criuError(check.output)}"; a criu release that supports this kernel, or a kernel it supports, would make it work`);
    }
  }
  return reasons.length ? { available: false, reason: reasons.join('; ') } : { available: true };
}

/**
 * Whether `berth env pause` can work on a runner with this runtime. Berth does not checkpoint
 * yet even where the host could (no host it has run on could: see the README), so a host
 * that passes every check is told that plainly rather than shown as able.
 */
export async function pauseSupport(runtime: string, run?: RunTool, has?: (binary: string) => boolean): Promise<CheckpointSupport> {
  const host = await probeCheckpoint(runtime, run, has);
  if (!host.available) return host;
  return { available: false, reason: `${runtime} and criu pass their checks on this host, but this Berth does not checkpoint environments yet` };
}

/** The answer to a pause or resume a runner cannot do: why, and what to do instead. */
export function pauseRefused(runner: string, reason: string): BerthError {
  return conflict(`runner '${runner}' cannot pause environments (keep their processes and memory): ${reason}. \`berth env stop\` keeps the files; its processes end`);
}

/** The first error criu names, without its source location: `Error (criu/vdso.c:381): vdso: …` → `vdso: …`. */
function criuError(output: string): string {
  const line = output.split('\n').find((l) => l.includes('Error')) ?? output.trim().split('\n')[0] ?? '';
  return line.replace(/^.*Error \([^)]*\):\s*/, '').trim().slice(0, 300) || 'nothing';
}
