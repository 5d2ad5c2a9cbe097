// The host's own outbound connections through the company's outbound proxy (issue #13):
// host-side git (clone, push) and a forge API call go through a real forwarding proxy that
// requires Basic credentials, by name (the proxy resolves it), unless NO_PROXY names the
// host; the proxy's credentials never reach git's command line, the clone or an error.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RepoAccess, cloneRepo, commitPatch, forgeFor, pushBranch } from '../src/forges/index.ts';
import { routeHostFetch } from '../src/forges/upstream.ts';
import { egressNetworkConfigFrom } from '../src/runner/network/index.ts';
import { startForwardProxy, type ForwardProxy } from './fakes/forward-proxy.ts';
import { refSha, runGit } from './fakes/git-server.ts';
import { startFakeGitHub, type FakeGitHub } from './fakes/github.ts';
import { startModelServer } from './fakes/model-server.ts';
import { LlmGateway } from '../src/runner/gateway/index.ts';
import pino from 'pino';

const PROXY_USER = 'corp-user';
const PROXY_PASSWORD = 'pr0xy-Pa55word-never-shown';
const TOKEN = 'ghp_upstreamT0kenNeverShown000000000';
const AUTHOR = { name: 'Berth Agent', email: 'agent@berth.test' };
// The company's names: resolved by the host's check (the resolver) and by the proxy (its table).
const NAMES: Record<string, string[]> = { 'git.corp.test': ['127.0.0.1'], 'api.corp.test': ['127.0.0.1'], 'models.corp.test': ['127.0.0.1'] };
const resolver = async (host: string) => NAMES[host] ?? [];

let github: FakeGitHub;
let proxy: ForwardProxy;
let work: string;
let argvLog: string;
let envLog: string;
const originalPath = process.env.PATH;

const upstream = (env: Record<string, string> = {}, password = PROXY_PASSWORD) =>
  egressNetworkConfigFrom({ upstreamProxy: `http://${PROXY_USER}:${password}@127.0.0.1:${proxy.port}`, env, hostAddresses: new Set() });
const accessWith = (u: ReturnType<typeof upstream>) => new RepoAccess({ localRepos: [], allowedGitHosts: ['127.0.0.1'] }, { resolver, upstream: u });

describe('the host through the upstream proxy', () => {
  let port: string;
  let url: string;

  before(async () => {
    github = await startFakeGitHub({ tokens: [TOKEN] });
    await github.createRepo('octo/app', { 'README.md': '# app\n' });
    proxy = await startForwardProxy({ credentials: `${PROXY_USER}:${PROXY_PASSWORD}`, names: NAMES });
    port = new URL(github.url).port;
    url = `http://git.corp.test:${port}/octo/app.git`;
    work = await mkdtemp(join(tmpdir(), 'berth-upstream-host-'));
    // A git in front of the real one that writes down its command line and which
    // GIT_CONFIG_* keys it was given (never their values): what `ps` would show.
    const realGit = execFileSync('sh', ['-c', 'command -v git'], { encoding: 'utf8' }).trim();
    argvLog = join(work, 'argv.log');
    envLog = join(work, 'env.log');
    await writeFile(join(work, 'git'), `#!/bin/sh\nprintf '%s\\n' "$*" >> '${argvLog}'\nenv | grep '^GIT_CONFIG_KEY_' >> '${envLog}'\nexec '${realGit}' "$@"\n`);
    await chmod(join(work, 'git'), 0o755);
    process.env.PATH = `${work}:${originalPath}`;
  });
  after(async () => {
    process.env.PATH = originalPath;
    routeHostFetch(undefined);
    await proxy?.close();
    await github?.close();
    await rm(work, { recursive: true, force: true });
  });

  test("a task's repository: clone and push go through the proxy by name, with its credentials only in git's environment", async () => {
    const access = accessWith(upstream());
    const reach = await access.reach(url);
    // Nothing that can be shown or logged of the reach holds the proxy's credentials; the proxy resolves the name, so nothing is pinned.
    assert.ok(!JSON.stringify(reach).includes(PROXY_PASSWORD));
    assert.ok(reach.config.includes('http.proxyAuthMethod=basic'));
    assert.ok(!reach.config.some((c) => c.startsWith('http.curloptResolve=')), reach.config.join(' '));

    const credentials = await forgeFor(url, { kind: 'github', tokenSecret: 'GITHUB_TOKEN' }, { token: TOKEN }).gitCredentials();
    const dir = join(work, 'clone');
    const { baseSha } = await cloneRepo({ url, dir, credentials, reach });
    assert.equal(await readFile(join(dir, 'README.md'), 'utf8'), '# app\n');
    const viaProxy = proxy.forwarded.filter((f) => f.target.startsWith(`http://git.corp.test:${port}/octo/app.git/`));
    assert.ok(viaProxy.some((f) => f.target.includes('/info/refs')) && viaProxy.some((f) => f.target.endsWith('/git-upload-pack')), JSON.stringify(proxy.forwarded));
    assert.equal(proxy.refused, 0, 'git sent the proxy credentials without waiting for a 407');
    assert.ok(github.gitRequests.length > 0 && github.gitRequests.every((r) => r.authorization === 'accepted'), "the forge's own credentials still reached the git server");

    // Push a branch through the proxy too.
    await writeFile(join(dir, 'new.txt'), 'via the proxy\n');
    await runGit(['add', 'new.txt'], { cwd: dir });
    const patch = Buffer.from(await runGit(['diff', '--cached', '--binary', baseSha], { cwd: dir }));
    await runGit(['reset', '-q', '--hard'], { cwd: dir });
    const { sha } = await commitPatch({ dir, baseSha, branch: 'berth/via-proxy', patch, message: 'Add new.txt', author: AUTHOR });
    const before = proxy.forwarded.length;
    await pushBranch({ dir, url, branch: 'berth/via-proxy', credentials, reach: await access.reach(url) });
    assert.equal(await refSha(join(github.root, 'octo/app.git'), 'refs/heads/berth/via-proxy'), sha);
    assert.ok(proxy.forwarded.slice(before).some((f) => f.target.endsWith('/git-receive-pack') && f.method === 'POST'));

    // What git was started with: the clone and the push, with no credential on either command line;
    // the proxy came through the environment's config, after the forge's header entry.
    const argv = await readFile(argvLog, 'utf8');
    assert.ok(argv.includes(`clone --quiet`) && argv.includes('push --quiet'), argv);
    for (const secret of [PROXY_PASSWORD, TOKEN, Buffer.from(`${PROXY_USER}:${PROXY_PASSWORD}`).toString('base64')]) assert.ok(!argv.includes(secret), 'a credential was on the command line');
    assert.ok(!argv.includes(`127.0.0.1:${proxy.port}`), 'the proxy itself is named in the environment, not the command line');
    const keys = await readFile(envLog, 'utf8');
    assert.ok(keys.includes('GIT_CONFIG_KEY_1=http.proxy') && keys.includes(`GIT_CONFIG_KEY_0=http.http://git.corp.test:${port}/.extraHeader`), keys);
    // Nor is it written into the clone.
    assert.ok(!(await readFile(join(dir, '.git', 'config'), 'utf8')).includes(PROXY_PASSWORD));
  });

  test('NO_PROXY: a name or a network it lists is reached directly, whatever the host\'s proxy variables say', async () => {
    const saved = process.env.http_proxy;
    // The host's own variable would send git to the proxy (without credentials): the company setting decides instead.
    process.env.http_proxy = `http://127.0.0.1:${proxy.port}`;
    try {
      const credentials = await forgeFor(url, { kind: 'github', tokenSecret: 'GITHUB_TOKEN' }, { token: TOKEN }).gitCredentials();
      for (const noProxy of ['corp.test', '127.0.0.0/8']) {
        const access = accessWith(upstream({ BERTH_EGRESS_UPSTREAM_NO_PROXY: noProxy }));
        const reach = await access.reach(url);
        assert.equal(reach.proxy, null);
        // Directly: the checked address is pinned again.
        assert.ok(reach.config.includes(`http.curloptResolve=git.corp.test:${port}:127.0.0.1`), reach.config.join(' '));
        const before = { forwarded: proxy.forwarded.length, refused: proxy.refused };
        await cloneRepo({ url, dir: join(work, `direct-${noProxy.replace(/\W/g, '-')}`), reach, credentials });
        assert.deepEqual({ forwarded: proxy.forwarded.length, refused: proxy.refused }, before, `NO_PROXY=${noProxy}: the proxy saw nothing`);
      }
    } finally {
      if (saved === undefined) delete process.env.http_proxy;
      else process.env.http_proxy = saved;
    }
  });

  test("the proxy refuses wrong credentials: the clone fails and the error does not carry them", async () => {
    const wrong = 'wr0ng-Pa55word-not-to-show';
    const access = accessWith(upstream({}, wrong));
    const refused = proxy.refused;
    const failure = await cloneRepo({ url, dir: join(work, 'refused'), reach: await access.reach(url) }).then(
      () => assert.fail('the clone went through with wrong proxy credentials'),
      (e: Error) => e,
    );
    assert.ok(proxy.refused > refused, 'the proxy was asked and said 407');
    assert.ok(!failure.message.includes(wrong) && !JSON.stringify(failure).includes(wrong), failure.message);
  });

  test('a forge API call (opening a pull request) goes through the proxy; NO_PROXY sends it directly', async () => {
    const apiUrl = `http://api.corp.test:${port}/api/v3`;
    routeHostFetch(upstream());
    const forge = forgeFor(url, { kind: 'github', apiUrl, tokenSecret: 'GITHUB_TOKEN' }, { token: TOKEN });
    const before = proxy.forwarded.length;
    const pr = await forge.openChangeRequest({ base: 'main', head: 'berth/via-proxy', title: 'Via the proxy', body: '', draft: false });
    assert.equal(pr.kind, 'pull_request');
    assert.equal(github.pulls.length, 1);
    const seen = proxy.forwarded.slice(before);
    assert.ok(seen.some((f) => f.target === `api.corp.test:${port}` || f.target.startsWith(`${apiUrl}/repos/octo/app/pulls`)), JSON.stringify(seen));
    assert.equal(github.apiRequests.at(-1)?.auth, 'token');

    // NO_PROXY by network: an API named by its address goes directly (the same pull request again: GitHub says it exists).
    routeHostFetch(upstream({ BERTH_EGRESS_UPSTREAM_NO_PROXY: '127.0.0.0/8' }));
    const direct = { forwarded: proxy.forwarded.length, api: github.apiRequests.length };
    const again = forgeFor(url, { kind: 'github', apiUrl: github.apiUrl, tokenSecret: 'GITHUB_TOKEN' }, { token: TOKEN });
    await assert.rejects(again.openChangeRequest({ base: 'main', head: 'berth/via-proxy', title: 'Again', body: '', draft: false }), /already exists/);
    assert.equal(github.apiRequests.length, direct.api + 1);
    assert.equal(proxy.forwarded.length, direct.forwarded);
    routeHostFetch(undefined);
  });

  test("the model gateway's calls to the provider go through the proxy by name; NO_PROXY sends them directly", async () => {
    const key = 'sk-provider-key-0000000000000000';
    const models = await startModelServer([{ text: 'via the proxy' }, { text: 'directly' }], { apiKey: key });
    const port = new URL(models.origin).port;
    const gateways: LlmGateway[] = [];
    try {
      const ask = async (u: ReturnType<typeof upstream>, baseUrl: string) => {
        const gateway = new LlmGateway({ logger: pino({ level: 'silent' }), upstreams: { openai: { baseUrl, apiKey: key } }, upstreamProxy: u });
        gateways.push(gateway);
        const { url: at } = await gateway.listenTcp(0);
        const { token } = gateway.issue({ taskId: 'task-upstream', maxTokens: null, onCall: () => {} });
        const res = await fetch(`${at}/openai/v1/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hello' }] }),
        });
        return { status: res.status, text: await res.text() };
      };
      let before = proxy.forwarded.length;
      const via = await ask(upstream(), `http://models.corp.test:${port}/v1`);
      assert.equal(via.status, 200, via.text);
      assert.match(via.text, /via the proxy/);
      assert.ok(proxy.forwarded.slice(before).some((f) => f.target === `http://models.corp.test:${port}/v1/chat/completions` && f.method === 'POST'), JSON.stringify(proxy.forwarded.slice(before)));

      before = proxy.forwarded.length;
      const direct = await ask(upstream({ BERTH_EGRESS_UPSTREAM_NO_PROXY: '127.0.0.1' }), `${models.origin}/v1`);
      assert.equal(direct.status, 200, direct.text);
      assert.match(direct.text, /directly/);
      assert.equal(proxy.forwarded.length, before);
    } finally {
      for (const g of gateways) await g.close();
      await models.close();
    }
  });
});
