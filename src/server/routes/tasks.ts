import { z } from 'zod';
import { ErrorSchema, OrgRef } from '../../shared/api.ts';
import { ApproveTaskBody, ContinueTaskBody, CreateTaskBody, ListTasksQuery, Task, TaskEventSchema, TaskEventsQuery, TaskList, TaskRef } from '../../shared/api-tasks.ts';
import { invalid } from '../../shared/errors.ts';
import { FINAL_TASK_STATES, type TaskEvent } from '../../shared/tasks.ts';
import { errorBody, type App, type AppDeps } from '../app.ts';
import { recordingRepoRefusals } from './repo-refusals.ts';

const tags = ['tasks'];
const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema };

/** Tasks: a goal and a repository handed to an agent, followed to a pull request. */
export function taskRoutes(app: App, { tasks, taskEvents, audit }: AppDeps): void {
  app.post('/api/orgs/:org/tasks', {
    config: { permission: 'task.create', audit: 'task.create' },
    schema: { tags, summary: 'Hand a goal and a repository to an agent', params: OrgRef, body: CreateTaskBody, response: { 201: Task, ...errors } },
    handler: async (req, reply) => reply.code(201).send(await recordingRepoRefusals(audit, req.scope, 'task.create', req.body.repo, () => tasks.create(req.scope, req.body))),
  });

  app.get('/api/orgs/:org/tasks', {
    config: { permission: 'task.read' },
    schema: { tags, summary: 'Tasks, newest first, with counts of running and queued ones', params: OrgRef, querystring: ListTasksQuery, response: { 200: TaskList, ...errors } },
    handler: async (req) => {
      const { mine, ...query } = req.query;
      if (mine === '1' || mine === 'true') {
        if (query.createdBy && query.createdBy !== req.scope.actor) throw invalid('give mine or createdBy, not both', 'querystring.mine');
        query.createdBy = req.scope.actor;
      }
      return tasks.list(req.scope.orgId, query);
    },
  });

  app.get('/api/orgs/:org/tasks/:id', {
    config: { permission: 'task.read', ownership: 'org' },
    schema: { tags, summary: 'One task', params: TaskRef, response: { 200: Task, ...errors } },
    handler: async (req) => tasks.show(req.scope.orgId, req.params.id),
  });

  app.get('/api/orgs/:org/tasks/:id/diff', {
    config: { permission: 'task.read', ownership: 'org' },
    schema: { tags, summary: 'The change the task made, as a unified diff', params: TaskRef, response: { 200: z.object({ diff: z.string().nullable() }), ...errors } },
    handler: async (req) => ({ diff: await tasks.diff(req.scope.orgId, req.params.id) }),
  });

  app.post('/api/orgs/:org/tasks/:id/cancel', {
    config: { permission: 'task.create', audit: 'task.cancel', ownership: 'owner' },
    schema: { tags, summary: 'Cancel a queued or running task', params: TaskRef, response: { 200: Task, ...errors } },
    handler: async (req) => tasks.cancel(req.scope, req.params.id),
  });

  app.post('/api/orgs/:org/tasks/:id/retry', {
    config: { permission: 'task.create', audit: 'task.retry', ownership: 'owner' },
    schema: { tags, summary: 'Run the task again as a new task', params: TaskRef, response: { 201: Task, ...errors } },
    handler: async (req, reply) => reply.code(201).send(await recordingRepoRefusals(audit, req.scope, 'task.retry', req.params.id, () => tasks.retry(req.scope, req.params.id))),
  });

  app.post('/api/orgs/:org/tasks/:id/approve', {
    config: { permission: 'task.approve', audit: 'task.approve', ownership: 'owner' },
    schema: {
      tags,
      summary: 'Merge a plain-git task\'s branch into its base branch',
      description: 'Only a green change (checks passed, not a draft): anything else answers 409 unless `force` is true, which is on record as a `task.approve_forced` audit entry saying what was overridden.',
      params: TaskRef,
      body: ApproveTaskBody,
      response: { 200: Task, ...errors },
    },
    handler: async (req) => {
      const { task, forced } = await recordingRepoRefusals(audit, req.scope, 'task.approve', req.params.id, () => tasks.approve(req.scope, req.params.id, { force: req.body?.force }));
      if (forced) await audit.append({ orgId: req.scope.orgId, actor: req.scope.actor, action: 'task.approve_forced', target: task.id, details: { overridden: forced, branch: task.branch, mergedSha: task.changeRequest?.mergedSha ?? null, forced: true } });
      return task;
    },
  });

  app.post('/api/orgs/:org/tasks/:id/continue', {
    config: { permission: 'task.create', audit: 'task.continue', ownership: 'owner' },
    schema: {
      tags,
      summary: 'A follow-up: a new task with this task\'s goal and a new instruction',
      description: "On the same project or repository, from the task's branch when it pushed one, with its agent, model, check, setup and budget. The task must have ended.",
      params: TaskRef,
      body: ContinueTaskBody,
      response: { 201: Task, ...errors },
    },
    handler: async (req, reply) =>
      reply.code(201).send(await recordingRepoRefusals(audit, req.scope, 'task.continue', req.params.id, () => tasks.followUp(req.scope, req.params.id, req.body.instruction, req.body.trigger ?? 'api'))),
  });

  app.get('/api/orgs/:org/tasks/:id/events', {
    config: { permission: 'task.read', ownership: 'org' },
    schema: {
      tags,
      summary: 'The task\'s transcript',
      description:
        'Events in order. With `Accept: text/event-stream` (or follow=1) they stream as server-sent events, each with `id: seq`; ' +
        'the stream ends with an `end` event once the task has ended. Reconnect with `Last-Event-ID` (or after=seq) to get exactly the events missed. ' +
        'A long transcript can be read from its end: tail=N gives the last N events, and before=seq with tail=N the N before those.',
      params: TaskRef,
      querystring: TaskEventsQuery,
      response: { 200: z.object({ items: z.array(TaskEventSchema) }), ...errors },
    },
    handler: async (req, reply) => {
      await tasks.assertVisible(req.scope.orgId, req.params.id);
      const lastId = Number(req.headers['last-event-id']);
      const after = Number.isInteger(lastId) && lastId > 0 ? Math.max(lastId, req.query.after) : req.query.after;
      const stream = req.headers.accept?.includes('text/event-stream') || req.query.follow === '1' || req.query.follow === 'true';
      if (!stream) return { items: (await taskEvents.list(req.params.id, { after, before: req.query.before, tail: req.query.tail })) as never };
      if (req.query.tail !== undefined || req.query.before !== undefined) throw invalid('tail and before page the JSON list; the stream takes after (or Last-Event-ID)', req.query.tail !== undefined ? 'querystring.tail' : 'querystring.before');

      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      // A comment at once, not the first event: until the first bytes of the body a browser
      // may not hand the response over (Firefox waits for them), and a quiet task would look
      // "connecting" until the first heartbeat.
      res.write(': open\n\n');
      const id = req.params.id;
      let ended = false;
      const end = () => {
        if (ended) return;
        ended = true;
        release();
        stop();
        clearInterval(heartbeat);
        res.end('event: end\ndata: {}\n\n');
      };
      // A caller whose token or role no longer allows reading the task gets an error event
      // (not `end`: the task has not ended) and the stream closes.
      const release = app.openStreams.watch(req, (why) => {
        if (ended) return;
        ended = true;
        stop();
        clearInterval(heartbeat);
        res.end(`event: error\ndata: ${JSON.stringify(errorBody(why))}\n\n`);
      });
      const send = (e: TaskEvent) => {
        if (ended) return;
        res.write(`id: ${e.seq}\nevent: task\ndata: ${JSON.stringify(e)}\n\n`);
        if (e.data.type === 'state' && FINAL_TASK_STATES.has(e.data.state)) end();
      };
      const stop = taskEvents.follow(id, after, send);
      // Comments keep proxies from closing a quiet stream while the agent thinks.
      const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
      res.on('close', () => {
        ended = true;
        release();
        stop();
        clearInterval(heartbeat);
      });
      // A task that ended before this request has no final event to come: close after the replay.
      const row = await tasks.assertVisible(req.scope.orgId, id);
      if (FINAL_TASK_STATES.has(row.state)) {
        const stored = await taskEvents.list(id, { after });
        if (!stored.some((e) => e.data.type === 'state' && FINAL_TASK_STATES.has(e.data.state))) setTimeout(end, 200);
      }
    },
  });
}
