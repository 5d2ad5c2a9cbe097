// Issue #11, findings 10, 11, 12 and 14: what a token may do, and for how long.
// - A token's powers are its role in its org, never its maker's user-level rights; a token
//   sees and revokes only the tokens it may manage by role (11).
// - A token's effective role is the lower of its own and its maker's current one; removal
//   revokes (12).
// - Revocation, expiry, demotion and removal end open terminals and streams (10).
// - Failed authentication is rate limited per client address before any database work (14).
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { TokenService } from '../../src/server/auth.ts';
import { addressKey, AuthFailures } from '../../src/server/auth-failures.ts';
import { newId } from '../../src/shared/ids.ts';
import { apiAs, sh, startTestBerth, waitFor, type TestBerth } from '../helpers.ts';

let t: TestBerth;
let env: { id: string };
// How long a stream may stay open after its caller lost the right: the rule is a second;
// the bound leaves room for a busy test machine, and is far below the streams' own lives.
const ENDS_WITHIN_MS = 5_000;

type As = ReturnType<typeof apiAs>;
const as = (token: string): As => apiAs(t, token);
let admin: As;
// Sockets and streams the tests opened: closed at the end whatever happened, so a stream
// that (wrongly) stays open cannot keep the test process alive.
const opened: (() => void)[] = [];

before(async () => {
  t = await startTestBerth({ authFailureLimit: 20 });
  admin = as(t.client.token);
  const made = await admin('POST', '/api/orgs/default/environments', { name: 'token-streams' });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  env = made.body;
  // The people these tests make use it too: it is shared with the org (environments belong to their makers).
  assert.equal((await admin('PUT', `/api/orgs/default/environments/${env.id}/shares/org`)).status, 200);
});
after(async () => {
  for (const close of opened) close();
  await t?.destroy();
});

/** An org token made by whoever holds `maker`. */
async function orgToken(maker: As, role: string): Promise<{ id: string; token: string }> {
  const made = await maker('POST', '/api/orgs/default/tokens', { role, name: `${role} ${newId('t')}` });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  return made.body;
}

/** A person with `role` in the default org, and a user token of theirs (as sign-in would hand out). */
async function person(role: string): Promise<{ email: string; token: string; as: As }> {
  const email = `${newId('p').toLowerCase()}@example.com`;
  assert.equal((await admin('PUT', `/api/orgs/default/members/${email}`, { role })).status, 200);
  const user = await t.berth.database.db.selectFrom('users').select('id').where('email', '=', email).executeTakeFirstOrThrow();
  const { token } = await new TokenService(t.berth.database.db).create({ kind: 'user', userId: user.id, name: 'test sign-in' });
  return { email, token, as: as(token) };
}

interface Terminal {
  send(line: string): void;
  output(): string;
  errors: string[];
  closed: { code: number; reason: string } | undefined;
}

/** A shell in the environment over the WebSocket terminal, as `berth env exec -i` opens it. */
async function terminal(token: string): Promise<Terminal> {
  const ws = new WebSocket(`${t.client.url.replace(/^http/, 'ws')}/api/orgs/default/environments/${env.id}/attach`, { headers: { authorization: `Bearer ${token}` } });
  opened.push(() => ws.terminate());
  let out = '';
  const term: Terminal = {
    send: (line) => ws.send(Buffer.concat([Buffer.of(0), Buffer.from(line)]), () => {}),
    output: () => out,
    errors: [],
    closed: undefined,
  };
  ws.on('message', (data: Buffer, isBinary) => {
    if (isBinary) out += data.subarray(1).toString();
    else {
      const m = JSON.parse(data.toString());
      if (m.type === 'error') term.errors.push(m.error.message);
    }
  });
  ws.on('close', (code, reason) => (term.closed = { code, reason: reason.toString() }));
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  ws.send(JSON.stringify({ type: 'start', cmd: ['sh'], stdin: true }));
  return term;
}

/** Starts a shell on a terminal that writes its pid where the test can find it. */
async function shellWithPid(term: Terminal, mark: string): Promise<void> {
  term.send(`echo $$ > /tmp/${mark}.pid; echo ready-${mark}\n`);
  await waitFor(`the ${mark} shell answers`, async () => term.output().includes(`ready-${mark}`), 60_000);
}

async function gone(mark: string): Promise<void> {
  await waitFor(`the ${mark} process ends`, async () => (await sh(t, env.id, `kill -0 "$(cat /tmp/${mark}.pid)" 2>/dev/null && echo alive || echo gone`)).stdout.trim() === 'gone', ENDS_WITHIN_MS);
}

const ran = async (file: string) => (await sh(t, env.id, `test -e /tmp/${file} && echo ran || echo not-run`)).stdout.trim() === 'ran';

/** A signal that aborts a request when the tests end. */
function aborter(): AbortSignal {
  const c = new AbortController();
  opened.push(() => c.abort());
  return c.signal;
}

/** An SSE response read as it comes; `done` once the server ends it. */
function readSse(res: Response): { text(): string; done(): boolean } {
  let text = '';
  let done = false;
  void (async () => {
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) text += Buffer.from(chunk).toString();
    } catch {
      // a broken stream is an ended one
    }
    done = true;
  })();
  return { text: () => text, done: () => done };
}

describe('org tokens are not their maker (finding 11)', () => {
  test("a member token made by the owner neither lists nor revokes the owner's tokens", async () => {
    const owner = await orgToken(admin, 'owner');
    const member = await orgToken(admin, 'member');
    const asMember = as(member.token);

    const listed = await asMember('GET', '/api/orgs/default/tokens');
    assert.equal(listed.status, 200);
    assert.deepEqual(listed.body.items.map((i: { id: string }) => i.id), [member.id], 'a member token sees itself only');

    const revoke = await asMember('DELETE', `/api/orgs/default/tokens/${owner.id}`);
    assert.equal(revoke.status, 404, JSON.stringify(revoke.body));
    assert.equal((await as(owner.token)('GET', '/api/orgs/default/environments')).status, 200, 'the owner token still works');
    const stored = await t.berth.database.db.selectFrom('tokens').select('revoked_at').where('id', '=', owner.id).executeTakeFirstOrThrow();
    assert.equal(stored.revoked_at, null);

    // It may revoke itself.
    assert.equal((await asMember('DELETE', `/api/orgs/default/tokens/${member.id}`)).status, 204);
    assert.equal((await asMember('GET', '/api/orgs/default/tokens')).status, 401);
  });

  test('an admin token manages tokens up to admin, never an owner token', async () => {
    const owner = await orgToken(admin, 'owner');
    const member = await orgToken(admin, 'member');
    const asAdmin = as((await orgToken(admin, 'admin')).token);

    const listed = await asAdmin('GET', '/api/orgs/default/tokens');
    assert.equal(listed.status, 200);
    const roles = new Set(listed.body.items.map((i: { role: string }) => i.role));
    assert.ok(!roles.has('owner'), `an admin token is shown no owner token: ${[...roles].join(', ')}`);
    assert.ok(listed.body.items.some((i: { id: string }) => i.id === member.id));

    assert.equal((await asAdmin('DELETE', `/api/orgs/default/tokens/${owner.id}`)).status, 404);
    assert.equal((await as(owner.token)('GET', '/api/orgs/default/environments')).status, 200);
    assert.equal((await asAdmin('DELETE', `/api/orgs/default/tokens/${member.id}`)).status, 204);
    assert.equal((await as(member.token)('GET', '/api/orgs/default/environments')).status, 401);
  });
});

describe('demotion reaches tokens (finding 12)', () => {
  test('an owner token made by a person demoted to viewer acts as a viewer; removing them revokes it', async () => {
    const p = await person('owner');
    const theirs = await orgToken(p.as, 'owner');
    const asTheirs = as(theirs.token);
    assert.equal((await admin('PUT', `/api/orgs/default/members/${p.email}`, { role: 'viewer' })).status, 200);

    const promote = await asTheirs('PUT', '/api/orgs/default/members/made-by-demoted%40example.com', { role: 'owner' });
    assert.equal(promote.status, 403, JSON.stringify(promote.body));
    assert.match(promote.body.error.message, /viewer/);
    const members = await admin('GET', '/api/orgs/default/members');
    assert.ok(!members.body.items.some((m: { email: string }) => m.email === 'made-by-demoted@example.com'), 'no owner was made');
    assert.equal((await asTheirs('POST', '/api/orgs/default/tokens', { role: 'member' })).status, 403);
    assert.equal((await asTheirs('POST', `/api/orgs/default/environments/${env.id}/exec`, { cmd: ['true'] })).status, 403);
    const me = await asTheirs('GET', '/api/me');
    assert.deepEqual(me.body.orgs.map((o: { role: string }) => o.role), ['viewer']);
    assert.equal((await asTheirs('GET', '/api/orgs/default/environments')).status, 200, 'a viewer still reads');

    assert.equal((await admin('DELETE', `/api/orgs/default/members/${p.email}`)).status, 204);
    assert.equal((await asTheirs('GET', '/api/orgs/default/environments')).status, 401);
  });
});

describe('open streams end when their caller loses the right (finding 10)', () => {
  test('revoking a token closes its terminal, kills the shell, and input sent after never runs', async () => {
    const tok = await orgToken(admin, 'member');
    const term = await terminal(tok.token);
    await shellWithPid(term, 'revoked');

    assert.equal((await admin('DELETE', `/api/orgs/default/tokens/${tok.id}`)).status, 204);
    term.send('touch /tmp/revoked.after\n');
    const closed = await waitFor('the terminal closes', async () => term.closed, ENDS_WITHIN_MS);
    assert.equal(closed.code, 1008);
    assert.match(closed.reason, /revoked/);
    assert.match(term.errors.join('\n'), /revoked or has expired/);
    await gone('revoked');
    assert.equal(await ran('revoked.after'), false, 'input after the revocation was not run');
  });

  test('a token expiring, or revoked by another replica (straight in the database), closes its terminal', async () => {
    const tok = await orgToken(admin, 'member');
    const term = await terminal(tok.token);
    await shellWithPid(term, 'expired');
    await t.berth.database.db.updateTable('tokens').set({ expires_at: new Date(Date.now() - 1000) }).where('id', '=', tok.id).execute();
    const closed = await waitFor('the terminal closes', async () => term.closed, ENDS_WITHIN_MS);
    assert.equal(closed.code, 1008);
    await gone('expired');
  });

  test('demoting a person closes the terminals of their user token and of the org tokens they made', async () => {
    const p = await person('member');
    const made = await orgToken(p.as, 'member');
    const own = await terminal(p.token);
    const viaToken = await terminal(made.token);
    await shellWithPid(own, 'demoted-user');
    await shellWithPid(viaToken, 'demoted-token');

    assert.equal((await admin('PUT', `/api/orgs/default/members/${p.email}`, { role: 'viewer' })).status, 200);
    own.send('touch /tmp/demoted-user.after\n');
    viaToken.send('touch /tmp/demoted-token.after\n');
    for (const term of [own, viaToken]) {
      const closed = await waitFor('the terminal closes', async () => term.closed, ENDS_WITHIN_MS);
      assert.equal(closed.code, 1008);
      assert.match(term.errors.join('\n'), /is now viewer; this stream needs member/);
    }
    await gone('demoted-user');
    await gone('demoted-token');
    assert.equal(await ran('demoted-user.after'), false);
    assert.equal(await ran('demoted-token.after'), false);
  });

  test("removing a member closes their terminal and their tokens' terminals", async () => {
    const p = await person('member');
    const made = await orgToken(p.as, 'member');
    const own = await terminal(p.token);
    const viaToken = await terminal(made.token);
    await shellWithPid(own, 'removed-user');
    await shellWithPid(viaToken, 'removed-token');

    assert.equal((await admin('DELETE', `/api/orgs/default/members/${p.email}`)).status, 204);
    for (const term of [own, viaToken]) {
      const closed = await waitFor('the terminal closes', async () => term.closed, ENDS_WITHIN_MS);
      assert.equal(closed.code, 1008);
    }
    assert.match(own.errors.join('\n'), /no longer belong to org 'default'/);
    await gone('removed-user');
    await gone('removed-token');
  });

  test('a streamed exec of sleep 30 ends with an error event when its token is revoked, and the command is killed', async () => {
    const tok = await orgToken(admin, 'member');
    const res = await fetch(`${t.client.url}/api/orgs/default/environments/${env.id}/exec`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tok.token}`, 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify({ cmd: ['sh', '-c', 'echo $$ > /tmp/sse.pid; echo started; exec sleep 30'] }),
      signal: aborter(),
    });
    assert.equal(res.status, 200);
    const stream = readSse(res);
    await waitFor('the command starts', async () => stream.text().includes('started'), 30_000);

    assert.equal((await admin('DELETE', `/api/orgs/default/tokens/${tok.id}`)).status, 204);
    await waitFor('the stream ends', async () => stream.done(), ENDS_WITHIN_MS);
    assert.match(stream.text(), /event: error\ndata: .*revoked or has expired/);
    assert.doesNotMatch(stream.text(), /event: exit/);
    await gone('sse');
  });

  test('a plain (JSON) exec answers 401 instead of its output when its token is revoked while it runs', async () => {
    const tok = await orgToken(admin, 'member');
    const pending = as(tok.token)('POST', `/api/orgs/default/environments/${env.id}/exec`, { cmd: ['sh', '-c', 'echo $$ > /tmp/plain.pid; echo secret-output; exec sleep 30'] });
    await waitFor('the command starts', async () => (await sh(t, env.id, 'test -s /tmp/plain.pid && echo yes || true')).stdout.includes('yes'), 30_000);
    assert.equal((await admin('DELETE', `/api/orgs/default/tokens/${tok.id}`)).status, 204);
    const answered = await Promise.race([pending, new Promise<undefined>((r) => setTimeout(r, ENDS_WITHIN_MS))]);
    assert.ok(answered, 'the exec ended with its revocation');
    assert.equal(answered.status, 401);
    assert.doesNotMatch(JSON.stringify(answered.body), /secret-output/);
    await gone('plain');
  });

  test("a followed task transcript ends with an error event when the reader's token is revoked", async () => {
    const orgId = (await admin('GET', '/api/orgs')).body.items.find((o: { name: string }) => o.name === 'default').id;
    const taskId = newId('task');
    // A task that stays running: its stream would stay open until the task ends.
    await t.berth.database.db
      .insertInto('tasks')
      .values({ id: taskId, org_id: orgId, project_id: null, repo_url: 'https://example.com/never.git', base_branch: null, goal: 'stay running', agent: 'command', command: 'true', model: null, budget: '{}', check_command: null, state: 'running', created_by: 'test' })
      .execute();
    const tok = await orgToken(admin, 'viewer');
    const res = await fetch(`${t.client.url}/api/orgs/default/tasks/${taskId}/events`, { headers: { authorization: `Bearer ${tok.token}`, accept: 'text/event-stream' }, signal: aborter() });
    assert.equal(res.status, 200);
    const stream = readSse(res);
    await waitFor('the stream opens', async () => stream.text().includes(': open'), 10_000);

    assert.equal((await admin('DELETE', `/api/orgs/default/tokens/${tok.id}`)).status, 204);
    await waitFor('the stream ends', async () => stream.done(), ENDS_WITHIN_MS);
    assert.match(stream.text(), /event: error\ndata: .*revoked or has expired/);
    assert.doesNotMatch(stream.text(), /event: end/);
  });
});

describe('failed authentication is rate limited per address (finding 14)', () => {
  /** A GET from a chosen loopback address, so this test's budget is not the other tests'. */
  const from = (address: string, token?: string) =>
    new Promise<{ status: number; retryAfter: string | undefined; body: string }>((resolve, reject) => {
      const url = new URL(`${t.client.url}/api/orgs/default/environments`);
      const req = request({ host: url.hostname, port: url.port, path: url.pathname, localAddress: address, headers: token ? { authorization: `Bearer ${token}` } : {} }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'] as string | undefined, body }));
      });
      req.on('error', reject);
      req.end();
    });

  test('an address past its failures gets 429 with Retry-After, even with a good token; another address does not', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 25; i++) statuses.push((await from('127.0.0.3', i % 2 ? `berth_guess${i}` : undefined)).status);
    assert.deepEqual(statuses.slice(0, 20), Array(20).fill(401), 'the first 20 failures are answered');
    assert.deepEqual(statuses.slice(20), Array(5).fill(429), 'then the address is refused');

    const limited = await from('127.0.0.3', 'berth_another-guess');
    assert.equal(limited.status, 429);
    assert.ok(Number(limited.retryAfter) > 0, `Retry-After: ${limited.retryAfter}`);
    assert.match(JSON.parse(limited.body).error.message, /invalid API token from this address .* try again in \d+ s/);
    // Refused before the token is looked up: a good one that has not worked lately waits too.
    const fresh = await admin('POST', '/api/orgs/default/tokens', { role: 'viewer', name: 'fresh' });
    assert.equal(fresh.status, 201, JSON.stringify(fresh.body));
    assert.equal((await from('127.0.0.3', fresh.body.token)).status, 429);
    // One that worked lately is checked in full: a guesser behind the same address (a NAT,
    // a load balancer, the host) does not lock the others there out.
    assert.equal((await from('127.0.0.3', t.client.token)).status, 200);
    assert.equal((await from('127.0.0.3', 'berth_yet-another-guess')).status, 429);

    assert.equal((await from('127.0.0.4', t.client.token)).status, 200, 'another address is unaffected');
    assert.equal((await from('127.0.0.4', 'berth_wrong')).status, 401);
    assert.equal((await admin('GET', '/api/orgs/default/environments')).status, 200);
  });

  test('IPv6 clients are counted by their /64, so one host cannot rotate addresses for fresh budgets', () => {
    assert.equal(addressKey('2001:db8:1:2::5'), addressKey('2001:0db8:0001:0002:ffff:1:2:3'));
    assert.notEqual(addressKey('2001:db8:1:2::5'), addressKey('2001:db8:1:3::5'));
    assert.equal(addressKey('::ffff:10.0.0.1'), '10.0.0.1');
    const failures = new AuthFailures({ limit: 2 });
    failures.note('2001:db8:1:2::a');
    failures.note('2001:db8:1:2::b');
    assert.ok(failures.retryAfter('2001:db8:1:2::c') > 0);
    assert.equal(failures.retryAfter('2001:db8:1:3::c'), 0);
  });
});
