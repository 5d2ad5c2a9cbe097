// `berth project check NAME`: builds the image the project's tasks would run (its
// devcontainer Dockerfile and features) without a task, streaming the build log.
import { z } from 'zod';
import { ErrorSchema, OrgRef } from '../../shared/api.ts';
import { DEFAULT_LIMITS } from '../../shared/environment.ts';
import { parseSize } from '../../shared/units.ts';
import { errorBody, type App, type AppDeps } from '../app.ts';
import { liveProject } from '../projects.ts';
import { resolveProjectSpec } from '../tasks/index.ts';
import { buildSpecImage } from '../tasks/spec-image.ts';

const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema };
const HEARTBEAT_MS = 15_000;

export function projectCheckRoutes(app: App, deps: AppDeps): void {
  app.post('/api/orgs/:org/projects/:name/check', {
    config: { permission: 'task.create', audit: 'project.check' },
    schema: {
      tags: ['projects'],
      summary: "Builds the image the project's tasks would run, streaming the build log",
      description:
        "Clones the default branch, reads its devcontainer.json and builds its Dockerfile and features on the runner (buildah, under the project's egress policy), as a task would before it starts. " +
        'The answer is a stream of server-sent events: `log` (data: {"line"}) for each line of the build log, then `result` (data: {"image","digest","reused"}; image is null when the spec builds nothing) or `error` (data: an error body), then the stream ends. ' +
        'A build with the same inputs as an earlier one is reused, not built again.',
      params: OrgRef.extend({ name: z.string().max(100) }),
      response: { 200: z.string().describe('text/event-stream'), ...errors },
    },
    handler: async (req, reply) => {
      const project = await liveProject(deps.db, req.scope.orgId, req.params.name);
      const controller = new AbortController();
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      res.write(': open\n\n');
      const send = (event: string, data: unknown) => {
        if (!res.writableEnded) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      };
      // A client that goes away stops the build (the layers built so far stay cached).
      res.on('close', () => controller.abort());
      const heartbeat = setInterval(() => res.write(': heartbeat\n\n'), HEARTBEAT_MS);
      try {
        let image: Awaited<ReturnType<typeof buildSpecImage>> = null;
        const resolved = await resolveProjectSpec(deps, project, controller.signal, async (repoDir, spec) => {
          send('log', { line: spec.build ? `building from ${spec.build.dockerfile ? `${spec.build.configDir}/${spec.build.dockerfile}` : (spec.build.image ?? 'the default image')}${spec.build.features ? ` with ${Object.keys(spec.build.features).length} feature(s)` : ''}` : 'nothing to build: the spec names an image' });
          if (!spec.build) return;
          // On a runner placement would give the project's environments (berth up's own, or one that joined).
          const runner = await deps.pool.place({ labels: project.settings.runnerLabels, memoryBytes: (spec.limits.memory === undefined ? undefined : parseSize(spec.limits.memory)) ?? DEFAULT_LIMITS.memoryBytes });
          send('log', { line: `building on runner ${runner.name}` });
          image = await buildSpecImage({ policies: app.policies }, { orgId: req.scope.orgId, project: project.name, runner, repoDir, spec, onLog: (line) => send('log', { line }), signal: controller.signal });
        });
        const built = image as Awaited<ReturnType<typeof buildSpecImage>>;
        // A hijacked reply skips the audit hook: the build is put on record here, before its result is sent.
        await deps.audit.append({
          orgId: req.scope.orgId,
          actor: req.scope.actor,
          action: 'project.check',
          target: project.name,
          details: { method: req.method, path: req.url.split('?')[0], image: built?.name ?? null, digest: built?.digest ?? null, reused: built?.reused ?? false },
        });
        send('result', built ? { image: built.name, digest: built.digest, reused: built.reused } : { image: null, digest: null, reused: false, spec: resolved.spec.image ?? 'default' });
      } catch (err) {
        if (!(err as { statusCode?: number }).statusCode) req.log.warn({ err, project: project.name }, 'project check failed');
        send('error', errorBody(err));
      } finally {
        clearInterval(heartbeat);
        res.end();
      }
    },
  });
}
