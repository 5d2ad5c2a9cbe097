// The instance's GitHub App, GitLab and Slack app: set by an instance administrator, read by
// the webhook routes. Settings are stored in the clear; secrets (private key, webhook and
// signing secrets, bot tokens) are sealed with the instance's secret key and never leave:
// the API shows which are set, never their values. Each kind declares its own shapes.
import { z } from 'zod';
import { invalid } from '../../shared/errors.ts';
import type { Db } from '../db/index.ts';
import type { IntegrationKind } from '../db/schema.ts';
import type { SecretBox } from '../secrets/crypto.ts';

export type { IntegrationKind };
export const INTEGRATION_KINDS = ['github', 'gitlab', 'slack'] as const satisfies readonly IntegrationKind[];

/** One kind's shapes: what it needs to know and which secrets it keeps. */
export interface IntegrationSpec<S extends z.ZodType = z.ZodType, K extends z.ZodObject = z.ZodObject> {
  kind: IntegrationKind;
  /** For messages: "the GitHub App". */
  title: string;
  settings: S;
  /** Every secret a string; all required on first set, any may be left out later to keep it. */
  secrets: K;
  /** The request URLs the service is given, under /api/webhooks/KIND/ (default: that URL itself). */
  webhookPaths?: string[] | undefined;
}

export interface Integration<S = Record<string, unknown>, K = Record<string, string>> {
  settings: S;
  secrets: K;
}

/** What the API shows of an integration: never a secret's value. */
export interface IntegrationStatus {
  kind: IntegrationKind;
  configured: boolean;
  settings: Record<string, unknown> | null;
  secretsSet: string[];
  updatedBy: string | null;
  updatedAt: string | null;
}

const CACHE_MS = 2_000;
const boxScope = (kind: IntegrationKind) => ({ orgId: 'instance', projectId: null, name: `integration:${kind}` });

export class IntegrationStore {
  readonly #db: Db;
  readonly #box: SecretBox;
  readonly #specs = new Map<IntegrationKind, IntegrationSpec>();
  readonly #cache = new Map<IntegrationKind, { at: number; value: Integration | null }>();

  constructor(o: { db: Db; box: SecretBox }) {
    this.#db = o.db;
    this.#box = o.box;
  }

  define(spec: IntegrationSpec): void {
    this.#specs.set(spec.kind, spec);
  }

  spec(kind: string): IntegrationSpec {
    const spec = this.#specs.get(kind as IntegrationKind);
    if (!spec) throw invalid(`no integration '${kind}': there are ${[...this.#specs.keys()].join(', ')}`, 'kind');
    return spec;
  }

  /** The integration as the webhook routes use it (cached for two seconds), or null when not set up. */
  async get<S = Record<string, unknown>, K = Record<string, string>>(kind: IntegrationKind): Promise<Integration<S, K> | null> {
    const hit = this.#cache.get(kind);
    if (hit && Date.now() - hit.at < CACHE_MS) return hit.value as Integration<S, K> | null;
    const row = await this.#db.selectFrom('integrations').selectAll().where('kind', '=', kind).executeTakeFirst();
    const value = row ? { settings: row.settings, secrets: JSON.parse(this.#box.open(boxScope(kind), row.secrets)) as Record<string, string> } : null;
    this.#cache.set(kind, { at: Date.now(), value });
    return value as Integration<S, K> | null;
  }

  /**
   * Sets an integration: settings replace the old ones; secrets left out are kept. Checked
   * against the kind's shapes first: bad input changes nothing.
   */
  async set(kind: string, input: { settings: unknown; secrets: Record<string, string> }, actor: string): Promise<IntegrationStatus> {
    const spec = this.spec(kind);
    const settings = spec.settings.safeParse(input.settings ?? {});
    if (!settings.success) throw invalid(`${spec.title}: ${z.prettifyError(settings.error).replaceAll('\n', '; ')}`, 'settings');
    const old = await this.get(spec.kind);
    const merged = { ...old?.secrets, ...Object.fromEntries(Object.entries(input.secrets ?? {}).filter(([, v]) => v !== '')) };
    const secrets = spec.secrets.safeParse(merged);
    if (!secrets.success) {
      const missing = secrets.error.issues.map((i) => i.path.join('.')).filter(Boolean);
      throw invalid(`${spec.title} needs ${missing.length ? `the secret${missing.length > 1 ? 's' : ''} ${missing.join(', ')}` : 'its secrets'}: ${z.prettifyError(secrets.error).replaceAll('\n', '; ')}`, 'secrets');
    }
    const sealed = this.#box.seal(boxScope(spec.kind), JSON.stringify(secrets.data));
    const values = { kind: spec.kind, settings: JSON.stringify(settings.data), secrets: sealed, updated_by: actor, updated_at: new Date() };
    await this.#db
      .insertInto('integrations')
      .values(values)
      .onConflict((oc) => oc.column('kind').doUpdateSet({ settings: values.settings, secrets: values.secrets, updated_by: actor, updated_at: values.updated_at }))
      .execute();
    this.#cache.delete(spec.kind);
    return (await this.list()).find((s) => s.kind === spec.kind)!;
  }

  /** Removes an integration; its webhooks are refused from then on. True when there was one. */
  async remove(kind: string): Promise<boolean> {
    const spec = this.spec(kind);
    const gone = await this.#db.deleteFrom('integrations').where('kind', '=', spec.kind).executeTakeFirst();
    this.#cache.delete(spec.kind);
    return Number(gone.numDeletedRows) > 0;
  }

  async list(): Promise<IntegrationStatus[]> {
    const rows = await this.#db.selectFrom('integrations').selectAll().execute();
    const order = (k: IntegrationKind) => INTEGRATION_KINDS.indexOf(k);
    return [...this.#specs.values()].sort((a, b) => order(a.kind) - order(b.kind)).map((spec) => {
      const row = rows.find((r) => r.kind === spec.kind);
      if (!row) return { kind: spec.kind, configured: false, settings: null, secretsSet: [], updatedBy: null, updatedAt: null };
      const secrets = JSON.parse(this.#box.open(boxScope(spec.kind), row.secrets)) as Record<string, string>;
      return { kind: spec.kind, configured: true, settings: row.settings, secretsSet: Object.keys(secrets).sort(), updatedBy: row.updated_by, updatedAt: new Date(row.updated_at).toISOString() };
    });
  }
}
