// A host checkout into an environment: one tar stream, unpacked as root (the folder may be
// where only root can write), then given to the environment's user. The task pipeline and
// the prebuild builder both start this way.
import { create as tarCreate } from 'tar';
import type { Scope } from '../authz.ts';
import type { EnvironmentService } from '../environments/service.ts';
import { runIn } from './sandbox.ts';

export async function copyRepoIn(environments: EnvironmentService, scope: Scope, environmentId: string, o: { repoDir: string; root: string; user: string | null; signal?: AbortSignal | undefined }): Promise<{ ok: true } | { ok: false; stderr: Buffer }> {
  const archive = tarCreate({ cwd: o.repoDir, portable: true }, ['.']);
  const script = o.user ? 'mkdir -p -- "$1" && cd -- "$1" && tar -xof - && case "$2" in *[!0-9]*) o="$(id -u -- "$2"):$(id -g -- "$2")" || exit 1;; *) o="$2";; esac && chown -R -- "$o" .' : 'mkdir -p -- "$1" && cd -- "$1" && exec tar -xof -';
  const r = await runIn(environments, scope, environmentId, ['sh', '-c', script, 'sh', o.root, ...(o.user ? [o.user] : [])], {
    stdin: archive,
    redact: false,
    signal: o.signal,
    asRoot: true,
  });
  return r.exitCode === 0 ? { ok: true } : { ok: false, stderr: r.stderr };
}
