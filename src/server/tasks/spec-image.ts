// The image a spec with a devcontainer build runs: built on the runner that will run it,
// from the checkout (sent to it as a tar; runner/images/build.ts), under the project's
// egress policy, named in the org, kept in that runner's store. Used by `berth project
// check` and by the task pipeline before it provisions.
import { packCheckout, type Runner } from '../../runner/index.ts';
import type { PolicyService } from '../policy/index.ts';
import type { RunnerPool } from '../runners/pool.ts';
import type { WorkSpec } from './repo-config.ts';

export interface SpecImageDeps {
  policies: PolicyService;
  /** Where the runner a task claimed is found: its build goes there. */
  runners: RunnerPool;
}

export interface SpecImage {
  /** The built image's name in the org: what the environment is created from. */
  name: string;
  digest: string;
  /** An earlier build with the same inputs was used. */
  reused: boolean;
}

/** Builds the spec's image on `runner` (null when the spec builds nothing); `onLog` gets the build log line by line. */
export async function buildSpecImage(
  deps: Pick<SpecImageDeps, 'policies'>,
  o: { orgId: string; project: string; runner: Runner; repoDir: string; spec: WorkSpec; onLog?: ((line: string) => void) | undefined; signal?: AbortSignal | undefined },
): Promise<SpecImage | null> {
  const build = o.spec.build;
  if (!build) return null;
  // RUN steps reach what the project's environments may reach, with no credentials added:
  // a build's output is an image anyone in the org may run.
  const { effective } = await deps.policies.show(o.orgId, { kind: 'project', ref: o.project });
  const { credentials: _credentials, mirrors: _mirrors, ...policy } = effective;
  const result = await o.runner.build({
    org: o.orgId,
    project: o.project,
    spec: build,
    policy: { ...policy, credentials: [] },
    context: packCheckout(o.repoDir),
    onLog: o.onLog,
    signal: o.signal,
  });
  return { name: result.image.name, digest: result.image.digest, reused: result.reused };
}
