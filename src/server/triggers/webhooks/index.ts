// Generic webhooks (`berth trigger`): a URL and a secret any system can post JSON to, and a
// goal template its payload fills in. The org's API (routes.ts), the public delivery route
// (receive.ts) and what a delivery starts (handle.ts), over one store of triggers (store.ts).
import type { TriggerDeps, TriggerSource } from '../index.ts';
import { deliveryHandler } from './handle.ts';
import { TriggerRates } from './rate.ts';
import { receiveRoute } from './receive.ts';
import { webhookTriggerRoutes } from './routes.ts';
import { WebhookTriggerStore } from './store.ts';

export { renderGoal, type RenderedGoal } from './template.ts';
export { signDelivery } from './verify.ts';

export function webhookTriggers(deps: TriggerDeps): TriggerSource {
  const now = deps.now ?? (() => new Date());
  const store = new WebhookTriggerStore({ db: deps.db, box: deps.box, publicUrl: deps.publicUrl });
  const rates = new TriggerRates(() => now().getTime());
  deps.queue.handle('webhook', deliveryHandler({ db: deps.db, store, triggered: deps.triggered }));
  return {
    name: 'webhook',
    routes: (app) => webhookTriggerRoutes(app, { store, rates }),
    webhooks: (scope) => receiveRoute(scope, { store, rates, queue: deps.queue, counted: deps.counted, now }),
  };
}
