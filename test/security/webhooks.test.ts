// Every public webhook route (GitHub, GitLab, Slack commands and events, generic triggers) takes
// hostile bodies from whoever holds its secret, or from anyone: whatever arrives gets a 2xx or a
// 4xx, never a 5xx, and nothing a database cannot hold is stored. The rule this holds everywhere:
// a payload bound for jsonb is made storable on the way in (NUL and unpaired surrogates
// replaced, too deep a 400: src/server/triggers/payload.ts), whichever source it came from; before
// it, a Slack message or generic payload with a NUL in it was a 500 on PostgreSQL.
// sandbox: none (test/fakes/fake-runner.ts; scripts/test.ts runs these more at once)
import assert from 'node:assert/strict';
import { createHmac, generateKeyPairSync } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { signDelivery } from '../../src/server/triggers/webhooks/verify.ts';
import { startTestBerth, type TestBerth } from '../helpers.ts';

const GITHUB_SECRET = 'github-webhook-secret-0123456789';
const GITLAB_TOKEN = 'gitlab-webhook-token-0123456789';
const SLACK_SECRET = 'slack-signing-secret-0123456789';

let t: TestBerth;
let trigger: { id: string; secret: string };

before(async () => {
  t = await startTestBerth({ fake: true, taskConcurrency: 0 });
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
  const set = async (kind: string, settings: unknown, secrets: Record<string, string>) => assert.equal((await t.api('PUT', `/api/integrations/${kind}`, { settings, secrets })).status, 200, kind);
  await set('github', { appId: '4242', botLogin: 'berth[bot]', apiUrl: 'http://127.0.0.1:9/api/v3' }, { privateKey, webhookSecret: GITHUB_SECRET });
  await set('gitlab', { url: 'http://127.0.0.1:9' }, { token: 'glpat-unused', webhookToken: GITLAB_TOKEN });
  await set('slack', { apiUrl: 'http://127.0.0.1:9/api/' }, { signingSecret: SLACK_SECRET, botToken: 'xoxb-unused' });
  const p = await t.api('POST', '/api/orgs/default/projects', { name: 'hooks', repoUrl: 'https://github.com/acme/hooks.git', agent: { kind: 'command', command: 'true' } });
  assert.equal(p.status, 201, JSON.stringify(p.body));
  const made = await t.api('POST', '/api/orgs/default/triggers', { name: 'hostile', project: 'hooks', goalTemplate: 'Look at {{body.text}}' });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  trigger = made.body;
});

after(async () => {
  await t?.destroy();
});

interface Route {
  name: string;
  /** Headers that authenticate `body` on this route (signed over its bytes where the route signs). */
  headers(body: string): Promise<Record<string, string>>;
  path: () => string;
  /** A body of the route's own kind carrying `text` where a sender writes free text. */
  carrying(text: string): string;
}

const json = { 'content-type': 'application/json' };
const slackHeaders = (body: string, type: string) => {
  const ts = String(Math.floor(Date.now() / 1000));
  return { 'content-type': type, 'x-slack-request-timestamp': ts, 'x-slack-signature': `v0=${createHmac('sha256', SLACK_SECRET).update(`v0:${ts}:${body}`).digest('hex')}` };
};
let n = 0;
const id = () => `hostile-${process.pid}-${++n}`;

const ROUTES: Route[] = [
  {
    name: 'GitHub',
    path: () => '/api/webhooks/github',
    headers: async (body) => ({ ...json, 'x-github-event': 'issue_comment', 'x-github-delivery': id(), 'x-hub-signature-256': `sha256=${createHmac('sha256', GITHUB_SECRET).update(body).digest('hex')}` }),
    carrying: (text) => JSON.stringify({ action: 'created', comment: { id: 1, body: `/berth ${text}`, user: { login: 'mallory', type: 'User' } }, issue: { number: 1, title: text, body: text, user: { login: 'mallory' } }, repository: { full_name: 'acme/hooks', clone_url: 'https://github.com/acme/hooks.git', html_url: 'https://github.com/acme/hooks' }, sender: { login: 'mallory', type: 'User' }, installation: { id: 1 } }),
  },
  {
    name: 'GitLab',
    path: () => '/api/webhooks/gitlab',
    headers: async () => ({ ...json, 'x-gitlab-event': 'Note Hook', 'x-gitlab-event-uuid': id(), 'x-gitlab-token': GITLAB_TOKEN }),
    carrying: (text) => JSON.stringify({ object_kind: 'note', event_type: 'note', user: { id: 1, username: 'mallory', name: text }, project: { id: 1, path_with_namespace: 'acme/hooks', web_url: 'https://gitlab.com/acme/hooks' }, object_attributes: { id: 1, note: `/berth ${text}`, noteable_type: 'Issue' }, issue: { iid: 1, title: text } }),
  },
  {
    name: 'Slack command',
    path: () => '/api/webhooks/slack/commands',
    headers: async (body) => slackHeaders(body, 'application/x-www-form-urlencoded'),
    carrying: (text) => new URLSearchParams({ command: '/berth', text, team_id: 'T1', user_id: 'U1', channel_id: 'C1', trigger_id: id(), response_url: 'http://127.0.0.1:9/r' }).toString(),
  },
  {
    name: 'Slack event',
    path: () => '/api/webhooks/slack/events',
    headers: async (body) => slackHeaders(body, 'application/json'),
    carrying: (text) => JSON.stringify({ type: 'event_callback', team_id: 'T1', event_id: id(), event: { type: 'app_mention', user: 'U1', text: `<@UBOT> ${text}`, channel: 'C1', ts: '1700000000.000100' } }),
  },
  {
    name: 'generic trigger',
    path: () => `/api/webhooks/triggers/${trigger.id}`,
    headers: async (body) => ({ ...json, 'x-berth-delivery': id(), 'x-berth-signature-256': signDelivery(trigger.secret, body) }),
    carrying: (text) => JSON.stringify({ text, [`key${text}`]: text }),
  },
];

/** Nested 200 deep, deeper than any event a service sends. */
const deep = (route: Route) => (route.name === 'Slack command' ? route.carrying('('.repeat(10_000)) : route.carrying('x').replace(/}$/, `, "deep": ${'['.repeat(200)}${']'.repeat(200)}}`));

async function post(route: Route, body: string, headers?: Record<string, string>) {
  const res = await fetch(`${t.client.url}${route.path()}`, { method: 'POST', headers: headers ?? (await route.headers(body)), body });
  return { status: res.status, text: await res.text() };
}

describe('hostile webhook bodies: a 2xx or a 4xx, never a 5xx, nothing unstorable kept', () => {
  for (const route of ROUTES) {
    test(route.name, async () => {
      const bodies: [string, string][] = [
        ['a NUL in the text', route.carrying('a\u0000b')],
        ['an unpaired surrogate', route.carrying('\ud800 alone')],
        ['nested 200 deep', deep(route)],
        ['not JSON', '{"unterminated'],
        ['empty', ''],
      ];
      for (const [what, body] of bodies) {
        const r = await post(route, body);
        assert.ok(r.status >= 200 && r.status < 500, `${route.name}, ${what}: ${r.status} ${r.text.slice(0, 300)}`);
      }
      // Unsigned, the same bodies are refused before anything is read into the database.
      const unsigned = await post(route, route.carrying('a\u0000b'), { ...json });
      assert.ok([401, 404].includes(unsigned.status), `${route.name} unsigned: ${unsigned.status}`);
      await t.berth.triggers.deps.queue.idle();
      const stored = await t.berth.database.db.selectFrom('webhook_deliveries').select(['source', 'payload']).execute();
      for (const row of stored) {
        const text = JSON.stringify(row.payload);
        assert.ok(!text.includes('\\u0000') && !/\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f])/i.test(text), `${row.source} kept an unstorable string: ${text.slice(0, 200)}`);
      }
    });
  }
});
