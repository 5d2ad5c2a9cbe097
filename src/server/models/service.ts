// The model an org's or a project's tasks use, and the order a task's model is resolved in:
//   1. the task's own --model names the model (the provider, base URL and key still come from below);
//   2. its project's model settings;
//   3. its org's model settings;
//   4. the instance default: berth up's environment (OPENAI_* / ANTHROPIC_* / BERTH_MODEL).
// A project's legacy default model (`project create --model`, settings.agent.model) names the
// model as the project, like 1. The key is a secret NAME here: its value is read on the host
// when a task starts, handed to the built-in agent's client or to the LLM gateway, and never
// to an environment, the API, an event or a log.
import { instanceProvider, defaultModel, type ModelEndpoint } from '../../agent/index.ts';
import type { ModelProvider, ModelScope, ModelSettings, ModelSettingsBody, ModelSettingsView, ModelSource } from '../../shared/api-models.ts';
import { BerthError, invalid, notFound, unavailable } from '../../shared/errors.ts';
import { newId } from '../../shared/ids.ts';
import { privateAllowanceOf, resolveDestination, type DestinationResolver, type PrivateAllowance } from '../../runner/network/index.ts';
import type { Db, ModelRow, ProjectRow, TaskRow } from '../db/index.ts';
import { liveProject } from '../projects.ts';
import type { SecretService } from '../secrets/service.ts';

/** What a task runs with, resolved when it starts. */
export interface TaskModelPlan {
  /** null only for a built-in agent task with no model anywhere (it then fails, saying so). */
  model: string | null;
  /** null when the instance default is used and no model is known to pick it by. */
  provider: ModelProvider | null;
  source: ModelSource | null;
  settings: ModelScope;
  /** The chosen settings with their key; null for the instance default (berth up's environment). */
  endpoint: (ModelEndpoint & { keySecret: string; address: string | null }) | null;
}

const forbidden = (message: string, field?: string) => new BerthError('forbidden', message, field);

export class ModelSettingsService {
  readonly #db: Db;
  readonly #secrets: SecretService;
  readonly #instanceEnv: NodeJS.ProcessEnv;
  readonly #allow: PrivateAllowance;
  readonly #resolver: DestinationResolver | undefined;

  constructor(opts: {
    db: Db;
    secrets: SecretService;
    /** berth up's model variables: the instance default. */
    instanceEnv: NodeJS.ProcessEnv;
    /** Private hosts a chosen base URL may be on (BERTH_ALLOWED_MODEL_HOSTS): names, addresses or CIDRs. */
    allowedHosts: readonly string[];
    resolver?: DestinationResolver | undefined;
  }) {
    this.#db = opts.db;
    this.#secrets = opts.secrets;
    this.#instanceEnv = opts.instanceEnv;
    try {
      this.#allow = privateAllowanceOf(opts.allowedHosts);
    } catch (e) {
      throw invalid(`BERTH_ALLOWED_MODEL_HOSTS: ${(e as Error).message}`);
    }
    this.#resolver = opts.resolver;
  }

  /** The scope's own settings and what its tasks use. `project` by name or id; none: the org's. */
  async show(orgId: string, project?: string): Promise<ModelSettingsView> {
    const p = project ? await liveProject(this.#db, orgId, project) : undefined;
    const own = await this.#row(orgId, p?.id ?? null);
    const org = p ? await this.#row(orgId, null) : own;
    const used = own ?? org;
    const instanceModel = defaultModel(this.#instanceEnv) ?? null;
    return {
      own: own ? view(own, p?.name ?? null) : null,
      effective: used
        ? { scope: used.project_id ? 'project' : 'org', provider: used.provider, model: used.model }
        : { scope: 'instance', provider: instanceModel ? instanceProvider(instanceModel, this.#instanceEnv) : null, model: instanceModel },
    };
  }

  async set(orgId: string, body: ModelSettingsBody, actor: string, project?: string): Promise<ModelSettings> {
    const p = project ? await liveProject(this.#db, orgId, project) : undefined;
    const baseUrl = checkBaseUrl(body.baseUrl);
    await this.#checkHost(baseUrl, false);
    // The key must be there to be named: a project's settings may name the project's secret or the org's.
    if ((await this.#secrets.forgeSecret(orgId, p?.id ?? null, body.keySecret)) === null) {
      throw invalid(`no secret '${body.keySecret}'${p ? ` in project '${p.name}' or the org` : ' in the org'}: store the key first with \`berth secret set ${body.keySecret}${p ? ` [--project ${p.name}]` : ''}\` (it is read only by Berth, never given to environments)`, 'keySecret');
    }
    const values = { provider: body.provider, base_url: baseUrl, key_secret: body.keySecret, model: body.model, updated_at: new Date(), updated_by: actor };
    const existing = await this.#row(orgId, p?.id ?? null);
    if (existing) await this.#db.updateTable('models').set(values).where('id', '=', existing.id).execute();
    else await this.#db.insertInto('models').values({ id: newId('mdl'), org_id: orgId, project_id: p?.id ?? null, ...values }).execute();
    return view((await this.#row(orgId, p?.id ?? null))!, p?.name ?? null);
  }

  async remove(orgId: string, project?: string): Promise<void> {
    const p = project ? await liveProject(this.#db, orgId, project) : undefined;
    const existing = await this.#row(orgId, p?.id ?? null);
    if (!existing) throw notFound(`${p ? `project '${p.name}'` : 'the org'} has no model settings of its own: \`berth model show${p ? ` --project ${p.name}` : ''}\` says what its tasks use`);
    await this.#db.deleteFrom('models').where('id', '=', existing.id).execute();
  }

  /** Every project's settings and the org's, for the Settings page: one query. */
  async list(orgId: string): Promise<ModelSettings[]> {
    const rows = await this.#db
      .selectFrom('models')
      .leftJoin('projects', 'projects.id', 'models.project_id')
      .selectAll('models')
      .select('projects.name as project_name')
      .where('models.org_id', '=', orgId)
      .where((eb) => eb.or([eb('models.project_id', 'is', null), eb('projects.archived_at', 'is', null)]))
      .orderBy('projects.name', (o) => o.nullsFirst())
      .execute();
    return rows.map((r) => view(r, r.project_name));
  }

  /** Names of the secrets any of the org's model settings use as a key: the host's, never an environment's. */
  async keySecretNames(orgId: string): Promise<Set<string>> {
    const rows = await this.#db.selectFrom('models').select('key_secret').where('org_id', '=', orgId).execute();
    return new Set(rows.map((r) => r.key_secret));
  }

  /**
   * What a task runs with (see the order at the top). The chosen base URL is checked by the
   * host-side address rules again, and its key read: a failure is a clear error for the task.
   */
  async forTask(task: Pick<TaskRow, 'org_id' | 'agent' | 'model' | 'model_default' | 'model_source'>, project: ProjectRow | undefined): Promise<TaskModelPlan> {
    const row = (project ? await this.#row(task.org_id, project.id) : undefined) ?? (await this.#row(task.org_id, null));
    const named = task.model !== null && !task.model_default ? { model: task.model, source: task.model_source === 'project' ? ('project' as const) : ('task' as const) } : null;
    if (row) {
      const settings: ModelScope = row.project_id ? 'project' : 'org';
      const apiKey = await this.#secrets.forgeSecret(task.org_id, row.project_id, row.key_secret);
      const where = settings === 'project' ? `project '${project?.name}'` : 'the org';
      if (apiKey === null) throw unavailable(`the model settings of ${where} name the key secret '${row.key_secret}', which does not exist: set it with \`berth secret set ${row.key_secret}\`, or change them with \`berth model set\``);
      const address = await this.#checkHost(row.base_url, true);
      return {
        model: named?.model ?? row.model,
        provider: row.provider,
        source: named?.source ?? settings,
        settings,
        endpoint: { provider: row.provider, baseUrl: row.base_url, apiKey, model: named?.model ?? row.model, keySecret: row.key_secret, address },
      };
    }
    const fallback = defaultModel(this.#instanceEnv) ?? null;
    const model = named?.model ?? fallback;
    return {
      model,
      provider: model ? instanceProvider(model, this.#instanceEnv) : null,
      source: named?.source ?? (fallback ? 'instance' : null),
      settings: 'instance',
      endpoint: null,
    };
  }

  /** Whether a task created now has a model: the org's or project's settings, or the instance's. */
  async hasSettings(orgId: string, projectId: string | null): Promise<boolean> {
    return Boolean((projectId ? await this.#row(orgId, projectId) : undefined) ?? (await this.#row(orgId, null)));
  }

  async #row(orgId: string, projectId: string | null): Promise<ModelRow | undefined> {
    return this.#db
      .selectFrom('models')
      .selectAll()
      .where('org_id', '=', orgId)
      .where((eb) => (projectId ? eb('project_id', '=', projectId) : eb('project_id', 'is', null)))
      .executeTakeFirst();
  }

  /**
   * The #11 rule for host-side destinations: a base URL a person chose must not be on a
   * private, loopback, link-local or this host's address unless the instance allows it
   * (BERTH_ALLOWED_MODEL_HOSTS). Setting: a name that does not resolve now is let through.
   * Reaching: refused; the address that passed is returned for the gateway to pin.
   */
  async #checkHost(baseUrl: string, reaching: boolean): Promise<string | null> {
    const host = new URL(baseUrl).hostname.replace(/^\[|\]$/g, '');
    const d = await resolveDestination(host, { resolver: this.#resolver, allow: this.#allow });
    if (d.ok) return d.address;
    if (d.why === 'unresolved') {
      if (!reaching) return null;
      throw unavailable(`the model API at ${host} cannot be reached: ${d.reason}; check the base URL (\`berth model show\`) and the server's DNS`);
    }
    throw forbidden(`${d.reason}: give the model API's public address, or ask an instance administrator to allow the host with BERTH_ALLOWED_MODEL_HOSTS`, 'baseUrl');
  }
}

/** An http(s) URL without credentials, a query or a fragment: viewers see it, and a key belongs in a secret. */
function checkBaseUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw.trim());
  } catch {
    throw invalid(`'${raw}' is not a URL: give the model API's base URL, e.g. https://api.openai.com/v1`, 'baseUrl');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw invalid('the base URL must be http(s)', 'baseUrl');
  if (url.username || url.password || url.search || url.hash) {
    throw invalid('the base URL must not carry credentials, a query or a fragment (everyone in the org can read it): put the key in a secret and name it with --key-secret', 'baseUrl');
  }
  return url.toString().replace(/\/+$/, '');
}

function view(r: ModelRow, project: string | null): ModelSettings {
  return {
    scope: r.project_id ? 'project' : 'org',
    project: r.project_id ? project : null,
    provider: r.provider,
    baseUrl: r.base_url,
    keySecret: r.key_secret,
    model: r.model,
    updatedAt: new Date(r.updated_at).toISOString(),
    updatedBy: r.updated_by,
  };
}
