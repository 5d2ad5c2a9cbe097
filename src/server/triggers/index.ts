// Triggers: what starts tasks where the work is. Webhooks from GitHub, GitLab and Slack and
// generic ones (each a source in its own file), schedules, and the replies that tell the
// issue or thread how the task is doing. Every delivery is on record before it is acted on
// (deliveries.ts), every task starts through TriggeredTasks (tasks.ts), and every reply goes
// through one outbox (replies.ts).
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { App } from '../app.ts';
import type { AuditLog } from '../audit/index.ts';
import type { Db, ProjectRow } from '../db/index.ts';
import type { ChangeFeed } from '../db/notify.ts';
import type { Singletons } from '../db/singleton.ts';
import type { EnvironmentService } from '../environments/service.ts';
import type { SecretBox } from '../secrets/crypto.ts';
import type { SecretService } from '../secrets/service.ts';
import type { TaskService } from '../tasks/index.ts';
import { Deliveries } from './deliveries.ts';
import { IntegrationStore } from './integrations.ts';
import { DeliveryQueue } from './queue.ts';
import { TriggerReplies } from './replies.ts';
import { TriggeredTasks } from './tasks.ts';

export { Deliveries, type DeliveryOutcome, type PendingDelivery } from './deliveries.ts';
export { IntegrationStore, INTEGRATION_KINDS, type Integration, type IntegrationKind, type IntegrationSpec, type IntegrationStatus } from './integrations.ts';
export { DeliveryQueue, type DeliveryHandler } from './queue.ts';
export { TriggerReplies, stateWords, type Replier, type TaskReplyView } from './replies.ts';
export { TriggeredTasks, refusalOf, repoKey, type TriggerStart } from './tasks.ts';

/** Where webhooks arrive; no API token: each source authenticates its sender itself. */
export const WEBHOOK_PREFIX = '/api/webhooks/';
/** The largest delivery taken (GitHub sends at most 25 MB, and issue events are kilobytes). */
export const MAX_WEBHOOK_BYTES = 5 * 1024 * 1024;

/** What every source is given. */
export interface TriggerDeps {
  db: Db;
  logger: Logger;
  audit: AuditLog;
  tasks: TaskService;
  secrets: SecretService;
  box: SecretBox;
  environments: EnvironmentService;
  feed?: ChangeFeed | undefined;
  singletons?: Singletons | undefined;
  publicUrl: () => string;
  /** Counts a delivery by outcome (/metrics); a refused signature is counted and nothing else recorded. */
  counted: (source: string, outcome: string) => void;
  /** The clock, for schedules (tests inject one). */
  now?: (() => Date) | undefined;
  /** Queues a project's prebuild (a push to its default branch); without it pushes are ignored. */
  prebuilds?: { queueFor(project: ProjectRow, trigger: 'push', createdBy: string): Promise<{ id: string }> } | undefined;
  triggered: TriggeredTasks;
  deliveries: Deliveries;
  queue: DeliveryQueue;
  replies: TriggerReplies;
  integrations: IntegrationStore;
}

/** One kind of trigger: its routes and, if it has one, its background work. */
export interface TriggerSource {
  readonly name: string;
  /** Org-scoped and admin routes, on the API (token-authenticated) like any other. */
  routes?(app: App): void;
  /** Public webhook routes under WEBHOOK_PREFIX: the body arrives as a Buffer, to check its signature over the bytes sent. */
  webhooks?(app: FastifyInstance): void;
  start?(): Promise<void> | void;
  close?(): Promise<void> | void;
}

export type TriggerSourceFactory = (deps: TriggerDeps) => TriggerSource;

/** The triggers of one control plane: the shared parts and every source. */
export class Triggers {
  readonly deps: TriggerDeps;
  readonly #sources: TriggerSource[] = [];

  constructor(o: Omit<TriggerDeps, 'triggered' | 'deliveries' | 'queue' | 'replies' | 'integrations'>, factories: TriggerSourceFactory[] = []) {
    const deliveries = new Deliveries(o.db);
    this.deps = {
      ...o,
      deliveries,
      triggered: new TriggeredTasks({ db: o.db, tasks: o.tasks, audit: o.audit }),
      queue: new DeliveryQueue({ deliveries, logger: o.logger }),
      replies: new TriggerReplies({ db: o.db, feed: o.feed, singletons: o.singletons, logger: o.logger, publicUrl: o.publicUrl }),
      integrations: new IntegrationStore({ db: o.db, box: o.box }),
    };
    for (const make of factories) this.#sources.push(make(this.deps));
  }

  get sources(): readonly TriggerSource[] {
    return this.#sources;
  }

  /** The API routes and, in a scope of their own that reads bodies as bytes, the webhook routes. */
  routes(app: App): void {
    for (const s of this.#sources) s.routes?.(app);
    void app.register(async (scope) => {
      scope.removeAllContentTypeParsers();
      scope.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: MAX_WEBHOOK_BYTES }, (_req, body, done) => done(null, body));
      for (const s of this.#sources) s.webhooks?.(scope as unknown as FastifyInstance);
    });
  }

  async start(): Promise<void> {
    for (const s of this.#sources) await s.start?.();
    this.deps.replies.start();
    await this.deps.queue.recover();
  }

  async close(): Promise<void> {
    for (const s of this.#sources) await s.close?.();
    await this.deps.queue.close();
    await this.deps.replies.close();
  }
}
