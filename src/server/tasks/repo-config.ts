// How to work on a repository: read from its berth.yaml or .devcontainer/devcontainer.json
// and overridden by the project's settings. Repository files are input from outside:
// anything malformed is a clear error that names the file, and anything Berth cannot
// honour is reported as a note instead of being silently dropped.
import { readFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { parse as parseJsonc, printParseErrorCode, type ParseError } from 'jsonc-parser';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { invalid } from '../../shared/errors.ts';
import type { VolumeMount } from '../../shared/env-spec.ts';
import { readComposeService } from './compose.ts';
import { devContainerBuild, type DevContainerBuild } from './devcontainer-build.ts';
import { checkUser, devContainerFields, type ForwardPort } from './devcontainer-fields.ts';

export interface WorkSpec {
  /** Image to run; the runner's default image when null. */
  image: string | null;
  env: Record<string, string>;
  /** Shell commands run once after the clone, in order. */
  setup: string[];
  /**
   * Which of `setup` a task started from a prebuild runs again (the rest the prebuild did):
   * each names its command and the paths whose change makes it rerun (prebuilds/incremental.ts).
   */
  incremental?: IncrementalStep[] | undefined;
  /** The command that says whether the work is done (for example `npm test`). */
  check: string | null;
  limits: { cpus?: number | undefined; memory?: string | undefined };
  /** Where the environment may connect (enforced by the network policy). */
  allowDomains: string[];
  /** Who commands run as inside the environment (a user of the image, or a uid); root when null. */
  user: string | null;
  /** Ports the environment serves (devcontainer forwardPorts): recorded on the environment, nothing more. */
  forwardPorts: ForwardPort[];
  /** Named volumes: directories kept per project by the runner, mounted at each target. */
  volumes: VolumeMount[];
  /** Where the repository is put inside the environment; /workspace/REPO when null. */
  workspaceFolder: string | null;
  /** Which file the spec came from. */
  source: 'berth.yaml' | 'devcontainer.json' | 'project';
  /** Where each field's value came from: a file (and compose service), "project setting" or "Berth default". */
  sources: Partial<Record<SpecField, string>>;
  /** What was in the file that Berth does not honour, so the user can see it was skipped. */
  notes: string[];
  /** A devcontainer's Dockerfile and features, built into the image the task runs (replaces `image`). */
  build?: DevContainerBuild | undefined;
}

export const SPEC_FIELDS = ['image', 'user', 'env', 'setup', 'check', 'limits', 'allowDomains', 'workspaceFolder', 'forwardPorts', 'volumes'] as const;
export type SpecField = (typeof SPEC_FIELDS)[number];

/**
 * A setup step a task started from a prebuild runs again: `when` lists the paths (globs: `*`
 * within a folder, `**` across) whose change between the prebuild's commit and the task's makes
 * it rerun; without `when`, any change does. A plain string step is done once, by the prebuild.
 */
export interface IncrementalStep {
  run: string;
  when: string[] | null;
  /** Runs on every start, changed or not (devcontainer postStartCommand: processes do not survive a snapshot). */
  always?: boolean | undefined;
}
const SetupStep = z.union([
  z.string().max(10_000),
  z.strictObject({
    run: z.string().min(1).max(10_000),
    incremental: z.boolean().optional().describe('run again by a task started from a prebuild, when `when` paths changed'),
    when: z.array(z.string().min(1).max(1000)).min(1).max(100).optional().describe('paths (globs) whose change makes an incremental step rerun; any change when absent'),
  }),
]);
const Commands = z.union([z.string().max(10_000), z.array(SetupStep).max(100)]);

/** berth.yaml's (or the project's) setup as the commands and the incremental steps among them. */
export function setupSteps(setup: z.infer<typeof Commands> | undefined): { setup: string[]; incremental: IncrementalStep[] } {
  if (setup === undefined) return { setup: [], incremental: [] };
  const list = typeof setup === 'string' ? [setup] : setup;
  const incremental = list.flatMap((s) => (typeof s !== 'string' && s.incremental ? [{ run: s.run, when: s.when ?? null }] : []));
  return { setup: list.map((s) => (typeof s === 'string' ? s : s.run)), incremental };
}
const Env = z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'variable names are letters, digits and _'), z.string().max(64 * 1024));
const Memory = z.union([z.string().regex(/^\d+(\.\d+)?\s*[kmgt]i?b?$/i, 'like 4gb or 512mb'), z.number().int().positive()]);

/** berth.yaml: the Berth-native way for a repository to say how to work on it. */
export const BerthYaml = z.strictObject({
  image: z.string().min(1).max(512).optional(),
  env: Env.optional(),
  setup: Commands.optional(),
  check: z.string().min(1).max(10_000).optional(),
  limits: z.strictObject({ cpus: z.number().positive().max(256).optional(), memory: Memory.optional() }).optional(),
  allowDomains: z.array(z.string().max(253)).max(500).optional(),
  user: z.string().max(64).refine((u) => { try { return Boolean(checkUser(u, 'user')); } catch { return false; } }, 'a user name of the image (like node) or a uid').optional(),
});

/** The parts of the Dev Container spec that Berth reads; the rest is noted and skipped. */
const LifecycleCommand = z.union([z.string(), z.array(z.string()), z.record(z.string(), z.union([z.string(), z.array(z.string())]))]);
const DevContainer = z.looseObject({
  image: z.string().min(1).max(512).optional(),
  containerEnv: z.record(z.string(), z.string()).optional(),
  remoteEnv: z.record(z.string(), z.string().nullable()).optional(),
  onCreateCommand: LifecycleCommand.optional(),
  updateContentCommand: LifecycleCommand.optional(),
  postCreateCommand: LifecycleCommand.optional(),
  postStartCommand: LifecycleCommand.optional(),
  hostRequirements: z.looseObject({ cpus: z.number().positive().optional(), memory: z.string().optional() }).optional(),
});
/** Dev Container properties that only make sense for a desktop editor, or that Berth handles its own way. */
const QUIETLY_IGNORED = new Set(['name', 'customizations', 'portsAttributes', 'workspaceMount', 'shutdownAction', 'overrideCommand', '$schema', 'waitFor', 'otherPortsAttributes']);
/** Read by devcontainer-fields.ts and compose.ts. */
const FIELDS_READ_ELSEWHERE = ['remoteUser', 'containerUser', 'forwardPorts', 'workspaceFolder', 'mounts', 'initializeCommand', 'dockerComposeFile', 'service', 'runServices'];

const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

/** A lifecycle command as shell lines: a string runs in a shell, an array is an argv, an object runs each entry. */
function shellLines(cmd: z.infer<typeof LifecycleCommand> | undefined): string[] {
  if (cmd === undefined) return [];
  if (typeof cmd === 'string') return cmd.trim() ? [cmd] : [];
  if (Array.isArray(cmd)) return cmd.length ? [cmd.map(quote).join(' ')] : [];
  return Object.values(cmd).flatMap((c) => shellLines(c));
}

export function fromDevContainer(text: string, file = '.devcontainer/devcontainer.json'): Omit<WorkSpec, 'allowDomains'> & { allowDomains: [] } {
  const errors: ParseError[] = [];
  const raw: unknown = parseJsonc(text, errors, { allowTrailingComma: true });
  if (errors.length) {
    const e = errors[0]!;
    throw invalid(`${file}: ${printParseErrorCode(e.error)} at offset ${e.offset}: fix the file or set the image and setup in the project's settings`, file);
  }
  const parsed = DevContainer.safeParse(raw);
  if (!parsed.success) throw invalid(`${file}: ${describe(parsed.error)}`, file);
  const dc = parsed.data;
  const notes: string[] = [];
  // The Dockerfile and features are built on the runner (runner/images/build.ts).
  const build = devContainerBuild(dc, file);
  const fields = devContainerFields(dc, file);
  notes.push(...fields.notes);
  if (dc.runArgs || dc.privileged || dc.capAdd || dc.securityOpt) notes.push('runArgs, privileged, capAdd and securityOpt are not honoured: the sandbox decides those');
  const known = new Set([...Object.keys(DevContainer.shape), ...FIELDS_READ_ELSEWHERE, 'build', 'dockerFile', 'features', 'runArgs', 'privileged', 'capAdd', 'securityOpt']);
  const unknown = Object.keys(dc).filter((k) => !known.has(k) && !QUIETLY_IGNORED.has(k));
  if (unknown.length) notes.push(`not used by Berth: ${unknown.join(', ')}`);

  const env: Record<string, string> = { ...dc.containerEnv };
  for (const [k, v] of Object.entries(dc.remoteEnv ?? {})) if (v !== null) env[k] = v;
  for (const k of Object.keys(env)) if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw invalid(`${file}: environment variable name '${k}' is not valid`, file);
  const hr = dc.hostRequirements;
  const setup = [...shellLines(dc.onCreateCommand), ...shellLines(dc.updateContentCommand), ...shellLines(dc.postCreateCommand), ...shellLines(dc.postStartCommand)];
  // As the Dev Container spec has it for prebuilds: updateContentCommand runs again when the
  // content changed, postStartCommand on every start (what it starts does not survive a snapshot).
  const incremental: IncrementalStep[] = [...shellLines(dc.updateContentCommand).map((run) => ({ run, when: null })), ...shellLines(dc.postStartCommand).map((run) => ({ run, when: null, always: true }))];
  const limits = { cpus: hr?.cpus, memory: hr?.memory };
  const spec = {
    image: dc.image ?? null,
    env,
    setup,
    incremental,
    check: null,
    limits,
    allowDomains: [] as [],
    user: fields.user,
    forwardPorts: fields.forwardPorts,
    volumes: fields.volumes,
    workspaceFolder: fields.workspaceFolder,
    source: 'devcontainer.json' as const,
    sources: {} as WorkSpec['sources'],
    notes,
  };
  spec.sources = sourcesOf(spec, file);
  if (build) Object.assign(spec, { build });
  if (fields.userFrom) spec.sources.user = `${file} (${fields.userFrom})`;
  if (build) spec.sources.image = `${file} (${build.dockerfile ? `build ${posix.join(build.configDir, build.dockerfile)}` : 'features'})`;
  return spec;
}

export function fromBerthYaml(text: string, file = 'berth.yaml'): WorkSpec {
  let raw: unknown;
  try {
    raw = parseYaml(text, { maxAliasCount: 100 });
  } catch (err) {
    throw invalid(`${file}: ${(err as Error).message.split('\n')[0]}`, file);
  }
  const parsed = BerthYaml.safeParse(raw ?? {});
  if (!parsed.success) throw invalid(`${file}: ${describe(parsed.error)}`, file);
  const y = parsed.data;
  const spec: WorkSpec = {
    image: y.image ?? null,
    env: y.env ?? {},
    ...setupSteps(y.setup),
    check: y.check ?? null,
    limits: { cpus: y.limits?.cpus, memory: y.limits?.memory === undefined ? undefined : String(y.limits.memory) },
    allowDomains: y.allowDomains ?? [],
    user: y.user ?? null,
    forwardPorts: [],
    volumes: [],
    workspaceFolder: null,
    source: 'berth.yaml',
    sources: {},
    notes: [],
  };
  spec.sources = sourcesOf(spec, file);
  return spec;
}

/** The fields of `spec` that hold a value, attributed to `from`. */
function sourcesOf(spec: Omit<WorkSpec, 'sources'>, from: string): Partial<Record<SpecField, string>> {
  const sources: Partial<Record<SpecField, string>> = {};
  for (const f of SPEC_FIELDS) if (hasValue(spec, f)) sources[f] = from;
  return sources;
}

function hasValue(spec: Omit<WorkSpec, 'sources'>, f: SpecField): boolean {
  const v = spec[f];
  if (v === null || v === undefined) return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object') return Object.values(v).some((x) => x !== undefined);
  return true;
}

/**
 * A devcontainer.json that names docker-compose files: the primary service's image, environment,
 * user and working directory fill what the devcontainer.json leaves open (it wins where both say).
 */
async function withCompose(dir: string, file: string, text: string, spec: WorkSpec): Promise<WorkSpec> {
  const raw = parseJsonc(text, [], { allowTrailingComma: true }) as Record<string, unknown> | null;
  if (!raw || raw.dockerComposeFile === undefined) return spec;
  const c = await readComposeService(dir, file, raw.dockerComposeFile, raw.service);
  const from = `${c.files.join(' + ')} service ${c.service}`;
  const out: WorkSpec = { ...spec, env: { ...c.env, ...spec.env }, sources: { ...spec.sources }, notes: [...c.notes, ...spec.notes] };
  if (c.build && spec.image === null && !spec.build?.dockerfile) {
    // As `docker compose up` does: the service's build makes its image (its "image" only names
    // the result); the devcontainer's features, if any, go on top. Built by runner/images/build.ts.
    out.build = {
      ...spec.build,
      configDir: c.build.configDir,
      dockerfile: c.build.dockerfile,
      context: c.build.context,
      args: c.build.args,
      target: c.build.target,
      image: undefined,
    };
    out.image = null;
    out.sources.image = `${from} (build ${posix.join(c.build.configDir, c.build.dockerfile)})`;
  } else if (spec.image === null && c.image) {
    if (spec.build && !spec.build.dockerfile) out.build = { ...spec.build, image: c.image };
    else out.image = c.image;
    out.sources.image = from;
  }
  if (Object.keys(c.env).length) out.sources.env = Object.keys(spec.env).length ? `${from}, ${file}` : from;
  if (spec.user === null && c.user) {
    out.user = checkUser(c.user, `${from}: user`);
    out.sources.user = `${from} (user)`;
  }
  if (spec.workspaceFolder === null && c.workingDir) {
    const w = devContainerFields({ workspaceFolder: c.workingDir }, `${from}: working_dir`).workspaceFolder;
    out.workspaceFolder = w;
    out.sources.workspaceFolder = `${from} (working_dir)`;
  }
  return out;
}

/** Reads the repository's own spec from a checkout: berth.yaml first, then the devcontainer. */
export async function readRepoSpec(dir: string): Promise<WorkSpec | null> {
  const read = (p: string) => readFile(join(dir, p), 'utf8').catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? null : Promise.reject(err)));
  for (const name of ['berth.yaml', '.berth.yaml']) {
    const text = await read(name);
    if (text !== null) return fromBerthYaml(text, name);
  }
  for (const name of ['.devcontainer/devcontainer.json', '.devcontainer.json']) {
    const text = await read(name);
    if (text !== null) return withCompose(dir, name, text, fromDevContainer(text, name));
  }
  return null;
}

/** Project settings that say how to work on its repository; they override the repository's files. */
export const ProjectWorkSettings = BerthYaml.partial();
export type ProjectWorkSettings = z.infer<typeof ProjectWorkSettings>;

/** The spec a task runs with: the repository's file, then the project's settings on top. */
export function mergeSpec(repo: WorkSpec | null, project: ProjectWorkSettings): WorkSpec {
  const base: WorkSpec = repo ?? { image: null, env: {}, setup: [], check: null, limits: {}, allowDomains: [], user: null, forwardPorts: [], volumes: [], workspaceFolder: null, source: 'project', sources: {}, notes: [] };
  const { setup, incremental } = project.setup === undefined ? { setup: base.setup, incremental: base.incremental ?? [] } : setupSteps(project.setup);
  const merged: WorkSpec = {
    image: project.image ?? base.image,
    env: { ...base.env, ...project.env },
    setup,
    incremental,
    check: project.check ?? base.check,
    limits: {
      cpus: project.limits?.cpus ?? base.limits.cpus,
      memory: project.limits?.memory === undefined ? base.limits.memory : String(project.limits.memory),
    },
    allowDomains: [...new Set([...base.allowDomains, ...(project.allowDomains ?? [])])],
    user: project.user ?? base.user,
    forwardPorts: base.forwardPorts,
    volumes: base.volumes,
    workspaceFolder: base.workspaceFolder,
    source: base.source,
    sources: { ...base.sources },
    notes: base.notes,
    // A project's own image wins over building the repository's.
    ...(base.build && project.image === undefined && { build: base.build }),
  };
  // Where each field came from: the project's setting over the file, and Berth's default where neither says.
  const both = (f: SpecField) => (base.sources[f] ? `${base.sources[f]}, project setting` : 'project setting');
  if (project.image !== undefined) merged.sources.image = 'project setting';
  if (project.user !== undefined) merged.sources.user = 'project setting';
  if (project.setup !== undefined) merged.sources.setup = 'project setting';
  if (project.check !== undefined) merged.sources.check = 'project setting';
  if (project.env && Object.keys(project.env).length) merged.sources.env = both('env');
  if (project.limits && Object.values(project.limits).some((v) => v !== undefined)) merged.sources.limits = both('limits');
  if (project.allowDomains?.length) merged.sources.allowDomains = both('allowDomains');
  // An image built from the repository keeps the source of its build.
  for (const f of SPEC_FIELDS) if (!hasValue(merged, f) && !(f === 'image' && merged.build)) merged.sources[f] = 'Berth default';
  return merged;
}

function describe(error: z.ZodError): string {
  const issue = error.issues[0]!;
  const path = issue.path.join('.');
  return `${path ? `${path}: ` : ''}${issue.message}`;
}
