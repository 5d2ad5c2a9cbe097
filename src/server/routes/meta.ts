import { Health } from '../../shared/api.ts';
import type { App, AppDeps } from '../app.ts';

export function metaRoutes(app: App, deps: AppDeps): void {
  app.get('/health', { schema: { response: { 200: Health }, security: [] } }, async () => ({ ok: true, version: deps.version, ...deps.health() }));
}
