// A project's prebuild settings with their defaults applied.
import { DEFAULT_PREBUILD_KEEP, type PrebuildSettings } from '../../shared/prebuilds.ts';
import { parseDuration } from '../../shared/units.ts';
import type { ProjectSettings } from '../db/schema.ts';

export type { Prebuild } from '../../shared/prebuilds.ts';

export function prebuildSettingsOf(settings: ProjectSettings): { keep: number; maxAgeMs: number | null; onPush: boolean; schedule: PrebuildSettings['schedule']; timezone: string | undefined; since: Date | null } {
  const p = settings.prebuild ?? {};
  return {
    keep: p.keep ?? DEFAULT_PREBUILD_KEEP,
    maxAgeMs: p.maxAge ? (parseDuration(p.maxAge) ?? null) : null,
    onPush: p.onPush ?? true,
    schedule: p.schedule,
    timezone: p.timezone,
    since: p.since ? new Date(p.since) : null,
  };
}
