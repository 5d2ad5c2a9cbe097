// Signing in from the CLI (`berth login`, `logout`, `whoami`), the org a token implies, and
// one-time invite links, through the real CLI against real control planes: one with a real
// OpenID provider (the browser flow through a loopback listener), one with API tokens only.
// sandbox: none (test/fakes/fake-runner.ts; scripts/test.ts runs these more at once)
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { browse, CLIENT_SECRET, freePort, startProvider, type TestProvider } from './oidc-provider.ts';
import { REPO, runCli, startTestBerth, type CliResult, type TestBerth } from './helpers.ts';

/** A user's own machine: a home and a config directory of their own, no data dir, no BERTH_* settings. */
function newHome() {
  const home = mkdtempSync(join(tmpdir(), 'berth-home-'));
  const env = { HOME: home, XDG_CONFIG_HOME: join(home, 'config'), BERTH_DATA_DIR: '', BERTH_URL: '', BERTH_TOKEN: '', BERTH_ORG: '', BROWSER: '' };
  return { home, env, configPath: join(home, 'config', 'berth', 'config.json'), cli: (args: string[], input?: string, extra: Record<string, string> = {}) => runCli(args, { ...env, ...extra }, input) };
}
const homes: string[] = [];
const home = () => {
  const h = newHome();
  homes.push(h.home);
  return h;
};
after(() => homes.forEach((h) => rmSync(h, { recursive: true, force: true })));

const json = (r: CliResult) => {
  assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout);
};

describe('berth login with an API token (no identity provider)', () => {
  let t: TestBerth;
  before(async () => {
    t = await startTestBerth({ fake: true });
    await t.api('POST', '/api/orgs', { name: 'second' });
  });
  after(async () => t?.destroy());

  test('a piped token is checked, stored 0600 in the user config and used by every command; its org is implied; logout forgets it', async () => {
    const { body: made } = await t.api('POST', '/api/orgs/default/tokens', { role: 'member', name: 'ci' });
    const h = home();
    const login = await h.cli(['login', t.client.url], made.token);
    assert.equal(login.code, 0, login.stderr);
    assert.match(login.stderr, /Signed in to .* as an org token \(ci\)/);
    assert.equal(statSync(h.configPath).mode & 0o777, 0o600);
    assert.equal(statSync(join(h.home, 'config', 'berth')).mode & 0o777, 0o700);
    const saved = JSON.parse(readFileSync(h.configPath, 'utf8'));
    assert.deepEqual({ url: saved.url, token: saved.token, org: saved.org, madeByLogin: saved.madeByLogin }, { url: t.client.url, token: made.token, org: 'default', madeByLogin: false });

    const me = json(await h.cli(['whoami', '--json']));
    assert.equal(me.kind, 'org');
    assert.equal(me.source, 'login');
    assert.equal(me.token.name, 'ci');
    assert.deepEqual(me.orgs.map((o: { name: string; role: string }) => `${o.name}:${o.role}`), ['default:member']);
    const text = await h.cli(['whoami']);
    assert.match(text.stdout, /orgs: +default \(member\) \*/);
    assert.match(text.stdout, /from: +berth login/);
    const list = await h.cli(['env', 'list', '--json']);
    assert.equal(list.code, 0, list.stderr);

    const out = await h.cli(['logout']);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stderr, /still works/);
    assert.equal(existsSync(h.configPath), false);
    // A pasted token is forgotten, not revoked: it may be in use elsewhere.
    assert.equal((await fetch(`${t.client.url}/api/me`, { headers: { authorization: `Bearer ${made.token}` } })).status, 200);
    const after = await h.cli(['env', 'list']);
    assert.equal(after.code, 4);
    assert.match(after.stderr, /not signed in: .*berth login URL/);
  });

  test('an org token alone implies its org, without BERTH_ORG; a user in several orgs is asked to choose', async () => {
    const { body: made } = await t.api('POST', '/api/orgs/second/tokens', { role: 'viewer' });
    const h = home();
    const viaEnv = await h.cli(['env', 'list', '--json'], '', { BERTH_URL: t.client.url, BERTH_TOKEN: made.token });
    assert.equal(viaEnv.code, 0, viaEnv.stderr);
    // It acted in 'second', the token's org.
    const me = json(await h.cli(['whoami', '--json'], '', { BERTH_URL: t.client.url, BERTH_TOKEN: made.token }));
    assert.equal(me.org, 'second');
    assert.equal(me.source, 'environment');

    const admin = await h.cli(['env', 'list'], '', { BERTH_URL: t.client.url, BERTH_TOKEN: t.client.token });
    assert.equal(admin.code, 2);
    assert.match(admin.stderr, /no org chosen: pass --org NAME or set BERTH_ORG \(yours: default, second\)/);
    const chosen = await h.cli(['--org', 'second', 'env', 'list'], '', { BERTH_URL: t.client.url, BERTH_TOKEN: t.client.token });
    assert.equal(chosen.code, 0, chosen.stderr);
  });

  test('on a terminal the token is asked for at a prompt that does not echo it, and the login works', { timeout: 120_000 }, async () => {
    const { body: made } = await t.api('POST', '/api/orgs/default/tokens', { role: 'member', name: 'typed' });
    const h = home();
    // script(1) runs the CLI on a real pseudo-terminal, its output (all the terminal shows) to our pipe.
    const cmd = `${join(REPO, 'bin', 'berth')} login ${t.client.url}`;
    const child = spawn('script', ['-q', '-e', '-c', cmd, '/dev/null'], {
      env: { ...process.env, ...h.env, SHELL: '/bin/sh', FORCE_COLOR: undefined, BERTH_NODE: process.execPath, TERM: 'dumb' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let screen = '';
    const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? 1)));
    let typed = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      screen += d;
      // Typed once the prompt shows, as a person would (echo is off before it is written).
      if (!typed && screen.includes('API token (input hidden): ')) {
        typed = true;
        child.stdin.write(`${made.token}\r`);
      }
    });
    const code = await exited;
    child.stdin.end();
    assert.equal(code, 0, screen);
    assert.ok(typed, `no prompt on the terminal: ${screen}`);
    assert.match(screen, /Signed in to .* as an org token \(typed\)/);
    assert.ok(!screen.includes(made.token), `the token was echoed: ${screen}`);
    assert.ok(!screen.includes(made.token.slice(0, 12)), 'not even part of it');
    const saved = JSON.parse(readFileSync(h.configPath, 'utf8'));
    assert.equal(saved.token, made.token);
    assert.equal(json(await h.cli(['whoami', '--json'])).token.name, 'typed');
  });

  test('a wrong token is refused, exit 4, and nothing is stored; no URL is a usage error', async () => {
    const h = home();
    const bad = await h.cli(['login', t.client.url], 'berth_not-a-token');
    assert.equal(bad.code, 4);
    assert.match(bad.stderr, /not accepted .*unknown, revoked or expired/);
    assert.equal(existsSync(h.configPath), false);
    const empty = await h.cli(['login', t.client.url], '');
    assert.equal(empty.code, 2);
    assert.match(empty.stderr, /no token on standard input/);
    const none = await h.cli(['login'], 'x');
    assert.equal(none.code, 2);
    assert.match(none.stderr, /name the control plane/);
  });

  test('member add --invite prints a one-time link; it signs the member in once, is kept only as a hash, and is on record', async () => {
    const add = await t.cli(['--org', 'default', 'member', 'add', 'dana@example.com', '--role', 'member', '--invite']);
    assert.equal(add.code, 0, add.stderr);
    const link = add.stdout.trim();
    assert.match(link, new RegExp(`^${t.client.url}/invite#berthinv_[A-Za-z0-9_-]+$`));
    assert.match(add.stderr, /works once, until/);
    const code = link.split('#')[1]!;
    const rows = await t.berth.database.db.selectFrom('invites').selectAll().execute();
    assert.ok(rows.length >= 1);
    assert.ok(rows.every((r) => !JSON.stringify(r).includes(code)), 'the code itself is not stored');
    const pending = json(await t.cli(['--org', 'default', 'member', 'list', '--json'])).find((m: { email: string }) => m.email === 'dana@example.com');
    assert.equal(pending.pending, true);

    const h = home();
    const login = await h.cli(['login', '--invite', link]);
    assert.equal(login.code, 0, login.stderr);
    assert.match(login.stderr, /as dana@example\.com/);
    const me = json(await h.cli(['whoami', '--json']));
    assert.equal(me.email, 'dana@example.com');
    assert.equal(me.org, 'default');
    assert.deepEqual(me.orgs.map((o: { role: string }) => o.role), ['member']);
    const audit = await t.api('GET', '/api/orgs/default/audit?action=member.invite_accepted');
    assert.equal(audit.body.items[0].details.email, 'dana@example.com');
    assert.ok(!JSON.stringify(audit.body).includes(code));
    assert.equal(json(await t.cli(['--org', 'default', 'member', 'list', '--json'])).find((m: { email: string }) => m.email === 'dana@example.com').pending, false);

    // Once only.
    const again = await home().cli(['login', t.client.url, '--invite', code]);
    assert.equal(again.code, 4);
    assert.match(again.stderr, /already used: each link works once/);
    // A member who has signed in needs no invite.
    const reinvite = await t.cli(['--org', 'default', 'member', 'add', 'dana@example.com', '--role', 'member', '--invite']);
    assert.notEqual(reinvite.code, 0);
    assert.match(reinvite.stderr, /already signed in/);

    // Logout revokes the token login made.
    const token = JSON.parse(readFileSync(h.configPath, 'utf8')).token;
    const out = await h.cli(['logout']);
    assert.match(out.stderr, /the token was revoked/);
    assert.equal((await fetch(`${t.client.url}/api/me`, { headers: { authorization: `Bearer ${token}` } })).status, 401);
  });

  test('an expired invite is refused with a clear message; an admin cannot invite an owner or someone in another org', async () => {
    const add = await t.cli(['--org', 'default', 'member', 'add', 'erin@example.com', '--role', 'viewer', '--invite', '--expires', '1h']);
    assert.equal(add.code, 0, add.stderr);
    const code = add.stdout.trim().split('#')[1]!;
    await t.berth.database.db.updateTable('invites').set({ expires_at: new Date(Date.now() - 1000) }).where('used_at', 'is', null).execute();
    const late = await home().cli(['login', t.client.url, '--invite', code]);
    assert.equal(late.code, 4);
    assert.match(late.stderr, /has expired/);

    const { body: adminToken } = await t.api('POST', '/api/orgs/default/tokens', { role: 'admin' });
    await t.api('PUT', '/api/orgs/default/members/olive@example.com', { role: 'owner' });
    const asAdmin = await home().cli(['member', 'add', 'olive@example.com', '--role', 'owner', '--invite'], '', { BERTH_URL: t.client.url, BERTH_TOKEN: adminToken.token });
    assert.equal(asAdmin.code, 4);
    assert.match(asAdmin.stderr, /only an owner can make owners/);
    const invite = await fetch(`${t.client.url}/api/orgs/default/members/olive@example.com/invite`, { method: 'POST', headers: { authorization: `Bearer ${adminToken.token}`, 'content-type': 'application/json' }, body: '{}' });
    assert.equal(invite.status, 403);

    await t.api('PUT', '/api/orgs/second/members/erin@example.com', { role: 'viewer' });
    const elsewhere = await t.api('POST', '/api/orgs/default/members/erin@example.com/invite', {});
    assert.equal(elsewhere.status, 409);
    assert.match(elsewhere.body.error.message, /another org/);
    const badExpiry = await t.cli(['--org', 'default', 'member', 'add', 'fay@example.com', '--role', 'viewer', '--invite', '--expires', '90d']);
    assert.notEqual(badExpiry.code, 0);
    assert.match(badExpiry.stderr, /1m to 30d/);
  });

  test("the local administrator's one-time sign-in link (what `berth up` prints) works once", async () => {
    const link = await t.berth.signInLink();
    assert.match(link, /\/invite#berthinv_/);
    const h = home();
    const login = await h.cli(['login', '--invite', link]);
    assert.equal(login.code, 0, login.stderr);
    assert.equal(json(await h.cli(['whoami', '--json'])).email, 'admin@localhost');
    assert.equal((await home().cli(['login', '--invite', link])).code, 4);
    // --print-token prints the token the CLI uses (to paste into the web UI), and changes nothing.
    const printed = await runCli(['login', '--print-token'], { BERTH_DATA_DIR: t.dataDir });
    assert.equal(printed.stdout.trim(), t.client.token);
  });
});

describe('berth login through the identity provider', () => {
  let t: TestBerth;
  let provider: TestProvider;
  let redirectUri: string;
  before(async () => {
    const port = await freePort();
    redirectUri = `http://127.0.0.1:${port}/api/auth/oidc/callback`;
    provider = await startProvider({ redirectUri });
    t = await startTestBerth({
      fake: true,
      port,
      oidc: { issuer: provider.issuer, clientId: 'berth', clientSecret: CLIENT_SECRET, redirectUri, allowHttp: true, groupRules: [{ group: 'berth-admins', org: 'platform', role: 'admin' }] },
    });
  });
  after(async () => {
    await t?.destroy();
    await provider?.close();
  });

  /** The browser: from the start address the CLI printed, through the provider, back to the UI's callback. */
  async function walk(start: string, login: string, accept = 'application/json') {
    const res = await fetch(start, { redirect: 'manual' });
    assert.equal(res.status, 302, await res.text());
    const cookie = res.headers.get('set-cookie')!.split(';')[0]!;
    const callback = await browse(res.headers.get('location')!, redirectUri, login);
    return fetch(callback, { headers: { cookie, accept }, redirect: 'manual' });
  }

  test('the CLI opens a loopback listener, the browser signs in at the provider, and the CLI stores a token that lasts a working day', async () => {
    const h = home();
    const child = spawn(join(REPO, 'bin', 'berth'), ['login', t.client.url, '--no-browser'], { env: { ...process.env, BERTH_NODE: process.execPath, ...h.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    const exited = new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? 1)));
    const start = await new Promise<string>((resolve, reject) => {
      child.stderr.setEncoding('utf8').on('data', (d: string) => {
        stderr += d;
        const m = /(http:\/\/\S+\/api\/auth\/oidc\/start\?\S+)/.exec(stderr);
        if (m) resolve(m[1]!);
      });
      child.on('close', () => reject(new Error(`the CLI ended: ${stderr}`)));
    });
    assert.match(start, /cli_port=\d+&cli_challenge=[A-Za-z0-9_-]{43}$/);
    const answer = await walk(start, 'alice');
    assert.equal(answer.status, 200);
    const { redirect } = (await answer.json()) as { redirect: string };
    // To this machine's loopback, with a one-time code and never the token.
    assert.match(redirect, /^http:\/\/127\.0\.0\.1:\d+\/callback\?code=[A-Za-z0-9_-]+$/);
    assert.doesNotMatch(redirect, /berth_/);
    const landing = await fetch(redirect);
    assert.equal(landing.status, 200);
    assert.match(await landing.text(), /Signed in/);
    assert.equal(await exited, 0, stderr);
    assert.match(stderr, /Signed in to .* as alice@example\.com, until /);

    const me = json(await h.cli(['whoami', '--json']));
    assert.equal(me.email, 'alice@example.com');
    assert.equal(me.token.kind, 'user');
    const hours = (Date.parse(me.token.expiresAt) - Date.now()) / 3_600_000;
    assert.ok(hours > 11 && hours <= 12, `expires in ${hours} h`);
    assert.equal(me.org, 'platform');
    assert.equal(statSync(h.configPath).mode & 0o777, 0o600);
    // On record in her org, read with the token login stored (she is an admin of platform).
    const token = JSON.parse(readFileSync(h.configPath, 'utf8')).token;
    const audit = (await (await fetch(`${t.client.url}/api/orgs/platform/audit?action=auth.sign_in`, { headers: { authorization: `Bearer ${token}` } })).json()) as { items: { details: { via: string } }[] };
    assert.equal(audit.items[0]?.details.via, 'oidc-cli');
    // Logout revokes it at the control plane.
    assert.match((await h.cli(['logout'])).stderr, /revoked/);
    assert.equal((await fetch(`${t.client.url}/api/me`, { headers: { authorization: `Bearer ${token}` } })).status, 401);
  });

  test('the code works once and only with the verifier; the browser goes only to a loopback port; a navigation is redirected', async () => {
    const verifier = randomBytes(32).toString('base64url');
    const challenge = createHash('sha256').update(verifier).digest('base64url');
    const url = (q: string) => `${t.client.url}/api/auth/oidc/start?${q}`;
    for (const q of [`cli_port=80&cli_challenge=${challenge}`, 'cli_port=4000', `cli_port=http://evil.example/&cli_challenge=${challenge}`, `cli_port=4000&cli_challenge=short`]) {
      const res = await fetch(url(q), { redirect: 'manual' });
      assert.equal(res.status, 400, q);
    }
    // A browser sent straight to the API's callback (the provider's redirect URI) is redirected to the listener.
    const res = await walk(url(`cli_port=45678&cli_challenge=${challenge}`), 'alice', 'text/html,application/xhtml+xml');
    assert.equal(res.status, 302);
    const code = new URL(res.headers.get('location')!).searchParams.get('code')!;
    assert.match(res.headers.get('location')!, /^http:\/\/127\.0\.0\.1:45678\/callback\?code=/);
    const trade = (v: string) => fetch(`${t.client.url}/api/auth/cli/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code, verifier: v }) });
    const wrong = await trade(randomBytes(32).toString('base64url'));
    assert.equal(wrong.status, 401);
    // Spent by the wrong guess: the right verifier is too late.
    assert.equal((await trade(verifier)).status, 401);
  });

  test('sign-in routes keep their per-address rate limit: invite codes cannot be guessed quickly', async () => {
    let last = 0;
    for (let i = 0; i < 25; i++) {
      last = (await fetch(`${t.client.url}/api/auth/invite`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code: `berthinv_guess${i}` }) })).status;
    }
    assert.equal(last, 429);
  });
});
