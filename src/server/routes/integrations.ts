import { ErrorSchema } from '../../shared/api.ts';
import { IntegrationKindParam, IntegrationList, IntegrationStatus, SetIntegrationBody } from '../../shared/api-integrations.ts';
import { notFound } from '../../shared/errors.ts';
import type { App, AppDeps } from '../app.ts';
import { actorOf, forbidden, type Caller } from '../authz.ts';
import { WEBHOOK_PREFIX, type IntegrationStatus as StoredStatus, type Triggers } from '../triggers/index.ts';
import { auditEveryOrg } from './runner-join.ts';

const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema };
const tags = ['integrations'];

function assertInstanceAdmin(caller: Caller): void {
  if (!caller.instanceAdmin) throw forbidden('integrations serve every org: only an instance administrator (the user `berth up` made) sets them up');
}

/** The instance's GitHub App, GitLab and Slack app: instance administrators only; secrets go in and never come out. */
export function integrationRoutes(app: App, deps: AppDeps & { triggers: Triggers }): void {
  const store = deps.triggers.deps.integrations;
  const view = (s: StoredStatus) => {
    const base = `${deps.publicUrl?.() ?? ''}${WEBHOOK_PREFIX}${s.kind}`;
    return { ...s, webhookUrl: base, webhookUrls: store.spec(s.kind).webhookPaths?.map((p) => `${base}/${p}`) ?? [base] };
  };

  app.get('/api/integrations', {
    schema: { tags, summary: 'The integrations and whether each is set up (instance administrators); never a secret', response: { 200: IntegrationList, ...errors } },
    handler: async (req) => {
      assertInstanceAdmin(req.caller);
      return { items: (await store.list()).map(view) };
    },
  });

  app.put('/api/integrations/:kind', {
    config: { audit: 'integration.set' },
    schema: { tags, summary: 'Set up an integration (instance administrators): settings replace the old ones, secrets left out are kept', params: IntegrationKindParam, body: SetIntegrationBody, response: { 200: IntegrationStatus, ...errors } },
    handler: async (req) => {
      assertInstanceAdmin(req.caller);
      const status = await store.set(req.params.kind, { settings: req.body.settings, secrets: req.body.secrets }, actorOf(req.caller));
      // The settings and which secrets changed; never a value.
      await auditEveryOrg(deps.db, deps.audit, req.caller, 'integration.set', req.params.kind, { settings: status.settings, secretsChanged: Object.keys(req.body.secrets).sort() });
      return view(status);
    },
  });

  app.delete('/api/integrations/:kind', {
    config: { audit: 'integration.remove' },
    schema: { tags, summary: 'Remove an integration (instance administrators): its webhooks are refused from then on', params: IntegrationKindParam, response: { 200: IntegrationStatus, ...errors } },
    handler: async (req) => {
      assertInstanceAdmin(req.caller);
      if (!(await store.remove(req.params.kind))) throw notFound(`the ${req.params.kind} integration is not set up: \`berth integration list\` shows them`);
      await auditEveryOrg(deps.db, deps.audit, req.caller, 'integration.remove', req.params.kind, {});
      return view((await store.list()).find((s) => s.kind === req.params.kind)!);
    },
  });
}
