// A GitHub or GitLab push to a project's default branch queues its prebuild (issue #16), once
// per delivery id; a push to another branch, a deleted branch and a project that turned it off
// queue nothing. Deliveries are signed as GitHub signs them, with @octokit/webhooks-examples'
// push payload pointed at the fake GitHub; GitLab's come from the fake GitLab with its token.
// sandbox: none (test/fakes/fake-runner.ts)
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { after, before, test } from 'node:test';
import { sign } from '@octokit/webhooks-methods';
import { startFakeGitHub, type FakeGitHub } from './fakes/github.ts';
import { startFakeGitLab, type FakeGitLab } from './fakes/gitlab.ts';
import { startTestBerth, waitFor, type TestBerth } from './helpers.ts';

const APP_ID = '4343';
const INSTALLATION = 78;
const SECRET = 'webhook-secret-for-the-push-tests-0123';
const REPO = 'acme/gadgets';
const examples = createRequire(import.meta.url)('@octokit/webhooks-examples') as { name: string; examples: Record<string, any>[] }[];
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });

let t: TestBerth;
let github: FakeGitHub;
let dir: string;
let gitlab: FakeGitLab | undefined;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'berth-pb-push-'));
  github = await startFakeGitHub({ apps: [{ appId: APP_ID, publicKey, installationId: INSTALLATION, slug: 'berth' }] });
  await github.createRepo(REPO, { 'README.md': 'gadgets\n', 'berth.yaml': 'setup:\n  - echo set up > .ready\n' });
  t = await startTestBerth({ fake: true });
  assert.equal((await t.api('PUT', '/api/orgs/default/secrets/GITHUB_APP_KEY', { value: privateKey })).status, 200);
  const p = await t.api('POST', '/api/orgs/default/projects', {
    name: 'gadgets',
    repoUrl: github.repoUrl(REPO),
    forge: { kind: 'github', apiUrl: github.apiUrl, app: { appId: APP_ID, installationId: INSTALLATION, privateKeySecret: 'GITHUB_APP_KEY' } },
  });
  assert.equal(p.status, 201, JSON.stringify(p.body));
  await writeFile(join(dir, 'app.pem'), privateKey);
  await writeFile(join(dir, 'secret'), `${SECRET}\n`);
  const r = await t.cli(['integration', 'github', '--app-id', APP_ID, '--private-key-file', join(dir, 'app.pem'), '--webhook-secret-file', join(dir, 'secret'), '--url', github.url, '--api-url', github.apiUrl]);
  assert.equal(r.code, 0, r.stderr);
});
after(async () => {
  await t?.destroy();
  await github?.close();
  await gitlab?.close();
  await rm(dir, { recursive: true, force: true });
});

function pushPayload(ref: string, extra: Record<string, unknown> = {}): Record<string, any> {
  const p = structuredClone(examples.find((e) => e.name === 'push')!.examples[0]!);
  p.repository = { ...p.repository, ...github.repositoryJson(REPO) };
  p.installation = { id: INSTALLATION, node_id: 'MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uNzg=' };
  p.ref = ref;
  p.deleted = false;
  return Object.assign(p, extra);
}

async function deliver(body: unknown, delivery = randomUUID()) {
  const text = JSON.stringify(body);
  const res = await fetch(`${t.client.url}/api/webhooks/github`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-github-event': 'push', 'x-github-delivery': delivery, 'x-hub-signature-256': await sign(SECRET, text), 'user-agent': 'GitHub-Hookshot/berth-test' },
    body: text,
  });
  return { status: res.status, delivery };
}

const prebuilds = async () => (await t.api('GET', '/api/orgs/default/projects/gadgets/prebuilds')).body.items as any[];
const outcome = (delivery: string) =>
  waitFor(`delivery ${delivery} handled`, async () => {
    const row = await t.berth.database.db.selectFrom('webhook_deliveries').selectAll().where('delivery_id', '=', delivery).executeTakeFirst();
    return row && (row as any).outcome && (row as any).outcome !== 'pending' ? String((row as any).outcome) : null;
  });

test('a push to the default branch queues one prebuild per delivery; other branches, deletions and opting out queue none', async () => {
  const first = await deliver(pushPayload('refs/heads/main'));
  assert.ok(first.status >= 200 && first.status < 300, String(first.status));
  assert.match(await outcome(first.delivery), /prebuild queued: pbd_/);
  const built = await waitFor('the pushed prebuild', async () => {
    const [p] = await prebuilds();
    return p && (p.state === 'ready' || p.state === 'failed') ? p : null;
  }, 120_000);
  assert.equal(built.state, 'ready', built.stateReason);
  assert.equal(built.trigger, 'push');
  assert.equal(built.createdBy, 'github');
  // GitHub redelivers: the same id is taken once.
  await deliver(pushPayload('refs/heads/main'), first.delivery);
  assert.equal((await prebuilds()).length, 1);

  assert.match(await outcome((await deliver(pushPayload('refs/heads/feature'))).delivery), /ignored: no project of acme\/gadgets prebuilds on a push to feature/);
  assert.match(await outcome((await deliver(pushPayload('refs/heads/main', { deleted: true }))).delivery), /ignored: refs\/heads\/main was deleted/);
  assert.equal((await t.api('PATCH', '/api/orgs/default/projects/gadgets', { prebuild: { onPush: false } })).status, 200);
  assert.match(await outcome((await deliver(pushPayload('refs/heads/main'))).delivery), /ignored: no project/);
  assert.equal((await prebuilds()).length, 1);
});

test('a GitLab push to the default branch queues that project\'s prebuild once, as GitHub\'s does', async () => {
  const GL_TOKEN = 'glpat-push-tests-0123456789';
  const HOOK_TOKEN = 'gitlab-hook-secret-for-the-push-tests';
  gitlab = await startFakeGitLab({ tokens: [GL_TOKEN] });
  // The same path as the GitHub repository: only the GitLab one's project is matched.
  const { sha } = await gitlab.createRepo(REPO, { 'README.md': 'gadgets on gitlab\n', 'berth.yaml': 'setup:\n  - echo set up > .ready\n' });
  const pusher = gitlab.addUser('alice');
  await writeFile(join(dir, 'gl-token'), `${GL_TOKEN}\n`);
  await writeFile(join(dir, 'gl-hook-token'), `${HOOK_TOKEN}\n`);
  let r = await t.cli(['secret', 'set', 'GITLAB_TOKEN'], { input: GL_TOKEN });
  assert.equal(r.code, 0, r.stderr);
  r = await t.cli(['project', 'create', 'gl-gadgets', '--repo', gitlab.repoUrl(REPO), '--forge', 'gitlab', '--forge-url', gitlab.apiUrl, '--token-secret', 'GITLAB_TOKEN']);
  assert.equal(r.code, 0, r.stderr);
  r = await t.cli(['integration', 'gitlab', '--url', gitlab.url, '--token-file', join(dir, 'gl-token'), '--webhook-token-file', join(dir, 'gl-hook-token')]);
  assert.equal(r.code, 0, r.stderr);

  const zero = '0'.repeat(40);
  const hookUrl = `${t.client.url}/api/webhooks/gitlab`;
  const push = (ref: string, after = sha, before = 'a'.repeat(40)) => gitlab!.pushHook(REPO, pusher, { ref, before, after });
  const deliver = async (payload: Record<string, unknown>, o: { uuid?: string; idempotencyKey?: string } = {}) => {
    const res = await gitlab!.deliver(hookUrl, payload, { token: HOOK_TOKEN, ...o });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    return res.uuid!;
  };
  const glPrebuilds = async () => (await t.api('GET', '/api/orgs/default/projects/gl-gadgets/prebuilds')).body.items as any[];
  const githubsBefore = (await prebuilds()).length;

  const key = randomUUID();
  const first = await deliver(push('refs/heads/main'), { idempotencyKey: key });
  assert.match(await outcome(first), /prebuild queued: pbd_/);
  const built = await waitFor('the GitLab-pushed prebuild', async () => {
    const [p] = await glPrebuilds();
    return p && (p.state === 'ready' || p.state === 'failed') ? p : null;
  }, 120_000);
  assert.equal(built.state, 'ready', built.stateReason);
  assert.equal(built.trigger, 'push');
  assert.equal(built.createdBy, 'gitlab');
  assert.equal((await prebuilds()).length, githubsBefore, 'the GitHub project of the same path is not another GitLab project');
  // A retry keeps the event UUID; "Resend request" sends a new one with the old idempotency key.
  const again = await gitlab.deliver(hookUrl, push('refs/heads/main'), { token: HOOK_TOKEN, uuid: first, idempotencyKey: key });
  assert.deepEqual(again.body, { duplicate: first });
  const resent = await gitlab.deliver(hookUrl, push('refs/heads/main'), { token: HOOK_TOKEN, idempotencyKey: key });
  assert.equal(resent.body.duplicate, resent.uuid);
  assert.equal((await glPrebuilds()).length, 1);

  assert.match(await outcome(await deliver(push('refs/heads/feature'))), /ignored: no project of acme\/gadgets prebuilds on a push to feature/);
  assert.match(await outcome(await deliver(push('refs/heads/main', zero, sha))), /ignored: refs\/heads\/main was deleted/);
  // Not a push as GitLab sends one: refused, nothing kept.
  for (const bad of [{ ...push('refs/heads/main'), after: 'HEAD' }, { ...push('refs/heads/main'), ref: 'main' }, { ...push('refs/heads/main'), project: { id: 1, path_with_namespace: REPO } }]) {
    const res = await gitlab.deliver(hookUrl, bad, { token: HOOK_TOKEN });
    assert.equal(res.status, 400, JSON.stringify(res.body));
    assert.equal(await t.berth.triggers.deps.deliveries.get('gitlab', res.uuid!), null);
  }
  assert.equal((await t.api('PATCH', '/api/orgs/default/projects/gl-gadgets', { prebuild: { onPush: false } })).status, 200);
  assert.match(await outcome(await deliver(push('refs/heads/main'))), /ignored: no project/);
  assert.equal((await glPrebuilds()).length, 1);
  assert.equal((await prebuilds()).length, githubsBefore);
});
