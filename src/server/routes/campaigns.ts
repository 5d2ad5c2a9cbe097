// Campaigns (`berth campaign …`): one change across many repositories, one task each.
import { z } from 'zod';
import { ErrorSchema, OrgRef } from '../../shared/api.ts';
import { ApproveBody, ApproveResult, Campaign, CampaignDetail, CampaignRef, CampaignTarget, CreateCampaignBody, CreatedCampaign, ListTargetsQuery } from '../../shared/api-campaigns.ts';
import { csvTable } from '../../shared/csv.ts';
import { BerthError } from '../../shared/errors.ts';
import type { CampaignForge } from '../campaigns/forge.ts';
import type { CampaignService } from '../campaigns/service.ts';
import type { App } from '../app.ts';

const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema, 503: ErrorSchema };
const tags = ['campaigns'];

const CSV_COLUMNS = ['repo', 'project', 'state', 'attempts', 'task', 'failure', 'reason', 'change_request', 'pr_state', 'checks', 'review', 'started_at', 'finished_at'] as const;

function campaignCsv(targets: CampaignTarget[]): string {
  return csvTable(
    CSV_COLUMNS,
    targets.map((t) => [t.repo, t.project, t.state, t.attempts, t.taskId, t.failure, t.reason, t.changeRequest?.url ?? (t.changeRequest ? 'branch' : null), t.changeRequest?.state ?? null, t.changeRequest?.checks ?? null, t.changeRequest?.review ?? null, t.startedAt, t.finishedAt]),
  );
}

function noForge(): never {
  throw new BerthError('unavailable', 'this control plane cannot ask a forge for repositories: give the list (repos)');
}

export function campaignRoutes(app: App, { campaigns, forge }: { campaigns: CampaignService; forge?: CampaignForge | undefined }): void {
  app.post('/api/orgs/:org/campaigns', {
    config: { permission: 'task.create', audit: 'campaign.create' },
    schema: {
      tags,
      summary: 'Start a campaign: one task per repository',
      description:
        'Each repository of the list gets a task (its project\'s, or a one-off task with the campaign\'s settings for a repository no project uses: admins only). ' +
        'Lines that name no repository, or one the caller may not use, are returned in `invalid` and left out.',
      params: OrgRef,
      body: CreateCampaignBody,
      response: { 201: CreatedCampaign, ...errors },
    },
    handler: async (req, reply) => {
      const body = req.body;
      // --org-query: the list is what the org's GitHub finds.
      const repos = body.orgQuery !== undefined ? await (forge ?? noForge()).searchRepos(req.scope, body.orgQuery) : body.repos;
      const made = await campaigns.create(req.scope, { ...body, repos });
      req.auditDetails = { campaign: made.campaign.id, repositories: made.campaign.total, invalidLines: made.invalid.length, ...(body.orgQuery !== undefined && { orgQuery: body.orgQuery }) };
      return reply.code(201).send(made);
    },
  });

  app.get('/api/orgs/:org/campaigns', {
    config: { permission: 'task.read' },
    schema: { tags, summary: "The org's campaigns, newest first", params: OrgRef, response: { 200: z.object({ items: z.array(Campaign) }), ...errors } },
    handler: async (req) => ({ items: await campaigns.list(req.scope) }),
  });

  app.get('/api/orgs/:org/campaigns/:id', {
    config: { permission: 'task.read' },
    schema: { tags, summary: 'One campaign: counts by state, pace, pull requests, failures grouped by reason', params: CampaignRef, response: { 200: CampaignDetail, ...errors } },
    handler: async (req) => {
      // Pull requests the forge was last asked about over a minute ago are asked again (briefly waited for).
      await forge?.refreshIfStale(req.scope.orgId, req.params.id);
      return campaigns.show(req.scope, req.params.id);
    },
  });

  if (forge) {
    app.post('/api/orgs/:org/campaigns/:id/approve', {
      config: { permission: 'task.approve', audit: 'campaign.approve' },
      schema: {
        tags,
        summary: 'Approve its changes in bulk: merge plain-git branches, mark pull/merge requests ready for review',
        description:
          'Every repository whose task succeeded with a change: a plain-git branch is merged into its base branch (as `berth task approve`), ' +
          'a GitHub pull request or GitLab merge request that is a draft is marked ready for review. With `onlyGreen` (the default) only changes whose task passed its checks ' +
          'and whose forge checks are not failing; the rest are listed in `skipped` with the reason. Each approval is audited (`task.approve`).',
        params: CampaignRef,
        body: ApproveBody.nullish(),
        response: { 200: ApproveResult, ...errors },
      },
      handler: async (req) => {
        const result = await forge.approve(req.scope, req.params.id, ApproveBody.parse(req.body ?? {}));
        req.auditDetails = { campaign: req.params.id, approved: result.approved.length, skipped: result.skipped.length };
        return result;
      },
    });
  }

  app.get('/api/orgs/:org/campaigns/:id/targets', {
    config: { permission: 'task.read' },
    schema: { tags, summary: "A campaign's repositories and what became of each, in the list's order", params: CampaignRef, querystring: ListTargetsQuery, response: { 200: z.object({ items: z.array(CampaignTarget), next: z.number().nullable() }), ...errors } },
    handler: async (req) => campaigns.targets(req.scope, req.params.id, req.query),
  });

  app.get('/api/orgs/:org/campaigns/:id/export', {
    config: { permission: 'task.read' },
    schema: { tags, summary: 'Every repository of a campaign, as CSV or JSON', params: CampaignRef, querystring: z.strictObject({ format: z.enum(['csv', 'json']).default('json') }), response: { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema } },
    handler: async (req, reply) => {
      const all = await campaigns.allTargets(req.scope, req.params.id);
      if (req.query.format === 'csv') return reply.type('text/csv; charset=utf-8').header('content-disposition', `attachment; filename="${all.campaign.name}.csv"`).send(campaignCsv(all.targets) as never);
      return reply.type('application/json').send(JSON.stringify(all) as never);
    },
  });

  for (const [verb, summary] of [
    ['pause', 'Start no more of its tasks (those under way finish)'],
    ['resume', 'Go on starting its tasks'],
    ['cancel', 'Stop it: nothing more starts and its tasks under way are cancelled'],
    ['retry-failed', 'Try its failed repositories again'],
    ['rerun', 'Run it again over every repository: branches from an earlier run get new commits, no second pull request'],
  ] as const) {
    app.post(`/api/orgs/:org/campaigns/:id/${verb}`, {
      config: { permission: 'task.create', audit: `campaign.${verb}` },
      schema: { tags, summary, description: "Its maker's or an admin's.", params: CampaignRef, body: z.strictObject({}).nullish(), response: { 200: Campaign, ...errors } },
      handler: async (req) => {
        const s = req.scope;
        const id = (req.params as { id: string }).id;
        switch (verb) {
          case 'pause':
            return campaigns.pause(s, id);
          case 'resume':
            return campaigns.resume(s, id);
          case 'cancel':
            return campaigns.cancel(s, id);
          case 'retry-failed':
            return campaigns.retryFailed(s, id);
          case 'rerun':
            return campaigns.rerun(s, id);
        }
      },
    });
  }
}
