// The org's generic webhook triggers: made, listed, removed and given new secrets. A secret is
// shown once, when it is made; the table keeps it sealed with the instance's key, bound to the
// trigger's id (a sealed secret copied to another row does not open).
import { randomBytes } from 'node:crypto';
import type { z } from 'zod';
import {
  WEBHOOK_TRIGGER_PATH,
  type CreateWebhookTriggerBody,
  type WebhookTrigger,
  type WebhookTriggerDelivery,
  type WebhookTriggerDetail,
  type WebhookTriggerWithSecret,
} from '../../../shared/api-webhook-triggers.ts';
import { conflict, notFound } from '../../../shared/errors.ts';
import { newId } from '../../../shared/ids.ts';
import type { Scope } from '../../authz.ts';
import { isUniqueViolation, type Db, type Role } from '../../db/index.ts';
import type { WebhookTriggerTable } from '../../db/schema.ts';
import type { Selectable } from 'kysely';
import { liveProject } from '../../projects.ts';
import type { SecretBox } from '../../secrets/crypto.ts';

export type WebhookTriggerRow = Selectable<WebhookTriggerTable>;

/** A trigger's deliveries are recorded under this source (webhook_deliveries.source). */
export const sourceOf = (triggerId: string) => `webhook:${triggerId}`;

const RECENT_DELIVERIES = 20;

export class WebhookTriggerStore {
  readonly #db: Db;
  readonly #box: SecretBox;
  readonly #publicUrl: () => string;

  constructor(o: { db: Db; box: SecretBox; publicUrl: () => string }) {
    this.#db = o.db;
    this.#box = o.box;
    this.#publicUrl = o.publicUrl;
  }

  async create(scope: Scope, body: z.output<typeof CreateWebhookTriggerBody>): Promise<WebhookTriggerWithSecret> {
    const project = await liveProject(this.#db, scope.orgId, body.project);
    const id = newId('whk');
    const secret = newSecret();
    try {
      const row = await this.#db
        .insertInto('webhook_triggers')
        .values({
          id,
          org_id: scope.orgId,
          name: body.name,
          project_id: project.id,
          goal_template: body.goalTemplate,
          auth: body.auth,
          secret: this.#seal(scope.orgId, id, secret),
          rate_per_minute: body.ratePerMinute,
          created_by: scope.actor,
          owner_id: scope.caller.userId,
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      return { ...this.#view(row, project.name), secret };
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`a trigger named '${body.name}' exists: choose another --name, or \`berth trigger rm ${body.name}\` first`);
      throw err;
    }
  }

  async list(orgId: string): Promise<WebhookTrigger[]> {
    const rows = await this.#live().where('webhook_triggers.org_id', '=', orgId).orderBy('webhook_triggers.name').execute();
    return rows.map((r) => this.#view(r, r.project_name));
  }

  /** One trigger, by id or name, with its latest deliveries and what came of them. */
  async show(orgId: string, ref: string): Promise<WebhookTriggerDetail> {
    const row = await this.#find(orgId, ref);
    const deliveries = await this.#db
      .selectFrom('webhook_deliveries')
      .select(['delivery_id', 'received_at', 'outcome', 'task_id'])
      .where('source', '=', sourceOf(row.id))
      .orderBy('received_at', 'desc')
      .limit(RECENT_DELIVERIES)
      .execute();
    const recent: WebhookTriggerDelivery[] = deliveries.map((d) => ({ delivery: d.delivery_id, receivedAt: new Date(d.received_at).toISOString(), outcome: d.outcome, taskId: d.task_id }));
    return { ...this.#view(row, row.project_name), deliveries: recent };
  }

  /** Removed at once: its URL answers 404 from now on, and deliveries taken but not yet handled start nothing. */
  async remove(orgId: string, ref: string): Promise<WebhookTrigger> {
    const row = await this.#find(orgId, ref);
    await this.#db.updateTable('webhook_triggers').set({ deleted_at: new Date() }).where('id', '=', row.id).where('deleted_at', 'is', null).execute();
    return this.#view(row, row.project_name);
  }

  /** A new secret, shown once; the old one stops working at once. */
  async rotate(orgId: string, ref: string): Promise<WebhookTriggerWithSecret> {
    const row = await this.#find(orgId, ref);
    const secret = newSecret();
    await this.#db.updateTable('webhook_triggers').set({ secret: this.#seal(orgId, row.id, secret) }).where('id', '=', row.id).execute();
    return { ...this.#view(row, row.project_name), secret };
  }

  /** A live trigger by id and its secret, for a delivery; null when there is none (never was, or removed). */
  async forDelivery(id: string): Promise<{ row: WebhookTriggerRow; secret: string } | null> {
    const row = await this.#db.selectFrom('webhook_triggers').selectAll().where('id', '=', id).where('deleted_at', 'is', null).executeTakeFirst();
    return row ? { row, secret: this.#box.open(boxScope(row.org_id, row.id), row.secret) } : null;
  }

  /**
   * A live trigger by id, without its secret (handling a delivery already verified), and the
   * role its creator holds in its org now (null: none).
   */
  async live(id: string): Promise<(WebhookTriggerRow & { owner_role: Role | null }) | null> {
    const row = await this.#db
      .selectFrom('webhook_triggers')
      .leftJoin('memberships', (j) => j.onRef('memberships.org_id', '=', 'webhook_triggers.org_id').onRef('memberships.user_id', '=', 'webhook_triggers.owner_id'))
      .selectAll('webhook_triggers')
      .select('memberships.role as owner_role')
      .where('webhook_triggers.id', '=', id)
      .where('webhook_triggers.deleted_at', 'is', null)
      .executeTakeFirst();
    return row ?? null;
  }

  urlOf(id: string): string {
    return `${this.#publicUrl().replace(/\/+$/, '')}${WEBHOOK_TRIGGER_PATH}${id}`;
  }

  #live() {
    return this.#db
      .selectFrom('webhook_triggers')
      .innerJoin('projects', 'projects.id', 'webhook_triggers.project_id')
      .selectAll('webhook_triggers')
      .select('projects.name as project_name')
      .where('webhook_triggers.deleted_at', 'is', null);
  }

  async #find(orgId: string, ref: string) {
    const row = await this.#live()
      .where('webhook_triggers.org_id', '=', orgId)
      .where((eb) => eb.or([eb('webhook_triggers.id', '=', ref), eb('webhook_triggers.name', '=', ref)]))
      .executeTakeFirst();
    if (!row) throw notFound(`no trigger '${ref}': \`berth trigger list\` shows them`);
    return row;
  }

  #seal(orgId: string, id: string, secret: string): string {
    return this.#box.seal(boxScope(orgId, id), secret);
  }

  #view(row: WebhookTriggerRow, project: string): WebhookTrigger {
    return {
      id: row.id,
      name: row.name,
      project,
      goalTemplate: row.goal_template,
      auth: row.auth,
      ratePerMinute: row.rate_per_minute,
      url: this.urlOf(row.id),
      createdBy: row.created_by,
      createdAt: new Date(row.created_at).toISOString(),
    };
  }
}

const boxScope = (orgId: string, id: string) => ({ orgId, projectId: null, name: `webhook-trigger:${id}` });

/** 256 random bits, URL- and header-safe. */
const newSecret = () => `whs_${randomBytes(32).toString('base64url')}`;
