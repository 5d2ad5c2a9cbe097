// Trigger benchmark: a signed webhook to a queued task, on one control plane with the fake
// runner and no task slots (tasks are queued, never run: the trigger path alone is measured).
// (1) Latency, delivery by delivery: from the POST until the task row is committed (its queued
//     notification heard), p50/p99, for a generic webhook trigger and for GitHub (an issue_comment
//     `/berth …` signed as GitHub signs it, against a fake GitHub that answers the write-access
//     question); the 202 itself is timed too.
// (2) A burst of 1,000 generic deliveries, 20 at a time, 50 of them sent twice: every one a
//     task, none twice.
import { createHmac, generateKeyPairSync, randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { availableParallelism, loadavg } from 'node:os';
import { sign } from '@octokit/webhooks-methods';
import { startFakeGitHub, type FakeGitHub } from '../test/fakes/github.ts';
import { startTestBerth, type TestBerth } from '../test/helpers.ts';
import { ON_POSTGRES } from '../test/postgres.ts';
import { CHANNELS } from '../src/server/db/notify.ts';
import { summary } from './stats.ts';

const DELIVERIES = Number(process.env.BENCH_DELIVERIES ?? 200);
const BURST = Number(process.env.BENCH_BURST ?? 1000);
const BURST_CONCURRENCY = 20;
const RESENT = 50;
const GOAL_P50_MS = 50;

interface Sender {
  label: string;
  /** The trigger key the task of this delivery has. */
  keyOf(delivery: string): string;
  /** Sends delivery `n` with this delivery id; resolves with the HTTP status and whether it was a duplicate. */
  send(n: number, delivery: string): Promise<{ status: number; duplicate: boolean }>;
}

const GH_APP_ID = '4242';
const GH_INSTALLATION = 77;
/** GitHub's documented example payloads, by event. */
/** The App's key pair: the fake GitHub checks the App's JWTs against the public half. */
const ghKeys = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
const examples = createRequire(import.meta.url)('@octokit/webhooks-examples') as { name: string; examples: Record<string, any>[] }[];

let t: TestBerth | undefined;
let github: FakeGitHub | undefined;
const failures: string[] = [];

try {
  t = await startTestBerth({
    fake: true,
    taskConcurrency: 0,
    // Named so built-in agent tasks may be queued; never called, as no task runs.
    modelEnv: { OPENAI_BASE_URL: 'http://127.0.0.1:9/v1', OPENAI_API_KEY: 'sk-bench', BERTH_MODEL: 'gpt-4o-mini' },
  });
  const berth = t;
  const db = berth.berth.database.db;
  const [l1, l5, l15] = loadavg().map((l) => l.toFixed(2));
  console.log(`Berth trigger benchmark — ${ON_POSTGRES ? 'PostgreSQL' : 'embedded PGlite'}, ${availableParallelism()} cores, fake runner, tasks queued not run; load average before: ${l1} ${l5} ${l15}\n`);

  const project = await berth.api('POST', '/api/orgs/default/projects', { name: 'bench', repoUrl: 'https://github.com/acme/bench.git' });
  if (project.status !== 201) throw new Error(`project: ${project.status} ${JSON.stringify(project.body)}`);

  const generic = async (name: string): Promise<Sender> => {
    const made = await berth.api('POST', '/api/orgs/default/triggers', { name, project: 'bench', goalTemplate: 'CI failed: {{body.job}} on {{body.branch}} ({{body.run.url}})', ratePerMinute: 10_000 });
    if (made.status !== 201) throw new Error(`trigger: ${made.status} ${JSON.stringify(made.body)}`);
    const { id, url, secret } = made.body as { id: string; url: string; secret: string };
    return {
      label: 'generic webhook',
      keyOf: (delivery) => `webhook:${id}:${delivery}`,
      async send(n, delivery) {
        const body = JSON.stringify({ job: `unit-${n}`, branch: 'main', run: { url: `https://ci.example.com/runs/${n}` } });
        const res = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-berth-delivery': delivery, 'x-berth-signature-256': `sha256=${createHmac('sha256', secret).update(body).digest('hex')}` },
          body,
        });
        const answer = (await res.json()) as { duplicate?: boolean };
        return { status: res.status, duplicate: answer.duplicate === true };
      },
    };
  };

  /**
   * When the task with this trigger key is committed: the moment its queued notification (sent
   * by the database at commit, migration 0022) reaches this process. Listening before the send,
   * rather than polling, keeps the measuring from loading the database it measures.
   */
  const queued = (key: string): Promise<number> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => (stop(), reject(new Error(`no task for ${key} after 30 s`))), 30_000);
      const stop = berth.berth.database.feed.listen(CHANNELS.tasks, (payload) => {
        const at = performance.now();
        const [state, id] = payload.split(':');
        if (state !== 'queued') return;
        void db.selectFrom('tasks').select('trigger_key').where('id', '=', id!).executeTakeFirst().then((row) => {
          if (row?.trigger_key !== key) return;
          clearTimeout(timer);
          stop();
          resolve(at);
        }, reject);
      });
    });

  const latency = async (sender: Sender): Promise<void> => {
    // Warm up: the route, the queries and the task path's first use.
    for (let n = 0; n < 10; n++) {
      const delivery = randomUUID();
      const task = queued(sender.keyOf(delivery));
      await sender.send(-1 - n, delivery);
      await task;
    }
    const answered: number[] = [];
    const toTask: number[] = [];
    for (let n = 0; n < DELIVERIES; n++) {
      const delivery = randomUUID();
      const task = queued(sender.keyOf(delivery));
      const start = performance.now();
      const sent = await sender.send(n, delivery);
      answered.push(performance.now() - start);
      if (sent.status !== 202) throw new Error(`${sender.label}: delivery ${n} answered ${sent.status}`);
      toTask.push((await task) - start);
    }
    summary(`${sender.label}: POST → 202`, answered);
    const { p50 } = summary(`${sender.label}: POST → task queued`, toTask);
    if (p50 > GOAL_P50_MS) failures.push(`${sender.label}: p50 ${p50.toFixed(1)} ms to a queued task (goal ≤ ${GOAL_P50_MS} ms)`);
  };

  console.log(`(1) one delivery at a time, ${DELIVERIES} of each, until its task is queued`);
  await latency(await generic('latency'));
  github = await startFakeGitHub({ apps: [{ appId: GH_APP_ID, publicKey: ghKeys.publicKey, installationId: GH_INSTALLATION, slug: 'berth' }] });
  await latency(await githubSender(berth, github));

  console.log(`\n(2) a burst: ${BURST} deliveries, ${BURST_CONCURRENCY} at a time, ${RESENT} of them sent twice`);
  const burst = await generic('burst');
  const sends: { n: number; delivery: string }[] = Array.from({ length: BURST }, (_, n) => ({ n, delivery: `burst-${n}` }));
  // The resends go in among the rest, a few places after their first send (some while it is in flight).
  for (let i = 0; i < RESENT; i++) {
    const n = Math.floor((i * BURST) / RESENT);
    sends.splice(Math.min(sends.length, n + i + 1 + (i % 5) * 3), 0, { n, delivery: `burst-${n}` });
  }
  const statuses = new Map<number, number>();
  let duplicates = 0;
  let next = 0;
  const keys = new Set<string>();
  const burstStart = performance.now();
  const answered: number[] = [];
  await Promise.all(
    Array.from({ length: BURST_CONCURRENCY }, async () => {
      while (next < sends.length) {
        const s = sends[next++]!;
        const start = performance.now();
        const sent = await burst.send(s.n, s.delivery);
        answered.push(performance.now() - start);
        statuses.set(sent.status, (statuses.get(sent.status) ?? 0) + 1);
        if (sent.duplicate) duplicates++;
        keys.add(burst.keyOf(s.delivery));
      }
    }),
  );
  const sentMs = performance.now() - burstStart;
  await berth.berth.triggers.deps.queue.idle();
  const allQueuedMs = performance.now() - burstStart;
  const source = `webhook:${[...keys][0]!.split(':')[1]}`;
  const tasks = await db.selectFrom('tasks').select(['trigger_key']).where('triggered_by', '=', source).execute();
  const distinct = new Set(tasks.map((r) => r.trigger_key));
  const recorded = await db.selectFrom('webhook_deliveries').select(['processed_at', 'task_id']).where('source', '=', source).execute();
  summary('burst: POST → 202', answered);
  console.log(`burst: ${sends.length} sends in ${(sentMs / 1000).toFixed(1)} s (${Math.round((sends.length / sentMs) * 1000)}/s); every task queued after ${(allQueuedMs / 1000).toFixed(1)} s`);
  console.log(`burst: answers ${[...statuses].map(([s, c]) => `${c}× ${s}`).join(', ')}; ${duplicates} said duplicate`);
  console.log(`burst: ${recorded.length} deliveries recorded (${recorded.filter((r) => r.processed_at && r.task_id).length} with their task), ${tasks.length} tasks, ${distinct.size} distinct (expected ${BURST}, none twice)`);
  if (sentMs > 60_000) failures.push(`burst: ${BURST} deliveries took ${(sentMs / 1000).toFixed(1)} s, more than a minute`);
  if (tasks.length !== BURST || distinct.size !== BURST) failures.push(`burst: ${tasks.length} tasks (${distinct.size} distinct) for ${BURST} deliveries`);
  if (duplicates !== RESENT) failures.push(`burst: ${duplicates} resends said duplicate, not ${RESENT}`);
  if ((statuses.get(202) ?? 0) !== sends.length) failures.push(`burst: not every send answered 202`);
} finally {
  await t?.destroy();
  await github?.close();
}

if (failures.length) {
  console.log(`\nMISSED:\n  ${failures.join('\n  ')}`);
  process.exit(1);
}
console.log('\nall goals met');

/**
 * GitHub's `/berth` issue comment: the App set up against a fake GitHub (which answers the
 * write-access question and the issue's comments as GitHub does), one issue per delivery,
 * signed as GitHub signs. The task exists once GitHub was asked and the goal written.
 */
async function githubSender(berth: TestBerth, github: FakeGitHub): Promise<Sender> {
  const repo = 'acme/bench-gh';
  const writer = 'maintainer-mo';
  const secret = 'bench-webhook-secret-0123456789';
  const { privateKey } = ghKeys;
  await github.createRepo(repo, { 'README.md': '# bench\n' });
  github.setPermission(repo, writer, 'maintain');
  const put = async (method: string, path: string, body: unknown) => {
    const res = await berth.api(method, path, body);
    if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(res.body)}`);
  };
  await put('PUT', '/api/orgs/default/secrets/GITHUB_APP_KEY', { value: privateKey });
  await put('POST', '/api/orgs/default/projects', {
    name: 'bench-gh',
    repoUrl: github.repoUrl(repo),
    forge: { kind: 'github', apiUrl: github.apiUrl, app: { appId: GH_APP_ID, installationId: GH_INSTALLATION, privateKeySecret: 'GITHUB_APP_KEY' } },
  });
  await put('PUT', '/api/integrations/github', { settings: { appId: GH_APP_ID, url: github.url, apiUrl: github.apiUrl }, secrets: { privateKey, webhookSecret: secret } });
  const example = examples.find((e) => e.name === 'issue_comment')!.examples.find((x) => x.action === 'created')!;
  return {
    label: 'GitHub issue_comment /berth',
    keyOf: (delivery) => `github:${delivery}`,
    async send(n, delivery) {
      const issue = github.createIssue(repo, { title: `Flaky test ${n}`, body: 'It fails about once in ten runs.', user: writer });
      const payload = {
        ...structuredClone(example),
        repository: github.repositoryJson(repo),
        installation: { id: GH_INSTALLATION, node_id: 'MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uNzc=' },
        sender: { ...example.sender, login: writer, type: 'User' },
        issue: github.issueJson(repo, issue.number),
        comment: { ...example.comment, body: `/berth fix the flaky test ${n}`, user: { ...example.comment.user, login: writer, type: 'User' } },
      };
      const body = JSON.stringify(payload);
      const res = await fetch(`${berth.client.url}/api/webhooks/github`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-github-event': 'issue_comment', 'x-github-delivery': delivery, 'x-hub-signature-256': await sign(secret, body), 'user-agent': 'GitHub-Hookshot/berth-bench' },
        body,
      });
      const answer = (await res.json()) as { duplicate?: boolean };
      return { status: res.status, duplicate: answer.duplicate === true };
    },
  };
}
