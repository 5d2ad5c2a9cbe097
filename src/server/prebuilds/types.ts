// What prebuilds and warm pools agree on. Warm pools (warm-pool.ts) keep environments made
// from a project's newest prebuild; the task pipeline asks them for one before making its own.
import type { Scope } from '../authz.ts';

export interface WarmPools {
  /**
   * Hands a started environment of the project's pool, made from prebuild `prebuildId`, to the
   * task: renamed `name`, now the task's. Undefined when none is ready (the caller makes its own).
   */
  claim(o: { scope: Scope; projectId: string; prebuildId: string; name: string; taskId: string }): Promise<string | undefined>;
}
