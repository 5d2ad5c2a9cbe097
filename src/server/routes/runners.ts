import { ErrorSchema } from '../../shared/api.ts';
import { RunnerList } from '../../shared/api-runners.ts';
import type { App, AppDeps } from '../app.ts';

const errors = { 401: ErrorSchema, 403: ErrorSchema };

/** The runners that serve this control plane, with their health: instance-wide, for org admins and owners. */
export function runnerRoutes(app: App, { runners }: AppDeps): void {
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
}
