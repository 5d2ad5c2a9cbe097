// The environment a task or a prebuild works in, as a create's body: the work spec's limits,
// user, ports and volumes, and no idle stop or lifetime (the pipeline or the builder ends it).
import type { CreateEnvironmentBody } from '../../shared/api.ts';
import { parseSize } from '../../shared/units.ts';
import type { WorkSpec } from './repo-config.ts';

export function workEnvironmentBody(spec: WorkSpec, o: { name: string; project: string | undefined }): CreateEnvironmentBody {
  return {
    name: o.name,
    image: spec.image ?? undefined,
    project: o.project,
    cpus: spec.limits.cpus,
    memory: spec.limits.memory === undefined ? undefined : parseSize(spec.limits.memory),
    idleTimeout: null,
    maxLifetime: null,
    user: spec.user ?? undefined,
    forwardPorts: spec.forwardPorts.length ? spec.forwardPorts : undefined,
    volumes: spec.volumes.length ? spec.volumes : undefined,
  };
}
