// A devcontainer.json that names docker-compose files: Berth runs the primary service only
// (its image, environment, user and working directory) and says which services it does not
// start. The compose files are the repository's, read from the host-side checkout: a path
// that leaves the checkout (.., an absolute path, a symbolic link) is refused.
import { open, realpath } from 'node:fs/promises';
import { constants } from 'node:fs';
import { posix, relative, resolve, sep } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { invalid } from '../../shared/errors.ts';

const MAX_COMPOSE_BYTES = 1024 * 1024;

export interface ComposeService {
  /** The compose file(s) as the repository names them, relative to its root. */
  files: string[];
  service: string;
  image: string | null;
  /**
   * The service's build, when it has one, as runner/images/build.ts takes it: paths relative to
   * `configDir` (the compose file's folder), the Dockerfile's already joined to the context.
   */
  build: { configDir: string; context: string; dockerfile: string; args: Record<string, string> | undefined; target: string | undefined } | null;
  env: Record<string, string>;
  user: string | null;
  workingDir: string | null;
  /** The other services, none of them started. */
  notStarted: string[];
  notes: string[];
}

/**
 * The primary `service` of the compose files that `devcontainerFile` (relative to `repoDir`)
 * names; later files override earlier ones per service, as `docker compose -f a -f b` does.
 */
export async function readComposeService(repoDir: string, devcontainerFile: string, composeFiles: unknown, service: unknown): Promise<ComposeService> {
  const where = `${devcontainerFile}: dockerComposeFile`;
  const list = typeof composeFiles === 'string' ? [composeFiles] : composeFiles;
  if (!Array.isArray(list) || list.length === 0 || list.length > 10 || !list.every((f) => typeof f === 'string' && f.length > 0 && f.length < 1024)) {
    throw invalid(`${where} must be a file name or a list of up to 10`, where);
  }
  if (typeof service !== 'string' || !service) throw invalid(`${devcontainerFile}: "service" must name the compose service to work in (dockerComposeFile needs it)`, `${devcontainerFile}: service`);

  const base = posix.dirname(devcontainerFile);
  const files = (list as string[]).map((f) => posix.normalize(posix.join(base, f)));
  const services = new Map<string, Record<string, unknown>>();
  for (const file of files) {
    const doc = parseCompose(await readInside(repoDir, file, where), file);
    for (const [name, def] of Object.entries(doc)) services.set(name, { ...services.get(name), ...def });
  }
  const shown = files.join(' + ');
  const def = services.get(service);
  if (!def) throw invalid(`${devcontainerFile}: service '${service}' is not in ${shown} (it has ${[...services.keys()].join(', ') || 'no services'})`, `${devcontainerFile}: service`);

  const notes: string[] = [];
  const image = typeof def.image === 'string' && def.image ? def.image : null;
  // Relative paths in every compose file are the first one's folder's, as in docker compose.
  const build = composeBuild(def.build, posix.dirname(files[0]!), `${shown} service '${service}'`);
  const others = [...services.keys()].filter((s) => s !== service).sort();
  if (others.length) {
    notes.push(`${shown}: only service '${service}' runs; ${others.map((s) => `'${s}'`).join(', ')} ${others.length === 1 ? 'is' : 'are'} not started (Berth runs one environment per task, without sidecars: start what the work needs inside it, in postCreateCommand)`);
  }
  const unhonoured = ['ports', 'volumes', 'depends_on', 'networks', 'privileged', 'cap_add', 'devices', 'network_mode', 'command', 'entrypoint'].filter((k) => def[k] !== undefined);
  if (unhonoured.length) notes.push(`${shown} service '${service}': ${unhonoured.join(', ')} ${unhonoured.length === 1 ? 'is' : 'are'} not honoured (the sandbox decides its mounts, network and process)`);

  return {
    files,
    service,
    image,
    build,
    env: composeEnv(def.environment, `${shown} service '${service}'`),
    user: typeof def.user === 'string' ? def.user : typeof def.user === 'number' ? String(def.user) : null,
    workingDir: typeof def.working_dir === 'string' ? def.working_dir : null,
    notStarted: others,
    notes,
  };
}

/**
 * A service's `build` (a context path, or { context, dockerfile, args, target }). In compose the
 * Dockerfile is relative to the context; the builder takes both relative to one folder.
 */
function composeBuild(raw: unknown, configDir: string, where: string): ComposeService['build'] {
  if (raw === undefined || raw === null) return null;
  if (typeof raw === 'string') return { configDir, context: raw, dockerfile: posix.join(raw, 'Dockerfile'), args: undefined, target: undefined };
  if (typeof raw !== 'object' || Array.isArray(raw)) throw invalid(`${where}: build is a folder or { context, dockerfile, args, target }`, where);
  const b = raw as Record<string, unknown>;
  const str = (k: string) => {
    if (b[k] !== undefined && (typeof b[k] !== 'string' || !b[k])) throw invalid(`${where}: build.${k} must be text`, where);
    return b[k] as string | undefined;
  };
  const context = str('context') ?? '.';
  const dockerfile = str('dockerfile') ?? 'Dockerfile';
  if (b.dockerfile_inline !== undefined) throw invalid(`${where}: build.dockerfile_inline is not supported: put the Dockerfile in the repository and name it in build.dockerfile`, where);
  const args = composeEnv(b.args, `${where}: build.args`);
  return { configDir, context, dockerfile: posix.isAbsolute(dockerfile) ? dockerfile : posix.join(context, dockerfile), args: Object.keys(args).length ? args : undefined, target: str('target') };
}

/** Reads `file` (relative to `root`) only if it, after following links, is a regular file inside `root`. */
async function readInside(root: string, file: string, where: string): Promise<string> {
  const refuse = (why: string) => invalid(`${where}: ${file} ${why}`, where);
  if (posix.isAbsolute(file) || file.split('/').includes('..')) throw refuse('is outside the repository: name a file in it');
  const realRoot = await realpath(root);
  let real: string;
  try {
    real = await realpath(resolve(root, file));
  } catch {
    throw refuse('is not in the repository');
  }
  const rel = relative(realRoot, real);
  if (rel === '' || rel.startsWith(`..${sep}`) || rel === '..' || resolve(realRoot, rel) !== real) throw refuse('leads outside the repository (a symbolic link): name a file in it');
  // O_NOFOLLOW on the checked path: a link swapped in meanwhile is not followed.
  const fh = await open(real, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(() => {
    throw refuse('cannot be read');
  });
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw refuse('is not a file');
    if (st.size > MAX_COMPOSE_BYTES) throw refuse(`is larger than ${MAX_COMPOSE_BYTES / 1024} KiB`);
    return await fh.readFile('utf8');
  } finally {
    await fh.close();
  }
}

function parseCompose(text: string, file: string): Record<string, Record<string, unknown>> {
  let doc: unknown;
  try {
    doc = parseYaml(text, { maxAliasCount: 100 });
  } catch (err) {
    throw invalid(`${file}: ${(err as Error).message.split('\n')[0]}`, file);
  }
  const services = (doc as { services?: unknown } | null)?.services;
  if (!services || typeof services !== 'object' || Array.isArray(services)) throw invalid(`${file}: no "services" map: is this a compose file?`, file);
  for (const [name, def] of Object.entries(services)) {
    if (!def || typeof def !== 'object' || Array.isArray(def)) throw invalid(`${file}: service '${name}' is not a map`, file);
  }
  return services as Record<string, Record<string, unknown>>;
}

/** A service's `environment`: a map, or a list of "K=V" (a bare "K" takes the host's value in compose: skipped here). */
function composeEnv(raw: unknown, where: string): Record<string, string> {
  const env: Record<string, string> = {};
  const put = (k: string, v: unknown) => {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw invalid(`${where}: environment variable name '${k.slice(0, 64)}' is not valid`, where);
    if (v === null || v === undefined) return;
    env[k] = String(v);
  };
  if (Array.isArray(raw)) {
    for (const item of raw) {
      if (typeof item !== 'string') throw invalid(`${where}: environment entries are "NAME=value"`, where);
      const eq = item.indexOf('=');
      if (eq > 0) put(item.slice(0, eq), item.slice(eq + 1));
    }
  } else if (raw && typeof raw === 'object') {
    for (const [k, v] of Object.entries(raw)) put(k, v);
  }
  return env;
}
