import { sql } from 'kysely';
import { Transform } from 'node:stream';
import { finished } from 'node:stream/promises';
import { invalid, notFound } from '../../shared/errors.ts';
import { newId } from '../../shared/ids.ts';
import { Redactor } from '../../shared/redact.ts';
import type { RunningCommand } from '../../runner/index.ts';
import { projectIdOf } from '../projects.ts';
import type { Db, ProjectSettings } from '../db/index.ts';
import type { SecretBox } from './crypto.ts';
import { checkEgressMarking, type EgressMarking } from '../policy/credentials.ts';

/** Secret names double as environment variable names inside environments. */
export const SECRET_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;

export interface SecretMeta {
  name: string;
  project: string | null;
  updatedAt: string;
  updatedBy: string;
  /** Only for an egress-only secret: where the egress proxy adds it. */
  egress?: { host: string; pathPrefix: string; header: string };
}

/** An egress-only secret with its value, for the policy the egress proxy reads. */
export interface EgressSecret extends EgressMarking {
  orgId: string;
  projectId: string | null;
  name: string;
  value: string;
}

/**
 * Secrets of an org and its projects: written through the API, stored encrypted, read
 * only by the runner when it starts a command. No API response ever carries a value.
 */
export class SecretService {
  readonly #db: Db;
  readonly #box: SecretBox;

  constructor(opts: { db: Db; box: SecretBox }) {
    this.#db = opts.db;
    this.#box = opts.box;
  }

  /**
   * With `egress` the secret becomes egress-only. Setting it again without `egress`
   * keeps its marking: a secret never turns into an environment variable by omission.
   */
  async set(orgId: string, input: { name: string; value: string; project?: string | undefined; actor: string; egress?: Parameters<typeof checkEgressMarking>[0] | undefined }): Promise<SecretMeta> {
    if (!SECRET_NAME.test(input.name)) throw invalid('secret names are letters, digits and _ (they become environment variables)', 'name');
    if (input.value.length === 0) throw invalid('the secret value is empty', 'value');
    const egress = input.egress ? checkEgressMarking(input.egress) : undefined;
    const marking = egress ? { egress_host: egress.host, egress_path_prefix: egress.pathPrefix, egress_header: egress.header, egress_format: egress.format } : {};
    const projectId = input.project ? await projectIdOf(this.#db, orgId, input.project) : null;
    const ciphertext = this.#box.seal({ orgId, projectId, name: input.name }, input.value);
    const now = new Date();
    const existing = await this.#find(orgId, input.name, projectId);
    if (existing) {
      await this.#db.updateTable('secrets').set({ ciphertext, updated_at: now, updated_by: input.actor, ...marking }).where('id', '=', existing.id).execute();
    } else {
      await this.#db
        .insertInto('secrets')
        .values({ id: newId('sec'), org_id: orgId, project_id: projectId, name: input.name, ciphertext, updated_by: input.actor, ...marking })
        .execute();
    }
    const row = await this.#db.selectFrom('secrets').select(['egress_host', 'egress_path_prefix', 'egress_header']).where('org_id', '=', orgId).where('name', '=', input.name)
      .where((eb) => (projectId ? eb('project_id', '=', projectId) : eb('project_id', 'is', null))).executeTakeFirst();
    return { name: input.name, project: input.project ?? null, updatedAt: now.toISOString(), updatedBy: input.actor, ...egressOf(row) };
  }

  async list(orgId: string): Promise<SecretMeta[]> {
    const rows = await this.#db
      .selectFrom('secrets')
      .leftJoin('projects', 'projects.id', 'secrets.project_id')
      .select(['secrets.name', 'projects.name as project', 'secrets.updated_at', 'secrets.updated_by', 'secrets.egress_host', 'secrets.egress_path_prefix', 'secrets.egress_header'])
      .where('secrets.org_id', '=', orgId)
      .orderBy('secrets.name')
      .execute();
    return rows.map((r) => ({ name: r.name, project: r.project, updatedAt: new Date(r.updated_at).toISOString(), updatedBy: r.updated_by, ...egressOf(r) }));
  }

  async remove(orgId: string, name: string, project?: string): Promise<void> {
    const projectId = project ? await projectIdOf(this.#db, orgId, project) : null;
    const row = await this.#find(orgId, name, projectId);
    if (!row) throw notFound(`no secret '${name}'${project ? ` in project '${project}'` : ''}`);
    await this.#db.deleteFrom('secrets').where('id', '=', row.id).execute();
  }

  /**
   * What an environment of the project receives, as variables: exactly the secrets the
   * project names (receivesSecret), the project's value over the org's of the same name.
   * Secrets any project names as forge credentials, and any model settings' key secret, are
   * never among them: those are used by the runner on the host and must not enter a sandbox,
   * even when a project names them. Nor are egress-only ones (the egress
   * proxy adds those to requests): a project's egress-only secret also hides the org's
   * secret of the same name.
   */
  async forProject(orgId: string, projectId: string): Promise<{ name: string; value: string }[]> {
    const rows = await this.#received(orgId, projectId);
    const hostOnly = await this.#forgeSecretNames(orgId);
    return rows.filter((r) => r.egress_host === null && !hostOnly.has(r.name)).map((r) => ({
      name: r.name,
      value: this.#box.open({ orgId, projectId: r.project_id, name: r.name }, r.ciphertext),
    }));
  }

  /** The names an environment of the project receives (as variables, and through the egress proxy): what `berth project show` prints. */
  async namesFor(orgId: string, projectId: string): Promise<{ variables: string[]; egress: string[] }> {
    const rows = await this.#received(orgId, projectId);
    const hostOnly = await this.#forgeSecretNames(orgId);
    const names = (egress: boolean) => rows.filter((r) => (r.egress_host !== null) === egress && (egress || !hostOnly.has(r.name))).map((r) => r.name).sort();
    return { variables: names(false), egress: names(true) };
  }

  /** The rows the project's environments receive, one per name: the project's over the org's. */
  async #received(orgId: string, projectId: string) {
    const project = await this.#db.selectFrom('projects').select('settings').where('org_id', '=', orgId).where('id', '=', projectId).executeTakeFirst();
    const named = namedSecrets(project?.settings);
    const rows = await this.#db
      .selectFrom('secrets')
      .select(['name', 'project_id', 'ciphertext', 'egress_host'])
      .where('org_id', '=', orgId)
      .where((eb) => eb.or([eb('project_id', '=', projectId), eb('project_id', 'is', null)]))
      .execute();
    const byName = new Map<string, (typeof rows)[number]>();
    for (const r of rows) {
      if (!receivesSecret(projectId, named, { projectId: r.project_id, name: r.name })) continue;
      if (!byName.has(r.name) || r.project_id) byName.set(r.name, r);
    }
    return [...byName.values()];
  }

  /** A secret the runner uses on the host (forge token, App key): the project's over the org's. */
  async forgeSecret(orgId: string, projectId: string | null, name: string): Promise<string | null> {
    const rows = await this.#db
      .selectFrom('secrets')
      .select(['project_id', 'ciphertext'])
      .where('org_id', '=', orgId)
      .where('name', '=', name)
      .where((eb) => (projectId ? eb.or([eb('project_id', '=', projectId), eb('project_id', 'is', null)]) : eb('project_id', 'is', null)))
      .execute();
    const row = rows.find((r) => r.project_id) ?? rows[0];
    return row ? this.#box.open({ orgId, projectId: row.project_id, name }, row.ciphertext) : null;
  }

  /** Egress-only secrets (of one org, or of all), decrypted: what the policy cache hands the egress proxy. */
  async egressSecrets(orgId?: string): Promise<EgressSecret[]> {
    const rows = await this.#db
      .selectFrom('secrets')
      .select(['org_id', 'project_id', 'name', 'ciphertext', 'egress_host', 'egress_path_prefix', 'egress_header', 'egress_format'])
      .where('egress_host', 'is not', null)
      .$if(orgId !== undefined, (q) => q.where('org_id', '=', orgId!))
      .execute();
    return rows.map((r) => ({
      orgId: r.org_id,
      projectId: r.project_id,
      name: r.name,
      value: this.#box.open({ orgId: r.org_id, projectId: r.project_id, name: r.name }, r.ciphertext),
      host: r.egress_host!,
      pathPrefix: r.egress_path_prefix ?? '/',
      header: r.egress_header ?? 'Authorization',
      format: r.egress_format ?? 'Bearer {value}',
    }));
  }

  async #forgeSecretNames(orgId: string): Promise<Set<string>> {
    const projects = await this.#db.selectFrom('projects').select('settings').where('org_id', '=', orgId).execute();
    const names = new Set<string>();
    for (const { settings } of projects) {
      if (settings.forge?.tokenSecret) names.add(settings.forge.tokenSecret);
      if (settings.forge?.app?.privateKeySecret) names.add(settings.forge.app.privateKeySecret);
      if (settings.forge?.deployKeySecret) names.add(settings.forge.deployKeySecret);
      for (const name of Object.values(settings.registryLogins ?? {})) names.add(name);
    }
    // A model key (`berth model set --key-secret`) is Berth's to use on the host, like forge
    // credentials: in an environment it would bypass the gateway's per-task token and budget.
    for (const { key_secret } of await this.#db.selectFrom('models').select('key_secret').where('org_id', '=', orgId).execute()) names.add(key_secret);
    // A one-off task's forge token (its transient project's, a campaign's for repositories without a project).
    const oneOff = await this.#db
      .selectFrom('tasks')
      .select(sql<string>`one_off->'forge'->>'tokenSecret'`.as('name'))
      .distinct()
      .where('org_id', '=', orgId)
      .where(sql<boolean>`one_off->'forge' ? 'tokenSecret'`)
      .execute();
    for (const { name } of oneOff) names.add(name);
    for (const { settings } of await this.#db.selectFrom('campaigns').select('settings').where('org_id', '=', orgId).execute()) if (settings.forge?.tokenSecret) names.add(settings.forge.tokenSecret);
    return names;
  }

  async #find(orgId: string, name: string, projectId: string | null) {
    let q = this.#db.selectFrom('secrets').select('id').where('org_id', '=', orgId).where('name', '=', name);
    q = projectId ? q.where('project_id', '=', projectId) : q.where('project_id', 'is', null);
    return q.executeTakeFirst();
  }

}

/** The org secrets a project names (`berth project create --secret NAME`). */
export function namedSecrets(settings: ProjectSettings | undefined): ReadonlySet<string> {
  return new Set((settings?.secrets ?? []).map((s) => s.name));
}

/**
 * Whether an environment of project `projectId` receives `secret`, as a variable or through
 * the egress proxy: a secret set for the project itself, or an org secret the project names.
 * Any other org secret is not the project's, whatever its name. The one rule for both.
 */
export function receivesSecret(projectId: string, named: ReadonlySet<string>, secret: { projectId: string | null; name: string }): boolean {
  return secret.projectId === projectId || (secret.projectId === null && named.has(secret.name));
}

/** `{ egress }` for an egress-only secret, nothing for the others (their listing stays as it was). */
function egressOf(r: { egress_host: string | null; egress_path_prefix: string | null; egress_header: string | null } | undefined): Pick<SecretMeta, 'egress'> {
  return r?.egress_host ? { egress: { host: r.egress_host, pathPrefix: r.egress_path_prefix ?? '/', header: r.egress_header ?? 'Authorization' } } : {};
}

/** The command with its output passed through the redactor: what Berth records and returns. */
export function redactCommand(command: RunningCommand, redactor: Redactor): RunningCommand {
  const through = (source: RunningCommand['stdout']) => {
    const r = redactor.stream();
    const out = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        const text = r.push(chunk);
        cb(null, text.length ? Buffer.from(text) : undefined);
      },
      flush(cb) {
        const text = r.flush();
        cb(null, text.length ? Buffer.from(text) : undefined);
      },
    });
    return source.pipe(out);
  };
  const stdout = through(command.stdout);
  const stderr = through(command.stderr);
  // Done when the redacted output, not just the raw one, has been read to the end.
  const exited = command.exited.then(async (status) => {
    await Promise.all([finished(stdout), finished(stderr)]).catch(() => {});
    return status;
  });
  return { ...command, stdout, stderr, exited };
}

