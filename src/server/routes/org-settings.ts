import { ErrorSchema, OrgRef, OrgSettings, OrgSettingsPatch } from '../../shared/api.ts';
import type { App, AppDeps } from '../app.ts';

const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema };
const tags = ['orgs'];

/** An org's settings: for now, whether stopped environments start by themselves. */
export function orgSettingsRoutes(app: App, { db }: AppDeps): void {
  const read = async (orgId: string): Promise<OrgSettings> => {
    const row = await db.selectFrom('orgs').select('auto_start').where('id', '=', orgId).executeTakeFirstOrThrow();
    return { autoStart: row.auto_start };
  };

  app.get('/api/orgs/:org/settings', {
    config: { permission: 'org.read' },
    schema: { tags, summary: "The org's settings", params: OrgRef, response: { 200: OrgSettings, ...errors } },
    handler: async (req) => read(req.scope.orgId),
  });

  app.patch('/api/orgs/:org/settings', {
    config: { permission: 'org.settings', audit: 'org.settings' },
    schema: {
      tags,
      summary: "Change the org's settings (owners and admins); fields left out keep their value",
      params: OrgRef,
      body: OrgSettingsPatch,
      response: { 200: OrgSettings, ...errors },
    },
    handler: async (req) => {
      req.auditDetails = { ...req.body };
      if (req.body.autoStart !== undefined) await db.updateTable('orgs').set({ auto_start: req.body.autoStart }).where('id', '=', req.scope.orgId).execute();
      return read(req.scope.orgId);
    },
  });
}
