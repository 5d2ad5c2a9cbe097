// Dev Container Features (containers.dev/implementors/features): what devcontainer.json's
// `features` names, read from the repository, checked, and put in install order. Each is a
// folder with devcontainer-feature.json and install.sh; its options reach install.sh as
// upper-cased environment variables. Features come from the repository, so they are hostile
// like the rest of it: every path stays inside the checkout and every field is checked.
import { lstat, readFile, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { parse as parseJsonc, type ParseError } from 'jsonc-parser';
import { z } from 'zod';
import { invalid } from '../../shared/errors.ts';
import { insideCheckout } from './build-context.ts';

/** What devcontainer.json gives one feature: options, or a version string (the `version` option), or true. */
export type FeatureValue = string | boolean | Record<string, string | boolean>;

export interface ResolvedFeature {
  /** The key in devcontainer.json: `./node-tools`, `ghcr.io/devcontainers/features/node:1`. */
  key: string;
  /** The feature's own id (devcontainer-feature.json). */
  id: string;
  /** Its folder (absolute, inside the checkout). */
  dir: string;
  /** Options as install.sh sees them: `VERSION=lts`. Defaults filled in. */
  env: Record<string, string>;
  /** Environment variables the feature puts into the image. */
  containerEnv: Record<string, string>;
}

const OptionSpec = z.looseObject({
  type: z.enum(['string', 'boolean']).optional(),
  default: z.union([z.string(), z.boolean()]).optional(),
  enum: z.array(z.string()).optional(),
  proposals: z.array(z.string()).optional(),
});
const FeatureJson = z.looseObject({
  id: z.string().regex(/^[a-zA-Z0-9_.-]{1,128}$/, 'letters, digits, _ . and - only'),
  version: z.string().max(64).optional(),
  options: z.record(z.string().max(128), OptionSpec).optional(),
  containerEnv: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'variable names are letters, digits and _'), z.string().max(64 * 1024)).optional(),
  dependsOn: z.record(z.string(), z.unknown()).optional(),
  installsAfter: z.array(z.string()).optional(),
});
type FeatureJson = z.infer<typeof FeatureJson>;

/** The spec's rule for an option's variable name. */
export const optionVariable = (option: string) =>
  option
    .replace(/[^\w_]/g, '_')
    .replace(/^[\d_]+/g, '_')
    .toUpperCase();

/** A feature reference without its tag or digest, for dependsOn/installsAfter matching. */
const withoutVersion = (ref: string) => ref.replace(/@sha256:[a-f0-9]+$/, '').replace(/:[\w.-]+$/, '');

const MAX_FEATURES = 64;

/**
 * Reads the features devcontainer.json names (`configDir` is its folder, relative to the
 * checkout `root`) and returns them in install order: dependsOn first (hard: a missing one
 * is an error), installsAfter where both are present, then overrideFeatureInstallOrder, then
 * the order devcontainer.json lists them in. A cycle is an error that names the features.
 */
export async function resolveFeatures(
  root: string,
  configDir: string,
  features: Record<string, FeatureValue>,
  overrideOrder: readonly string[] = [],
  /** Fetches a registry feature (`ghcr.io/…/node:1`) and returns the folder it was unpacked in; without it they are refused. */
  fetch?: (ref: string) => Promise<string>,
): Promise<ResolvedFeature[]> {
  const keys = Object.keys(features);
  if (keys.length > MAX_FEATURES) throw invalid(`devcontainer.json lists ${keys.length} features; Berth installs at most ${MAX_FEATURES}`);
  const found: (ResolvedFeature & { json: FeatureJson })[] = [];
  for (const key of keys) found.push(await readFeature(root, configDir, key, features[key]!, fetch));
  return order(found, overrideOrder);
}

async function readFeature(root: string, configDir: string, key: string, value: FeatureValue, fetch: ((ref: string) => Promise<string>) | undefined): Promise<ResolvedFeature & { json: FeatureJson }> {
  const local = key.startsWith('./') || key.startsWith('../');
  if (!local && !fetch) {
    throw invalid(`feature '${key}' is fetched from a registry, which is not done here: copy the feature's folder under .devcontainer/ and name it as './folder' in devcontainer.json`);
  }
  // The spec keeps local features inside .devcontainer; the checkout is the hard boundary.
  const dir = local ? await insideCheckout(root, configDir, key, `feature`) : await fetch!(key);
  if (!(await stat(dir)).isDirectory()) throw invalid(`feature '${key}' is not a folder: a local feature is a folder with devcontainer-feature.json and install.sh`);
  const jsonPath = join(dir, 'devcontainer-feature.json');
  const where = local ? relative(root, jsonPath) : `feature '${key}': devcontainer-feature.json`;
  const text = await readFile(jsonPath, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') throw invalid(`feature '${key}' has no devcontainer-feature.json (looked for ${where})`);
    throw error;
  });
  const errors: ParseError[] = [];
  const raw: unknown = parseJsonc(text, errors, { allowTrailingComma: true });
  if (errors.length) throw invalid(`${where}: not valid JSON (at offset ${errors[0]!.offset})`);
  const parsed = FeatureJson.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw invalid(`${where}: ${issue.path.join('.') || 'file'}: ${issue.message}`);
  }
  const json = parsed.data;
  // A symlink here could point anywhere: install.sh must be a file of the feature itself.
  if (!(await lstat(join(dir, 'install.sh')).catch(() => undefined))?.isFile()) {
    throw invalid(`feature '${key}' has no install.sh${local ? ` (looked in ${relative(root, dir)})` : ''}: a feature's install.sh is what installs it`);
  }
  return { key, id: json.id, dir, env: optionEnv(key, json, value), containerEnv: json.containerEnv ?? {}, json };
}

/** The options devcontainer.json gives, over the feature's defaults, as install.sh's variables. */
function optionEnv(key: string, json: FeatureJson, value: FeatureValue): Record<string, string> {
  const given: Record<string, string | boolean> = typeof value === 'string' ? { version: value } : value === true || value === false ? {} : value;
  if (typeof given !== 'object' || given === null || Array.isArray(given)) throw invalid(`feature '${key}': its value must be an object of options`);
  const env: Record<string, string> = {};
  for (const [name, spec] of Object.entries(json.options ?? {})) {
    if (spec.default !== undefined) env[optionVariable(name)] = String(spec.default);
  }
  for (const [name, v] of Object.entries(given)) {
    if (typeof v !== 'string' && typeof v !== 'boolean') throw invalid(`feature '${key}': option '${name}' must be a string or a boolean`);
    const spec = json.options?.[name];
    if (spec?.enum && !spec.enum.includes(String(v))) throw invalid(`feature '${key}': option '${name}' is '${v}', but it must be one of ${spec.enum.join(', ')}`);
    if (spec?.type === 'boolean' && typeof v !== 'boolean' && v !== 'true' && v !== 'false') throw invalid(`feature '${key}': option '${name}' must be true or false`);
    env[optionVariable(name)] = String(v);
  }
  return env;
}

function order<T extends ResolvedFeature & { json: FeatureJson }>(features: T[], overrideOrder: readonly string[]): ResolvedFeature[] {
  const names = (f: T) => new Set([f.key, f.id, withoutVersion(f.key)]);
  const find = (ref: string) => features.find((f) => names(f).has(ref) || names(f).has(withoutVersion(ref)));
  const after = new Map<T, Set<T>>();
  for (const f of features) {
    const before = new Set<T>();
    for (const dep of Object.keys(f.json.dependsOn ?? {})) {
      const d = find(dep);
      if (!d) throw invalid(`feature '${f.key}' depends on '${dep}', which devcontainer.json does not list: add it to "features"`);
      if (d !== f) before.add(d);
    }
    for (const soft of f.json.installsAfter ?? []) {
      const d = find(soft);
      if (d && d !== f) before.add(d);
    }
    after.set(f, before);
  }
  const rank = (f: T) => {
    const i = overrideOrder.findIndex((ref) => names(f).has(ref) || names(f).has(withoutVersion(ref)));
    return i === -1 ? overrideOrder.length : i;
  };
  const done: T[] = [];
  const left = new Set(features);
  while (left.size) {
    const ready = [...left].filter((f) => [...after.get(f)!].every((d) => !left.has(d)));
    if (ready.length === 0) {
      throw invalid(`features depend on each other in a cycle (${[...left].map((f) => f.key).join(', ')}): remove a dependsOn or installsAfter`);
    }
    ready.sort((a, b) => rank(a) - rank(b) || features.indexOf(a) - features.indexOf(b));
    // One per round: the override order and the listed order decide among those ready.
    const next = ready[0]!;
    done.push(next);
    left.delete(next);
  }
  return done.map(({ json: _json, ...f }) => f);
}
