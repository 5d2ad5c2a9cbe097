// Egress policies (org, project, environment: the narrowest that sets a field wins),
// egress-only secrets, and the record of what environments' egress proxies did.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { checkDomain } from '../src/server/policy/domains.ts';
import { PolicyService } from '../src/server/policy/index.ts';
import { resolvePolicy, wideningOf, EMPTY_FIELDS } from '../src/server/policy/resolve.ts';
import { SecretBox } from '../src/server/secrets/crypto.ts';
import { SecretService } from '../src/server/secrets/service.ts';
import type { NetworkEvent } from '../src/server/policy/types.ts';
import { AuditLog } from '../src/server/audit/index.ts';
import { TaskEvents } from '../src/server/tasks/index.ts';
import { NetworkEventRecorder, retentionFrom, sweepNetworkEvents, DEFAULT_RETENTION_MS } from '../src/server/network-events/index.ts';
import { startTestBerth, type TestBerth } from './helpers.ts';

let t: TestBerth;
const tokens: Record<string, string> = {};
const as = (token: string) => async (method: string, path: string, body?: unknown) => {
  const res = await fetch(`${t.client.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
};
const policyFor = (id: string) => t.berth.app.policies.policyFor(id);

before(async () => {
  t = await startTestBerth();
  for (const role of ['viewer', 'member', 'admin']) {
    tokens[role] = (await t.api('POST', '/api/orgs/default/tokens', { role, name: `policy-${role}` })).body.token;
  }
});
after(async () => {
  await t?.destroy();
});

describe('domains', () => {
  test('exact names and leading wildcards pass, in lower case; everything else is a clear 400', () => {
    assert.equal(checkDomain('Registry.NPMjs.org'), 'registry.npmjs.org');
    assert.equal(checkDomain('*.example.com'), '*.example.com');
    assert.equal(checkDomain('xn--bcher-kva.example'), 'xn--bcher-kva.example');
    const refused: [string, RegExp][] = [
      ['https://example.com', /without a scheme \(example\.com\)/],
      ['example.com/path', /without a path/],
      ['example.com:443', /ports/],
      ['10.0.0.1', /IP addresses/],
      ['[::1]', /IP addresses/],
      ['::1', /IP addresses/],
      ['a.*.example.com', /only be the whole first label/],
      ['*example.com', /only be the whole first label/],
      ['*.com', /at least two labels/],
      ['localhost', /full domain name/],
      ['exa_mple.com', /not a valid label/],
      ['-bad.example.com', /not a valid label/],
      ['example.com.', /trailing dot/],
      ['', /empty/],
    ];
    for (const [input, why] of refused) assert.throws(() => checkDomain(input), (err: Error) => why.test(err.message), input);
  });

  test('the narrowest scope that sets a field wins it; nothing set denies everything', () => {
    assert.deepEqual(resolvePolicy([]), { allowDomains: [], presets: [], allowPorts: null, allowMethods: null, maxConnections: 256, credentials: [], scope: 'default' });
    const org = { scope: 'org', fields: { ...EMPTY_FIELDS, allowDomains: ['org.example.com'], maxConnections: 50, allowMethods: ['GET'] } };
    const project = { scope: 'project:web', fields: { ...EMPTY_FIELDS, presets: ['npm'], allowPorts: [443] } };
    const env = { scope: 'environment', fields: { ...EMPTY_FIELDS, allowDomains: ['env.example.com'] } };
    const p = resolvePolicy([env, project, org]);
    assert.deepEqual([p.scope, p.allowDomains, p.presets, p.allowPorts, p.allowMethods, p.maxConnections], ['environment', ['env.example.com'], [], [443], ['GET'], 50]);
    const q = resolvePolicy([{ scope: 'environment', fields: EMPTY_FIELDS }, project, org]);
    assert.deepEqual([q.scope, q.allowDomains, q.presets], ['project:web', [], ['npm']]);
    // Narrowing is checked against what is inherited, presets and wildcards included.
    const inherited = resolvePolicy([{ scope: 'org', fields: { ...EMPTY_FIELDS, allowDomains: ['*.example.com'], presets: ['npm'] } }]);
    assert.equal(wideningOf({ ...EMPTY_FIELDS, allowDomains: ['a.example.com', '*.b.example.com', 'registry.npmjs.org'] }, inherited), null);
    assert.match(wideningOf({ ...EMPTY_FIELDS, allowDomains: ['example.com'] }, inherited)!, /example\.com is not allowed/);
    assert.match(wideningOf({ ...EMPTY_FIELDS, allowPorts: [22] }, inherited)!, /port 22/);
    assert.match(wideningOf({ ...EMPTY_FIELDS, maxConnections: 1000 }, inherited)!, /more than 256/);
  });
});

describe('policies', () => {
  test('set, show and clear with the CLI; the environment gets the narrowest scope', async () => {
    assert.equal((await t.cli(['project', 'create', 'web', '--repo', 'http://127.0.0.1:9/acme/app.git', '--allow-domain', 'work.example.org'])).code, 0);
    const plain = (await t.api('POST', '/api/orgs/default/environments', { name: 'plain' })).body;
    const inWeb = (await t.api('POST', '/api/orgs/default/environments', { name: 'in-web', project: 'web' })).body;
    assert.equal(plain.state, 'running', JSON.stringify(plain));
    // Nothing set anywhere: deny all (the project's work.allowDomains is its own list).
    assert.deepEqual(policyFor(plain.id).allowDomains, []);
    assert.equal(policyFor(plain.id).scope, 'default');
    assert.deepEqual(policyFor(inWeb.id).allowDomains, ['work.example.org']);

    let r = await t.cli(['policy', 'set', '--allow-domain', 'api.example.com', '*.corp.example', '--preset', 'npm', 'pypi', '--max-connections', '64']);
    assert.equal(r.code, 0, r.stderr);
    // In effect in this process the moment the call returns.
    assert.deepEqual(policyFor(plain.id).allowDomains, ['api.example.com', '*.corp.example']);
    assert.deepEqual(policyFor(plain.id).presets, ['npm', 'pypi']);
    assert.equal(policyFor(plain.id).maxConnections, 64);
    assert.equal(policyFor(plain.id).scope, 'org');

    r = await t.cli(['policy', 'set', '--project', 'web', '--allow-domain', 'cdn.example.net', '--port', '443', '8443', '--method', 'get', 'HEAD']);
    assert.equal(r.code, 0, r.stderr);
    const web = policyFor(inWeb.id);
    assert.deepEqual([web.scope, web.allowDomains, web.presets, web.allowPorts, web.allowMethods, web.maxConnections], ['project:web', ['cdn.example.net', 'work.example.org'], [], [443, 8443], ['GET', 'HEAD'], 64]);

    r = await t.cli(['policy', 'set', '--env', 'in-web', '--allow-domain', 'only.example.com']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual([policyFor(inWeb.id).scope, policyFor(inWeb.id).allowDomains, policyFor(inWeb.id).allowPorts], ['environment', ['only.example.com'], [443, 8443]]);

    const show = await t.cli(['policy', 'show', '--env', 'in-web']);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /from\s+environment/);
    assert.match(show.stdout, /domains\s+only\.example\.com/);
    assert.match(show.stdout, /ports\s+443, 8443/);
    const shown = JSON.parse((await t.cli(['policy', 'show', '--project', 'web', '--json'])).stdout);
    assert.equal(shown.effective.scope, 'project:web');
    assert.deepEqual(shown.own.allowDomains, ['cdn.example.net']);
    const listed = await t.cli(['policy', 'list']);
    assert.match(listed.stdout, /^org\s+api\.example\.com/m);
    assert.match(listed.stdout, /^project:web\s+cdn\.example\.net/m);
    assert.match(listed.stdout, new RegExp(`^environment:${inWeb.id}\\s+only\\.example\\.com`, 'm'));

    r = await t.cli(['policy', 'set', '--project', 'web', '--unset', 'ports']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(policyFor(inWeb.id).allowPorts, null);
    assert.equal((await t.cli(['policy', 'clear', '--env', 'in-web'])).code, 0);
    assert.equal(policyFor(inWeb.id).scope, 'project:web');
    const again = await t.cli(['policy', 'clear', '--env', 'in-web']);
    assert.equal(again.code, 3, 'not found');
    assert.match(again.stderr, /has no policy of its own/);

    // Changes are on record.
    const audit = await t.api('GET', '/api/orgs/default/audit?action=policy.set');
    assert.ok(audit.body.items.length >= 3);
  });

  test('bad input is a 400 that names the field and says why', async () => {
    const cases: [unknown, RegExp][] = [
      [{ allowDomains: ['https://x.example.com/'] }, /without a scheme/],
      [{ allowDomains: ['192.168.1.1'] }, /IP addresses/],
      [{ allowDomains: ['foo.*.example.com'] }, /first label/],
      [{ presets: ['maven'] }, /no preset 'maven': the presets are npm, pypi/],
      [{ allowPorts: [0] }, /not a port/],
      [{ allowPorts: [70000] }, /not a port/],
      [{ allowMethods: ['FETCH'] }, /not an HTTP method/],
      [{ maxConnections: 0 }, /whole number from 1/],
      [{ unknownField: 1 }, /unknownField/],
    ];
    for (const [body, why] of cases) {
      const res = await t.api('PATCH', '/api/orgs/default/policies/org', body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.match(res.body.error.message, why, JSON.stringify(res.body));
    }
    const cli = await t.cli(['policy', 'set', '--allow-domain', 'http://example.com']);
    assert.equal(cli.code, 2, 'a usage error');
    assert.match(cli.stderr, /--allow-domain: .*without a scheme/);
    assert.doesNotMatch(cli.stderr, /at .*\.ts/, 'no stack trace');
    assert.equal((await t.api('PATCH', '/api/orgs/default/policies/projects/nope', { maxConnections: 5 })).status, 404);
    assert.equal((await t.api('PATCH', '/api/orgs/default/policies/environments/env_nope', { maxConnections: 5 })).status, 404);
  });

  test('admins change org and project policies; members may only narrow an environment\'s', async () => {
    const env = (await t.api('POST', '/api/orgs/default/environments', { name: 'roles', project: 'web' })).body;
    const viewer = as(tokens.viewer!);
    const member = as(tokens.member!);
    const admin = as(tokens.admin!);
    assert.equal((await viewer('GET', '/api/orgs/default/policies')).status, 200);
    assert.equal((await viewer('PATCH', `/api/orgs/default/policies/environments/${env.id}`, { maxConnections: 1 })).status, 403);
    assert.equal((await member('PATCH', '/api/orgs/default/policies/org', { allowDomains: [] })).status, 403);
    assert.equal((await member('PATCH', '/api/orgs/default/policies/projects/web', { allowDomains: [] })).status, 403);
    assert.equal((await member('DELETE', '/api/orgs/default/policies/org')).status, 403);
    // The project allows cdn.example.net and work.example.org.
    const narrow = await member('PATCH', `/api/orgs/default/policies/environments/${env.id}`, { allowDomains: ['cdn.example.net'], maxConnections: 8 });
    assert.equal(narrow.status, 200, JSON.stringify(narrow.body));
    assert.deepEqual(policyFor(env.id).allowDomains, ['cdn.example.net']);
    const wide = await member('PATCH', `/api/orgs/default/policies/environments/${env.id}`, { allowDomains: ['evil.example.com'] });
    assert.equal(wide.status, 403);
    assert.match(wide.body.error.message, /evil\.example\.com is not allowed by the project:web policy: members may only narrow/);
    assert.equal((await member('PATCH', `/api/orgs/default/policies/environments/${env.id}`, { maxConnections: 100 })).status, 403);
    assert.equal((await member('PATCH', `/api/orgs/default/policies/environments/${env.id}`, { allowPorts: [22] })).status, 403);
    assert.deepEqual(policyFor(env.id).allowDomains, ['cdn.example.net'], 'a refused change changes nothing');
    const widened = await admin('PATCH', `/api/orgs/default/policies/environments/${env.id}`, { allowDomains: ['evil.example.com'] });
    assert.equal(widened.status, 200);
    assert.deepEqual(policyFor(env.id).allowDomains, ['evil.example.com']);

    // At create, a member's list may only narrow too; an admin's may widen, as a PATCH may.
    const created = await member('POST', '/api/orgs/default/environments', { name: 'narrow-at-create', project: 'web', allowDomains: ['work.example.org'] });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.deepEqual([policyFor(created.body.id).scope, policyFor(created.body.id).allowDomains], ['environment', ['work.example.org']]);
    const refused = await member('POST', '/api/orgs/default/environments', { name: 'wide-at-create', project: 'web', allowDomains: ['other.example.com'] });
    assert.equal(refused.status, 400);
    assert.match(refused.body.error.message, /other\.example\.com is not allowed by the project:web policy: a member's --allow-domain may only narrow it/);
    assert.equal((await t.api('GET', '/api/orgs/default/environments/wide-at-create')).status, 404, 'nothing was made');
    const adminWide = await admin('POST', '/api/orgs/default/environments', { name: 'admin-wide-at-create', project: 'web', allowDomains: ['other.example.com'] });
    assert.equal(adminWide.status, 201, JSON.stringify(adminWide.body));
    assert.deepEqual(policyFor(adminWide.body.id).allowDomains, ['other.example.com']);
    assert.equal((await admin('POST', '/api/orgs/default/environments', { name: 'bad-at-create', allowDomains: ['ftp://x.example.com'] })).status, 400);
    const cli = await t.cli(['env', 'create', '--name', 'cli-narrow', '--project', 'web', '--allow-domain', 'cdn.example.net']);
    assert.equal(cli.code, 0, cli.stderr);
    assert.deepEqual(policyFor(cli.stdout.trim()).allowDomains, ['cdn.example.net']);
  });

  test('a change made elsewhere (another replica) is seen by policyFor within a second', async () => {
    const env = (await t.api('POST', '/api/orgs/default/environments', { name: 'replica' })).body;
    // A second policy cache on the same database stands in for another replica's runner.
    const db = t.berth.database.db;
    const other = new PolicyService({ db, secrets: new SecretService({ db, box: SecretBox.load({ env: process.env, dataDir: t.dataDir }) }), logger: pino({ level: 'silent' }) });
    await other.start();
    try {
      assert.equal(other.policyFor(env.id).maxConnections, 64);
      const changed = Date.now();
      assert.equal((await t.api('PATCH', '/api/orgs/default/policies/org', { maxConnections: 33 })).status, 200);
      while (other.policyFor(env.id).maxConnections !== 33) {
        assert.ok(Date.now() - changed < 1500, 'not seen within a second');
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.ok(Date.now() - changed <= 1100, `seen after ${Date.now() - changed} ms`);
    } finally {
      other.close();
    }
  });
});

describe('egress-only secrets', () => {
  test('never an environment variable; in the policy as a header for their host', async () => {
    const VALUE = 'tok-egress-8c1f2e9d7b';
    // The project names the org's ORG_KEY: an org secret it does not name is not its to use.
    assert.equal((await t.cli(['project', 'create', 'api-users', '--repo', 'http://127.0.0.1:9/acme/app.git', '--secret', 'ORG_KEY'])).code, 0);
    let r = await t.cli(['secret', 'set', 'API_TOKEN', '--project', 'api-users', '--egress-only', '--host', 'api.example.com', '--path-prefix', '/v1'], { input: VALUE });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /egress-only, for api\.example\.com/);
    r = await t.cli(['secret', 'set', 'PLAIN', '--project', 'api-users'], { input: 'plain-value' });
    assert.equal(r.code, 0, r.stderr);
    r = await t.cli(['secret', 'set', 'ORG_KEY', '--egress-only', '--host', 'other.example.com', '--header', 'X-Api-Key', '--format', '{value}'], { input: 'org-key-value' });
    assert.equal(r.code, 0, r.stderr);
    // Bad markings are refused before anything is stored.
    assert.equal((await t.api('PUT', '/api/orgs/default/secrets/BAD', { value: 'x', egress: { host: '*.example.com' } })).status, 400);
    assert.equal((await t.api('PUT', '/api/orgs/default/secrets/BAD', { value: 'x', egress: { host: 'a.example.com', format: 'no placeholder' } })).status, 400);
    assert.equal((await t.api('PUT', '/api/orgs/default/secrets/BAD', { value: 'x', egress: { host: 'a.example.com', header: 'Host' } })).status, 400);
    assert.equal((await t.cli(['secret', 'set', 'BAD', '--egress-only'], { input: 'x' })).code, 2);

    const env = (await t.api('POST', '/api/orgs/default/environments', { name: 'egress-env', project: 'api-users' })).body;
    const out = (await t.api('POST', `/api/orgs/default/environments/${env.id}/exec`, { cmd: ['sh', '-c', 'env'] })).body;
    assert.equal(out.exitCode, 0);
    assert.match(out.stdout, /^PLAIN=\[secret:PLAIN\]$/m, 'plain secrets still arrive');
    assert.doesNotMatch(out.stdout, /API_TOKEN|ORG_KEY|tok-egress|org-key-value/);

    const creds = policyFor(env.id).credentials.sort((a, b) => a.name.localeCompare(b.name));
    assert.deepEqual(creds, [
      { host: 'api.example.com', pathPrefix: '/v1', header: 'Authorization', value: `Bearer ${VALUE}`, name: 'API_TOKEN' },
      { host: 'other.example.com', pathPrefix: '/', header: 'X-Api-Key', value: 'org-key-value', name: 'ORG_KEY' },
    ]);
    // Setting the value again without --egress-only keeps the marking.
    assert.equal((await t.cli(['secret', 'set', 'API_TOKEN', '--project', 'api-users'], { input: 'rotated' })).code, 0);
    assert.equal(policyFor(env.id).credentials.find((c) => c.name === 'API_TOKEN')?.value, 'Bearer rotated');
    const again = (await t.api('POST', `/api/orgs/default/environments/${env.id}/exec`, { cmd: ['sh', '-c', 'env'] })).body;
    assert.doesNotMatch(again.stdout, /API_TOKEN|rotated/);
    // The API shows where they go, never their values.
    const everything = JSON.stringify([(await t.api('GET', '/api/orgs/default/secrets')).body, (await t.api('GET', `/api/orgs/default/policies/effective?environment=${env.id}`)).body]);
    assert.doesNotMatch(everything, /tok-egress|rotated|org-key-value/);
    assert.match(everything, /"host":"api\.example\.com"/);
    // Environments without a project get no credentials, as they get no secrets.
    const plain = (await t.api('POST', '/api/orgs/default/environments', { name: 'no-project' })).body;
    assert.deepEqual(policyFor(plain.id).credentials, []);
  });
});

describe('network events', () => {
  const event = (environmentId: string, over: Partial<NetworkEvent> = {}): NetworkEvent => ({
    environmentId,
    at: new Date().toISOString(),
    kind: 'http',
    host: 'registry.npmjs.org',
    port: 443,
    method: 'GET',
    path: '/left-pad',
    allowed: true,
    rule: 'allow:org:preset:npm',
    status: 200,
    bytesUp: 312,
    bytesDown: 48_000,
    durationMs: 41,
    ...over,
  });

  /** A task row of another runner, running in the environment: its transcript is where the environment's denials go. */
  const runningTaskIn = async (environmentId: string, taskId: string) => {
    const orgId = (await t.api('GET', '/api/orgs')).body.items.find((o: { name: string }) => o.name === 'default').id;
    await t.berth.database.db
      .insertInto('tasks')
      .values({
        id: taskId, org_id: orgId, project_id: null, repo_url: 'https://example.invalid/x.git', base_branch: null, goal: 'network test', agent: 'builtin', command: null, model: null,
        budget: JSON.stringify({ maxSteps: 1, maxTokens: null, maxCostUsd: null, timeoutMs: 60_000, maxCheckRetries: 0 }), check_command: null, state: 'running', state_reason: null,
        step: 'agent', trigger: 'api', created_by: 'test', runner_id: 'elsewhere', environment_id: environmentId, branch: null, base_sha: null, head_sha: null, change_request: null,
        checks_passed: null, summary: null, diff: null,
      } as never)
      .execute();
    return taskId;
  };

  test('stored in batches, listed by the CLI; denials reach the audit log and the task transcript', async () => {
    const env = (await t.api('POST', '/api/orgs/default/environments', { name: 'chatty' })).body;
    const sink = t.berth.app.networkEvents;
    const start = Date.now();
    // A burst like a busy proxy's: recording never waits on the database.
    for (let i = 0; i < 2000; i++) sink.record(event(env.id, { path: `/pkg-${i}`, at: new Date(start - 60_000 + i).toISOString() }));
    assert.ok(Date.now() - start < 200, `record() took ${Date.now() - start} ms for 2000 events`);
    sink.record(event(env.id, { kind: 'connect', host: 'evil.example.com', port: 443, method: null, path: null, allowed: false, rule: 'deny:org:not-allowed', status: null, bytesUp: 0, bytesDown: 0, durationMs: 0 }));
    sink.record(event('env_notours00000', { allowed: false }));
    await sink.flush();
    const count = await t.berth.database.db.selectFrom('network_events').select((eb) => eb.fn.countAll<string>().as('n')).where('environment_id', '=', env.id).executeTakeFirstOrThrow();
    assert.equal(Number(count.n), 2001);

    const cli = await t.cli(['env', 'network', 'chatty', '--limit', '3']);
    assert.equal(cli.code, 0, cli.stderr);
    const lines = cli.stdout.trim().split('\n');
    assert.match(lines[0]!, /^TIME\s+METHOD\s+HOST\s+PATH\s+RESULT\s+RULE\s+UP\s+DOWN\s+DURATION$/);
    assert.equal(lines.length, 4);
    assert.match(cli.stdout, /CONNECT\s+evil\.example\.com:443\s+-\s+DENIED\s+deny:org:not-allowed/);
    assert.match(cli.stdout, /GET\s+registry\.npmjs\.org:443\s+\/pkg-1999\s+allowed 200\s+allow:org:preset:npm\s+312B\s+46\.9K\s+41ms/);
    const denied = JSON.parse((await t.cli(['env', 'network', env.id, '--denied', '--json'])).stdout);
    assert.equal(denied.length, 1);
    assert.equal(denied[0].host, 'evil.example.com');

    const audit = await t.api('GET', `/api/orgs/default/audit?action=network.denied&environment=${env.id}`);
    assert.equal(audit.body.items.length, 1);
    assert.equal(audit.body.items[0].actor, `environment:${env.id}`);
    assert.equal(audit.body.items[0].target, 'evil.example.com:443');
    assert.equal(audit.body.items[0].details.rule, 'deny:org:not-allowed');

    // An environment of a task: its denials go into the task's transcript.
    const taskEnv = (await t.api('POST', '/api/orgs/default/environments', { name: 'task-env' })).body;
    const taskId = await runningTaskIn(taskEnv.id, 'tsk_networktest01');
    sink.record(event(taskEnv.id, { host: 'pastebin.example.com', path: '/upload', method: 'POST', allowed: false, rule: 'deny:default:not-allowed', status: 403 }));
    sink.record(event(taskEnv.id));
    await sink.flush();
    const transcript = await t.berth.database.db.selectFrom('task_events').select('data').where('task_id', '=', taskId).execute();
    assert.deepEqual(transcript.map((e) => e.data), [
      { type: 'network', allowed: false, host: 'pastebin.example.com', port: 443, method: 'POST', path: '/upload', rule: 'deny:default:not-allowed' },
    ]);
    const api = await t.api('GET', `/api/orgs/default/environments/${taskEnv.id}/network`);
    assert.equal(api.status, 200);
    assert.equal(api.body.items.length, 2);
  });
  test("a direct connection the firewall refuses is an event with its destination, port and rule: in the CLI, the API and the audit log", async () => {
    const env = (await t.api('POST', '/api/orgs/default/environments', { name: 'direct' })).body;
    assert.equal(env.state, 'running', JSON.stringify(env));
    const r = await t.cli(['env', 'exec', 'direct', '--', 'python3', '-c', "import socket\nfor p in (443, 443, 8443):\n  s=socket.socket();s.settimeout(3)\n  try: s.connect(('1.1.1.1',p))\n  except OSError as e: print(e)"]);
    assert.match(r.stdout, /refused/i, r.stderr);
    let cli = '';
    await until(async () => /TCP\s+1\.1\.1\.1:8443/.test((cli = (await t.cli(['env', 'network', 'direct', '--denied'])).stdout)));
    assert.match(cli, /TCP\s+1\.1\.1\.1:443\s+-\s+DENIED \(\d packets?\)\s+deny:firewall:direct-connection/);
    const api = await t.api('GET', `/api/orgs/default/environments/${env.id}/network?denied=true`);
    // Both attempts on 443 in one event, or in two if a read fell between them.
    const on443 = api.body.items.filter((e: { port: number }) => e.port === 443);
    assert.deepEqual([...new Set(on443.map((e: NetworkEvent) => `${e.kind} ${e.method} ${e.host} ${e.allowed} ${e.rule}`))], ['firewall TCP 1.1.1.1 false deny:firewall:direct-connection']);
    assert.equal(on443.reduce((n: number, e: NetworkEvent) => n + e.packets!, 0), 2);
    await until(async () => (await t.api('GET', `/api/orgs/default/audit?action=network.denied&environment=${env.id}`)).body.items.length === 2);
    const audit = (await t.api('GET', `/api/orgs/default/audit?action=network.denied&environment=${env.id}`)).body.items;
    assert.deepEqual(audit.map((a: { target: string }) => a.target).sort(), ['1.1.1.1:443', '1.1.1.1:8443']);
    assert.ok(audit.every((a: { details: { packets: number } }) => a.details.packets >= 1));
  });

  test('repeats of a denial within a minute are one audit entry and one transcript line with the count; every event stays a row', async () => {
    const env = (await t.api('POST', '/api/orgs/default/environments', { name: 'looping' })).body;
    const taskId = await runningTaskIn(env.id, 'tsk_networkloop01');
    let now = Date.parse('2026-03-01T12:00:00Z');
    const db = t.berth.database.db;
    const logger = pino({ level: 'silent' });
    const audit = new AuditLog({ db, logger });
    const recorder = new NetworkEventRecorder({ db, audit, taskEvents: new TaskEvents(db), logger, flushIntervalMs: 3_600_000, now: () => now });
    const denied = (over: Partial<NetworkEvent> = {}) => event(env.id, { kind: 'connect', host: 'c2.example.com', port: 443, method: null, path: null, allowed: false, rule: 'deny:default:not-allowed', status: null, ...over });
    const auditOf = async () => (await t.api('GET', `/api/orgs/default/audit?action=network.denied&environment=${env.id}`)).body.items.map((a: { target: string; details: Record<string, unknown> }) => [a.target, a.details.rule, a.details.repeated ?? null, a.details.packets ?? null]);
    const transcript = async () => (await t.berth.database.db.selectFrom('task_events').select('data').where('task_id', '=', taskId).orderBy('seq').execute()).map((e) => e.data as { host: string; repeated?: number });

    for (let i = 0; i < 300; i++) recorder.record(denied());
    recorder.record(denied({ port: 8443 }));
    recorder.record(denied({ kind: 'firewall', host: '1.1.1.1', port: 53, method: 'UDP', rule: 'deny:firewall:dns', packets: 3 }));
    recorder.record(denied({ kind: 'firewall', host: '1.1.1.1', port: 53, method: 'UDP', rule: 'deny:firewall:dns', packets: 4 }));
    await recorder.flush();
    const rows = await t.berth.database.db.selectFrom('network_events').select((eb) => eb.fn.countAll<string>().as('n')).where('environment_id', '=', env.id).executeTakeFirstOrThrow();
    assert.equal(Number(rows.n), 303, 'every event is a row');
    assert.deepEqual((await auditOf()).sort(), [['1.1.1.1:53', 'deny:firewall:dns', null, 3], ['c2.example.com:443', 'deny:default:not-allowed', null, null], ['c2.example.com:8443', 'deny:default:not-allowed', null, null]]);
    assert.equal((await transcript()).length, 3);

    // Half a minute on: still the same window.
    now += 30_000;
    for (let i = 0; i < 50; i++) recorder.record(denied());
    await recorder.flush();
    assert.equal((await auditOf()).length, 3);

    // The minute is up: one entry each for the keys that repeated, with the count.
    now += 30_000;
    await recorder.flush();
    const after = await auditOf();
    assert.equal(after.length, 5, JSON.stringify(after));
    assert.ok(after.some(([target, , repeated]: [string, string, number]) => target === 'c2.example.com:443' && repeated === 349));
    assert.ok(after.some(([target, , repeated, packets]: [string, string, number, number]) => target === '1.1.1.1:53' && repeated === 1 && packets === 4));
    const lines = await transcript();
    assert.deepEqual(lines.map((l) => [l.host, l.repeated ?? null]).slice(3).sort(), [['1.1.1.1', 1], ['c2.example.com', 349]]);

    // A new window: the next one is audited at once again; close() writes what is pending.
    recorder.record(denied());
    recorder.record(denied());
    await recorder.flush();
    assert.equal((await auditOf()).length, 6);
    await recorder.close();
    await audit.close();
    const closed = await auditOf();
    assert.equal(closed.length, 7);
    assert.equal(closed.filter(([target, , repeated]: [string, string, number]) => target === 'c2.example.com:443' && repeated === 1).length, 1);
  });

  test('retention: rows past BERTH_NETWORK_EVENT_RETENTION are deleted in bounded batches', async () => {
    assert.equal(retentionFrom(undefined), DEFAULT_RETENTION_MS);
    assert.equal(retentionFrom('30d'), 30 * 86_400_000);
    assert.equal(retentionFrom('12h'), 12 * 3_600_000);
    assert.equal(retentionFrom('off'), null);
    assert.throws(() => retentionFrom('a month'), /BERTH_NETWORK_EVENT_RETENTION must be a duration such as 30d or 12h, or off; got 'a month'/);
    assert.throws(() => retentionFrom('0s'), /must be a duration/);

    const env = (await t.api('POST', '/api/orgs/default/environments', { name: 'aging' })).body;
    const sink = t.berth.app.networkEvents;
    const now = Date.now();
    const day = 86_400_000;
    for (let i = 0; i < 1200; i++) sink.record(event(env.id, { path: `/old-${i}`, at: new Date(now - 40 * day - i * 1000).toISOString() }));
    for (let i = 0; i < 30; i++) sink.record(event(env.id, { path: `/recent-${i}`, at: new Date(now - 29 * day).toISOString() }));
    await sink.flush();
    const paths = async () => (await t.berth.database.db.selectFrom('network_events').select('path').where('environment_id', '=', env.id).execute()).map((r) => r.path!);
    assert.equal((await paths()).length, 1230);
    const deleted = await sweepNetworkEvents(t.berth.database.db, { olderThanMs: 30 * day, now, batch: 500 });
    assert.equal(deleted, 1200);
    const left = await paths();
    assert.equal(left.length, 30);
    assert.ok(left.every((p) => p.startsWith('/recent-')));
    assert.equal(await sweepNetworkEvents(t.berth.database.db, { olderThanMs: 30 * day, now, batch: 500 }), 0, 'nothing more to do');
    // A shorter retention takes the rest.
    assert.equal(await sweepNetworkEvents(t.berth.database.db, { olderThanMs: 12 * 3_600_000, now }), 30);
  });
});

async function until(check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 100));
  }
}
