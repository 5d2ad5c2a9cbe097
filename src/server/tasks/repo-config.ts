// How to work on a repository: read from its berth.yaml or .devcontainer/devcontainer.json
// and overridden by the project's settings. Repository files are input from outside:
// anything malformed is a clear error that names the file, and anything Berth cannot
// honour is reported as a note instead of being silently dropped.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse as parseJsonc, printParseErrorCode, type ParseError } from 'jsonc-parser';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { invalid } from '../../shared/errors.ts';

export interface WorkSpec {
  /** Image to run; the runner's default image when null. */
  image: string | null;
  env: Record<string, string>;
  /** Shell commands run once after the clone, in order. */
  setup: string[];
  /** The command that says whether the work is done (for example `npm test`). */
  check: string | null;
  limits: { cpus?: number | undefined; memory?: string | undefined };
  /** Where the environment may connect (enforced by the network policy). */
  allowDomains: string[];
  /** Which file the spec came from. */
  source: 'berth.yaml' | 'devcontainer.json' | 'project';
  /** What was in the file that Berth does not honour, so the user can see it was skipped. */
  notes: string[];
}

const Commands = z.union([z.string().max(10_000), z.array(z.string().max(10_000)).max(100)]);
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
const QUIETLY_IGNORED = new Set(['name', 'customizations', 'forwardPorts', 'portsAttributes', 'workspaceFolder', 'workspaceMount', 'remoteUser', 'containerUser', 'shutdownAction', 'overrideCommand', '$schema', 'waitFor', 'otherPortsAttributes']);

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
  if (dc.build || dc.dockerFile || dc.dockerComposeFile) {
    notes.push('build/dockerFile/dockerComposeFile are not built by Berth: build the image elsewhere and `berth image import` it, then name it in "image"');
  }
  if (dc.features && typeof dc.features === 'object' && Object.keys(dc.features).length) {
    notes.push(`features are not installed (${Object.keys(dc.features).join(', ')}): bake them into the image or install them in postCreateCommand`);
  }
  if (dc.initializeCommand) notes.push('initializeCommand runs on the developer\'s machine and is skipped');
  if (dc.mounts || dc.runArgs || dc.privileged || dc.capAdd || dc.securityOpt) notes.push('mounts, runArgs, privileged, capAdd and securityOpt are not honoured: the sandbox decides those');
  const known = new Set([...Object.keys(DevContainer.shape), 'build', 'dockerFile', 'dockerComposeFile', 'features', 'initializeCommand', 'mounts', 'runArgs', 'privileged', 'capAdd', 'securityOpt']);
  const unknown = Object.keys(dc).filter((k) => !known.has(k) && !QUIETLY_IGNORED.has(k));
  if (unknown.length) notes.push(`not used by Berth: ${unknown.join(', ')}`);

  const env: Record<string, string> = { ...dc.containerEnv };
  for (const [k, v] of Object.entries(dc.remoteEnv ?? {})) if (v !== null) env[k] = v;
  for (const k of Object.keys(env)) if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw invalid(`${file}: environment variable name '${k}' is not valid`, file);
  const hr = dc.hostRequirements;
  return {
    image: dc.image ?? null,
    env,
    setup: [...shellLines(dc.onCreateCommand), ...shellLines(dc.updateContentCommand), ...shellLines(dc.postCreateCommand), ...shellLines(dc.postStartCommand)],
    check: null,
    limits: { cpus: hr?.cpus, memory: hr?.memory },
    allowDomains: [],
    source: 'devcontainer.json',
    notes,
  };
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
  return {
    image: y.image ?? null,
    env: y.env ?? {},
    setup: typeof y.setup === 'string' ? [y.setup] : (y.setup ?? []),
    check: y.check ?? null,
    limits: { cpus: y.limits?.cpus, memory: y.limits?.memory === undefined ? undefined : String(y.limits.memory) },
    allowDomains: y.allowDomains ?? [],
    source: 'berth.yaml',
    notes: [],
  };
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
    if (text !== null) return fromDevContainer(text, name);
  }
  return null;
}

/** Project settings that say how to work on its repository; they override the repository's files. */
export const ProjectWorkSettings = BerthYaml.partial();
export type ProjectWorkSettings = z.infer<typeof ProjectWorkSettings>;

/** The spec a task runs with: the repository's file, then the project's settings on top. */
export function mergeSpec(repo: WorkSpec | null, project: ProjectWorkSettings): WorkSpec {
  const base: WorkSpec = repo ?? { image: null, env: {}, setup: [], check: null, limits: {}, allowDomains: [], source: 'project', notes: [] };
  const setup = project.setup === undefined ? base.setup : typeof project.setup === 'string' ? [project.setup] : project.setup;
  return {
    image: project.image ?? base.image,
    env: { ...base.env, ...project.env },
    setup,
    check: project.check ?? base.check,
    limits: {
      cpus: project.limits?.cpus ?? base.limits.cpus,
      memory: project.limits?.memory === undefined ? base.limits.memory : String(project.limits.memory),
    },
    allowDomains: [...new Set([...base.allowDomains, ...(project.allowDomains ?? [])])],
    source: base.source,
    notes: base.notes,
  };
}

function describe(error: z.ZodError): string {
  const issue = error.issues[0]!;
  const path = issue.path.join('.');
  return `${path ? `${path}: ` : ''}${issue.message}`;
}
