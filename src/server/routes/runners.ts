import { ErrorSchema } from '../../shared/api.ts';
import { z } from 'zod';
import { Runner, RunnerList } from '../../shared/api-runners.ts';
import type { App, AppDeps } from '../app.ts';
import { actorOf } from '../authz.ts';

const errors = { 401: ErrorSchema, 403: ErrorSchema };
const RunnerParams = z.strictObject({ id: z.string().min(1).max(300).describe("the runner's id or name") });

/** The runners that serve this control plane, with their health: instance-wide, for org admins and owners. */
export function runnerRoutes(app: App, { runners, db, audit }: AppDeps): void {
  app.get('/api/runners', {
    schema: {
      tags: ['runners'],
      summary: 'The runners, their hosts and their health',
      description:
        'Each runner reports every few seconds: its backend, the host\'s cores and memory, environments and tasks, network and disk setup, and what makes it degraded. ' +
        'One that stopped reporting for three intervals is offline. Shown to instance administrators and to admins and owners of any org.',
      response: { 200: RunnerList, ...errors },
    },
    handler: async (req) => runners.list(req.caller),
  });

  // Draining and undraining: instance administrators only (runners serve every org), on record in every org's log.
  for (const [verb, draining] of [['drain', true], ['undrain', false]] as const) {
    app.post(`/api/runners/:id/${verb}`, {
      config: { audit: `runner.${verb}` },
      schema: {
        tags: ['runners'],
        summary: draining ? 'Drain a runner: no new environments or tasks go to it; what runs there finishes' : 'Undrain a runner: it takes new environments and tasks again',
        description: 'Instance administrators only. Recorded as `runner.' + verb + '` in every org\'s audit log.',
        params: RunnerParams,
        response: { 200: Runner, ...errors, 404: ErrorSchema },
      },
      handler: async (req) => {
        const runner = await runners.setDraining(req.caller, req.params.id, draining);
        for (const { id } of await db.selectFrom('orgs').select('id').execute()) {
          await audit.append({ orgId: id, actor: actorOf(req.caller), action: `runner.${verb}`, target: runner.id, details: { name: runner.name, scope: 'instance' } });
        }
        return runner;
      },
    });
  }
}
