// Tenancy escapes (issue #11, findings 4, 15 and 17), as the red team ran them: two orgs, a
// member and an admin of org A who are not instance administrators, each with their own
// user token. Each attack is refused, changes nothing, and the refusal is on record.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { RepoAccess } from '../../src/forges/index.ts';
import { TokenService } from '../../src/server/auth.ts';
import { createBareRepo, pushCommit, refSha, runGit } from '../fakes/git-server.ts';
import { startTestBerth, type TestBerth } from '../helpers.ts';

let t: TestBerth;
let root: string;
/** Org B's repository, on the Berth host. */
let orgB: { path: string; sha: string };
/** Org A's own repository. */
let orgA: { path: string; sha: string };
const users: Record<'member' | 'admin', { id: string; token: string }> = {} as never;

/** A call as one of org A's people (user tokens of users who are not instance administrators). */
const as = (who: 'member' | 'admin') => async (method: string, path: string, body?: unknown) => {
  const res = await fetch(`${t.client.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${users[who].token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
};

const taskCount = async () => Number((await t.berth.database.db.selectFrom('tasks').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);
const refusals = async () => (await t.api('GET', '/api/orgs/default/audit?action=repository.refused')).body.items as { actor: string; target: string | null; details: Record<string, unknown> }[];

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'berth-tenancy-repos-'));
  // The instance allows repositories under `root` only, and no private git host at all.
  t = await startTestBerth({ repos: { localRepos: [root], allowedGitHosts: [] }, taskConcurrency: 0 });
  orgA = await createBareRepo({ root, name: 'org-a/app.git', files: { 'README.md': 'org A\n' } });
  orgB = await createBareRepo({ root, name: 'org-b/secret-sauce.git', files: { 'README.md': 'org B only\n' } });

  // The instance administrator (berth up's local administrator) sets both orgs up.
  assert.equal((await t.api('POST', '/api/orgs', { name: 'org-b' })).status, 201);
  let r = await t.api('POST', '/api/orgs/org-b/projects', { name: 'sauce', repoUrl: orgB.path });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  r = await t.api('POST', '/api/orgs/default/projects', { name: 'app', repoUrl: orgA.path });
  assert.equal(r.status, 201, JSON.stringify(r.body));

  const tokens = new TokenService(t.berth.database.db);
  for (const role of ['member', 'admin'] as const) {
    const member = await t.api('PUT', `/api/orgs/default/members/${role}@org-a.example`, { role });
    assert.equal(member.status, 200, JSON.stringify(member.body));
    users[role] = { id: member.body.userId, token: (await tokens.create({ kind: 'user', userId: member.body.userId, name: `${role} of org A` })).token };
  }
});

after(async () => {
  await t?.destroy();
});

describe('finding 4: tasks on any host repository', () => {
  test("a member of org A cannot run a task on org B's repository path, in any spelling; the answer tells nothing about the host", async () => {
    const member = as('member');
    const before = await taskCount();
    const messages = new Set<string>();
    for (const repo of [orgB.path, `file://${orgB.path}`, `${root}/org-a/../org-b/secret-sauce.git`, '/etc', `${root}/no-such-repo.git`]) {
      const r = await member('POST', '/api/orgs/default/tasks', { goal: 'read the other org', repo, agent: 'command', command: 'cat README.md' });
      assert.equal(r.status, 403, `${repo}: ${JSON.stringify(r.body)}`);
      assert.match(r.body.error.message, /instance administrator/);
      messages.add(r.body.error.message);
    }
    // The same words whether the path is org B's repository, a system directory or nothing.
    assert.equal(messages.size, 1, [...messages].join('\n'));
    assert.equal(await taskCount(), before, 'no task was stored');
    const seen = (await refusals()).filter((e) => e.actor === `user:${users.member.id}`);
    assert.ok(seen.some((e) => e.target === orgB.path && e.details.attempted === 'task.create'), JSON.stringify(seen));
  });

  test("an admin of org A (not an instance administrator) cannot make a project on org B's repository", async () => {
    const r = await as('admin')('POST', '/api/orgs/default/projects', { name: 'borrowed', repoUrl: orgB.path });
    assert.equal(r.status, 403, JSON.stringify(r.body));
    assert.equal((await t.api('GET', '/api/orgs/default/projects')).body.items.some((p: { name: string }) => p.name === 'borrowed'), false);
    assert.ok((await refusals()).some((e) => e.actor === `user:${users.admin.id}` && e.details.attempted === 'project.create'));
  });

  test('the instance administrator may name repositories only under BERTH_LOCAL_REPOS, symbolic links followed', async () => {
    let r = await t.api('POST', '/api/orgs/default/tasks', { goal: 'allowed', repo: orgA.path, agent: 'command', command: 'true' });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    r = await t.api('POST', '/api/orgs/default/tasks', { goal: 'outside', repo: '/etc', agent: 'command', command: 'true' });
    assert.equal(r.status, 403);
    assert.match(r.body.error.message, /BERTH_LOCAL_REPOS/);
    await symlink('/etc', join(root, 'escape'));
    r = await t.api('POST', '/api/orgs/default/tasks', { goal: 'through a link', repo: join(root, 'escape'), agent: 'command', command: 'true' });
    assert.equal(r.status, 403, JSON.stringify(r.body));
  });

  test('http(s) repositories and forge APIs on loopback, private or link-local addresses are refused, also for the instance administrator', async () => {
    const before = await taskCount();
    for (const repo of ['http://127.0.0.1:7070/x/y.git', 'http://localhost:5432/x/y', 'http://169.254.169.254/latest/meta-data', 'http://[::1]:22/x/y', 'http://10.0.0.1/x/y', 'http://2130706433/x/y']) {
      for (const call of [as('member'), t.api.bind(t)]) {
        const r = await call('POST', '/api/orgs/default/tasks', { goal: 'reach the host', repo, agent: 'command', command: 'true' });
        assert.equal(r.status, 403, `${repo}: ${JSON.stringify(r.body)}`);
        assert.match(r.body.error.message, /BERTH_ALLOWED_GIT_HOSTS/);
      }
    }
    assert.equal(await taskCount(), before);
    const r = await t.api('POST', '/api/orgs/default/projects', { name: 'metadata', repoUrl: 'https://github.com/acme/app', forge: { kind: 'github', apiUrl: 'http://169.254.169.254/api/v3' } });
    assert.equal(r.status, 403, JSON.stringify(r.body));
  });

  test('when git is about to run, a name that now points at a private address is refused, and the one that passed is pinned', async () => {
    let answer = ['93.184.215.14'];
    const access = new RepoAccess({ localRepos: [], allowedGitHosts: [] }, { resolver: async () => answer });
    const reach = await access.reach('https://git.example.com/acme/app.git');
    assert.ok(reach.config.includes('http.curloptResolve=git.example.com:443:93.184.215.14'), reach.config.join(' '));
    assert.ok(reach.config.includes('http.followRedirects=false'));
    answer = ['127.0.0.1'];
    await assert.rejects(access.reach('https://git.example.com/acme/app.git'), (e: Error & { kind?: string }) => e.kind === 'forbidden');
    // Stored before the rules, or moved since: a path outside the allowed directories.
    await assert.rejects(access.reach(orgB.path), (e: Error & { kind?: string }) => e.kind === 'forbidden');
  });

  test("an admin of org A cannot approve a task into a repository that is not the task's own", async () => {
    // A branch the member's task pushed into org B's repository (before the fix nothing stopped it).
    await runGit(['branch', 'berth/evil', 'main'], { cwd: orgB.path });
    await pushCommit({ bare: orgB.path, branch: 'berth/evil', files: { 'README.md': 'owned by org A\n' }, message: 'evil' });
    const orgId = (await t.api('GET', '/api/orgs')).body.items.find((o: { name: string }) => o.name === 'default').id;
    const appProject = await t.berth.database.db.selectFrom('projects').select('id').where('name', '=', 'app').where('org_id', '=', orgId).executeTakeFirstOrThrow();
    const row = (id: string, projectId: string | null) => ({
      id,
      org_id: orgId,
      project_id: projectId,
      repo_url: orgB.path,
      base_branch: 'main',
      goal: 'merge into the other org',
      agent: 'command' as const,
      command: 'true',
      budget: JSON.stringify({ maxSteps: 1, maxTokens: null, maxCostUsd: null, timeoutMs: 60_000, maxCheckRetries: 0 }),
      state: 'succeeded' as const,
      trigger: 'api',
      created_by: `user:${users.member.id}`,
      branch: 'berth/evil',
      change_request: JSON.stringify({ kind: 'berth', url: null, number: null, draft: false }),
      finished_at: new Date(),
    });
    // A one-off task its member creator could never have named, and a task of org A's project whose repository is org B's.
    await t.berth.database.db.insertInto('tasks').values([row('task_tenancyone01', null), row('task_tenancyprj01', appProject.id)]).execute();
    for (const id of ['task_tenancyone01', 'task_tenancyprj01']) {
      const r = await as('admin')('POST', `/api/orgs/default/tasks/${id}/approve`);
      assert.equal(r.status, 403, `${id}: ${JSON.stringify(r.body)}`);
      assert.equal(await refSha(orgB.path, 'refs/heads/main'), orgB.sha, "org B's main is untouched");
      assert.ok((await refusals()).some((e) => e.target === id && e.details.attempted === 'task.approve'));
    }
  });
});

describe('finding 15: project secret lists not enforced', () => {
  test('an environment of a project receives exactly the secrets its project names (and its own), as variables and through the egress proxy', async () => {
    const put = (name: string, value: string, extra: Record<string, unknown> = {}) => t.api('PUT', `/api/orgs/default/secrets/${name}`, { value, ...extra });
    let r = await t.api('POST', '/api/orgs/default/projects', { name: 'storefront', repoUrl: 'https://github.com/acme/storefront', secrets: ['NAMED_KEY'] });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    for (const [name, value, extra] of [
      ['NAMED_KEY', 'named-value-1f2e3d4c'],
      ['OTHER_TEAM_KEY', 'other-team-value-9a8b7c6d'],
      ['OWN_KEY', 'own-value-5e6f7a8b', { project: 'storefront' }],
      ['OTHER_EGRESS', 'other-egress-value-0c1d2e3f', { egress: { host: 'payments.example.com' } }],
    ] as const) {
      r = await put(name, value, extra);
      assert.equal(r.status, 200, JSON.stringify(r.body));
    }

    const env = (await t.api('POST', '/api/orgs/default/environments', { name: 'storefront-env', project: 'storefront' })).body;
    assert.equal(env.state, 'running', JSON.stringify(env));
    const out = (await t.api('POST', `/api/orgs/default/environments/${env.id}/exec`, { cmd: ['sh', '-c', 'env | cut -d= -f1 | sort'] })).body;
    assert.equal(out.exitCode, 0, out.stderr);
    const names = out.stdout.split('\n');
    assert.ok(names.includes('NAMED_KEY') && names.includes('OWN_KEY'), out.stdout);
    assert.ok(!names.includes('OTHER_TEAM_KEY'), 'an org secret the project does not name stays out');
    const read = (await t.api('GET', '/api/orgs/default/audit?action=secret.read')).body.items.find((e: { actor: string }) => e.actor === `environment:${env.id}`);
    assert.deepEqual([...read.details.names].sort(), ['NAMED_KEY', 'OWN_KEY'], 'the audit log names what it received');
    // Egress-only: an org secret the project does not name is not added to its requests either.
    assert.deepEqual(t.berth.app.policies.policyFor(env.id).credentials, []);

    // `berth project show` says what its environments receive.
    const shown = await t.cli(['project', 'show', 'storefront']);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /^variables\s+NAMED_KEY, OWN_KEY$/m);
    assert.match(shown.stdout, /^egress-only\s+none$/m);
    assert.match(shown.stdout, /never the org's others/);
  });
});

describe('finding 17: members undo admins\' narrowing', () => {
  test("a member cannot remove, null out or widen an admin's restriction of an environment; narrowing further is still theirs", async () => {
    const member = as('member');
    const admin = as('admin');
    assert.equal((await t.api('PATCH', '/api/orgs/default/policies/org', { allowDomains: ['api.example.com', 'cdn.example.com'], maxConnections: 64 })).status, 200);
    const env = (await member('POST', '/api/orgs/default/environments', { name: 'narrowed' })).body;
    assert.equal(env.state, 'running', JSON.stringify(env));
    const url = `/api/orgs/default/policies/environments/${env.id}`;
    const policy = () => t.berth.app.policies.policyFor(env.id);
    // The admin narrows the member's environment to one domain, few connections and GET only.
    const narrowed = await admin('PATCH', url, { allowDomains: ['api.example.com'], maxConnections: 4, allowMethods: ['GET'] });
    assert.equal(narrowed.status, 200, JSON.stringify(narrowed.body));
    assert.equal(narrowed.body.setByRole, 'admin');

    const attempts: [string, string, unknown][] = [
      ['remove it', 'DELETE', undefined],
      ['null out the allow list', 'PATCH', { allowDomains: null }],
      ['null out the connection cap', 'PATCH', { maxConnections: null }],
      ['null out the methods', 'PATCH', { allowMethods: null }],
      ['widen back to what the org allows', 'PATCH', { allowDomains: ['api.example.com', 'cdn.example.com'] }],
      ['raise the cap within the org', 'PATCH', { maxConnections: 32 }],
    ];
    for (const [what, method, body] of attempts) {
      const r = await member(method, url, body);
      assert.equal(r.status, 403, `${what}: ${JSON.stringify(r.body)}`);
      assert.match(r.body.error.message, /set by an admin/, what);
      assert.deepEqual([policy().allowDomains, policy().maxConnections, policy().allowMethods], [['api.example.com'], 4, ['GET']], `${what}: nothing changed`);
    }

    // Narrowing further is allowed, and the restriction stays the admin's.
    const further = await member('PATCH', url, { allowDomains: [], maxConnections: 2 });
    assert.equal(further.status, 200, JSON.stringify(further.body));
    assert.equal(further.body.setByRole, 'admin');
    assert.equal((await member('DELETE', url)).status, 403, 'still not theirs to remove');
    // The role that set it can.
    assert.equal((await admin('DELETE', url)).status, 204);
    assert.deepEqual(policy().allowDomains, ['api.example.com', 'cdn.example.com']);
  });

  test("the same holds one role up: an admin may only narrow an owner's restriction", async () => {
    assert.equal((await t.api('PATCH', '/api/orgs/default/policies/projects/app', { allowDomains: ['api.example.com'] })).status, 200);
    const r = await as('admin')('DELETE', '/api/orgs/default/policies/projects/app');
    assert.equal(r.status, 403, JSON.stringify(r.body));
    assert.match(r.body.error.message, /set by an owner/);
    assert.equal((await as('admin')('PATCH', '/api/orgs/default/policies/projects/app', { allowDomains: null })).status, 403);
    assert.equal((await t.api('DELETE', '/api/orgs/default/policies/projects/app')).status, 204);
  });
});
