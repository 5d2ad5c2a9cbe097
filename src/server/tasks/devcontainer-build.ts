// devcontainer.json's `build` (dockerfile, context, args, target; the legacy dockerFile and
// context) and `features`: checked here, built on the runner (runner/images/build.ts).
import { dirname } from 'node:path';
import { z } from 'zod';
import type { BuildSpec } from '../../runner/images/build.ts';
import { invalid } from '../../shared/errors.ts';

/** What the runner builds for a devcontainer (its own type: the runner builds what this reads). */
export type DevContainerBuild = BuildSpec;

const Path = z.string().min(1).max(1024);
const Build = z.looseObject({
  dockerfile: Path.optional(),
  context: Path.optional(),
  args: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'build argument names are letters, digits and _'), z.string().max(64 * 1024)).optional(),
  target: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, 'a stage name').optional(),
});
const Features = z.record(z.string().min(1).max(512), z.union([z.string().max(1024), z.boolean(), z.record(z.string().max(128), z.union([z.string().max(64 * 1024), z.boolean()]))]));
const Fields = z.looseObject({
  image: z.string().optional(),
  build: Build.optional(),
  dockerFile: Path.optional(),
  context: Path.optional(),
  features: Features.optional(),
  overrideFeatureInstallOrder: z.array(z.string().max(512)).max(64).optional(),
  remoteUser: z.string().max(64).optional(),
  containerUser: z.string().max(64).optional(),
});

/** The build a devcontainer.json asks for, or null when it names only an image (or nothing to build). */
export function devContainerBuild(dc: Record<string, unknown>, file: string): DevContainerBuild | null {
  const parsed = Fields.safeParse(dc);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw invalid(`${file}: ${issue.path.join('.')}: ${issue.message}`, file);
  }
  const f = parsed.data;
  const dockerfile = f.build?.dockerfile ?? f.dockerFile;
  const features = f.features && Object.keys(f.features).length ? f.features : undefined;
  if (dockerfile === undefined && !features) {
    if (f.build && Object.keys(f.build).length) throw invalid(`${file}: build has no dockerfile: name the Dockerfile (relative to ${file}) in build.dockerfile`, file);
    return null;
  }
  if (dockerfile !== undefined && f.image !== undefined) throw invalid(`${file}: names both an image and a Dockerfile: keep one`, file);
  return {
    configDir: dirname(file),
    dockerfile,
    context: f.build?.context ?? f.context,
    args: f.build?.args,
    target: f.build?.target,
    image: dockerfile === undefined ? f.image : undefined,
    features,
    overrideFeatureInstallOrder: f.overrideFeatureInstallOrder,
    remoteUser: f.remoteUser,
    containerUser: f.containerUser,
  };
}
