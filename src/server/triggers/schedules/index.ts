// Schedules: cron rules, read in a timezone, that start tasks or stop and start environments.
// The API (service.ts, routes.ts) and the loop that fires them on every replica (firing.ts).
import type { TriggerDeps, TriggerSource } from '../index.ts';
import { ScheduleFirer } from './firing.ts';
import { scheduleRoutes } from './routes.ts';
import { ScheduleService } from './service.ts';

export { ScheduleFirer } from './firing.ts';
export { ScheduleService } from './service.ts';

export interface ScheduleSource extends TriggerSource {
  readonly service: ScheduleService;
  /** Fires what is due now (the loop does this every second; tests call it after moving the clock). */
  tick(): Promise<void>;
}

export function scheduleSource(deps: TriggerDeps): ScheduleSource {
  const now = deps.now ?? (() => new Date());
  const service = new ScheduleService({ db: deps.db, now });
  const firer = new ScheduleFirer({ db: deps.db, logger: deps.logger, audit: deps.audit, triggered: deps.triggered, environments: deps.environments, now });
  return {
    name: 'schedules',
    service,
    routes: (app) => scheduleRoutes(app, service),
    start: () => firer.start(),
    close: () => firer.close(),
    tick: () => firer.tick(),
  };
}
