// Request smuggling and policy bypasses through the egress proxy (issue #11, findings 5
// and 19), in-process: the proxy on the host's loopback, raw bytes written to it with
// node:net as an attacker inside an environment would, and an "outside" server that
// records every request it parses, on which upstream connection, with the bytes it read.
//
// The proxy must parse every request and re-frame it (never forward the client's body
// with the client's framing), refuse ambiguous framing with a 400 that is on record, keep
// each client connection's upstream connections to itself (and apart per credential),
// and hold requests inside CONNECT tunnels it can read to the method policy.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { CertificateAuthority } from '../../src/runner/network/ca.ts';
import { EgressProxy, NetworkEventStore, type NetworkEvent } from '../../src/runner/network/index.ts';
import { blockListOf, pathUnder } from '../../src/runner/network/request-filter.ts';
import { ALLOW_LOOPBACK, basePolicy, TestPolicies, testResolver } from './fixtures.ts';

const ENV = 'env_smuggling';
const SECRET = `berth-smuggling-credential-${Math.random().toString(36).slice(2)}`;

interface Received {
  method: string;
  url: string;
  authorization: string | undefined;
  body: string;
  /** Which upstream connection carried it (one number per TCP/TLS connection the server accepted). */
  connection: number;
  tls: boolean;
}

interface Recorder {
  httpPort: number;
  httpsPort: number;
  caPem: string;
  requests: Received[];
  /** Every byte each connection sent, in order. */
  raw: string[];
  close(): Promise<void>;
}

/**
 * The outside: HTTP and HTTPS servers that record what they parse. `POST /echo` answers
 * with its body, as any echo or paste endpoint would: the red team's capture device.
 */
async function startRecorder(): Promise<Recorder> {
  const ca = await CertificateAuthority.open(mkdtempSync(join(tmpdir(), 'berth-smuggling-public-ca-')));
  const requests: Received[] = [];
  const raw: string[] = [];
  const ids = new WeakMap<object, number>();
  const track = (s: Socket) => {
    const id = raw.length;
    raw.push('');
    ids.set(s, id);
    s.on('data', (b: Buffer) => (raw[id] += b.toString('latin1')));
  };
  const handler = (tls: boolean) => (req: IncomingMessage, res: ServerResponse) => {
    let body = '';
    req.setEncoding('latin1');
    req.on('data', (b: string) => (body += b));
    req.on('end', () => {
      requests.push({ method: req.method ?? '', url: req.url ?? '', authorization: req.headers.authorization, body, connection: ids.get(req.socket) ?? -1, tls });
      const text = req.method === 'POST' && req.url === '/echo' ? body : `hello ${req.method} ${req.url}\n`;
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text, 'latin1') });
      res.end(text, 'latin1');
    });
  };
  const leaf = ca.leaf('api.outside.test');
  const http = createHttpServer(handler(false));
  http.on('connection', track);
  const https = createHttpsServer({ cert: leaf.cert, key: leaf.key }, handler(true));
  https.on('secureConnection', track);
  const listen = (s: Server) => new Promise<number>((r) => s.listen(0, '127.0.0.1', () => r((s.address() as AddressInfo).port)));
  const [httpPort, httpsPort] = await Promise.all([listen(http), listen(https)]);
  return {
    httpPort, httpsPort, caPem: ca.certPem, requests, raw,
    close: async () => {
      http.closeAllConnections();
      https.closeAllConnections();
      await Promise.all([new Promise((r) => http.close(r)), new Promise((r) => https.close(r))]);
    },
  };
}

interface Outcome {
  name: string;
  blocked: boolean;
  recorded: string;
}
const outcomes: Outcome[] = [];

describe('request smuggling and policy bypasses through the egress proxy', () => {
  let outside: Recorder;
  let runnerCa: CertificateAuthority;
  let proxy: EgressProxy;
  const caDir = mkdtempSync(join(tmpdir(), 'berth-smuggling-runner-ca-'));
  const events = new NetworkEventStore();
  const policies = new TestPolicies();

  before(async () => {
    outside = await startRecorder();
    runnerCa = await CertificateAuthority.open(caDir);
    // GET only, and a credential for api.outside.test under /v1: what a smuggled request
    // would get past (the method rule, the event log) and what it would steal.
    policies.policy = basePolicy({
      allowDomains: ['outside.test', 'api.outside.test'],
      allowPorts: [outside.httpPort, outside.httpsPort],
      allowMethods: ['GET', 'HEAD'],
      credentials: [{ host: 'api.outside.test', pathPrefix: '/v1', header: 'Authorization', value: `Bearer ${SECRET}`, name: 'api' }],
    });
    proxy = new EgressProxy({
      environmentId: ENV, policies, events, resolver: testResolver, ca: async () => runnerCa, upstreamCa: outside.caPem,
      usage: { bytesUp: 0, bytesDown: 0, connections: 0, open: 0, refused: 0, peak: 0 }, allowPrivate: blockListOf(ALLOW_LOOPBACK),
    });
    await proxy.listen(0, '127.0.0.1');
  });

  after(async () => {
    const blocked = outcomes.filter((o) => o.blocked).length;
    console.log(`\nsmuggling attacks: ${outcomes.length} tried, ${blocked} blocked`);
    for (const o of outcomes) console.log(`  ${o.blocked ? 'blocked' : 'NOT BLOCKED'}  ${o.name.padEnd(72)} ${o.recorded}`);
    await proxy?.close();
    await outside?.close();
    rmSync(caDir, { recursive: true, force: true });
  });

  const since = (n: number) => events.events(ENV).slice(n);
  const plainHost = () => `outside.test:${outside.httpPort}`;
  const tlsHost = () => `api.outside.test:${outside.httpsPort}`;

  /** A connection to the proxy, as the environment's end of the veth makes one. */
  const open = () => new Promise<Socket>((resolve, reject) => {
    const s = connect(proxy.address().port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });

  /** `CONNECT target`, answered 200; with `tls`, a TLS session through it that trusts the runner's CA. */
  async function tunnel(target: string, tls: boolean): Promise<Socket | TLSSocket> {
    const s = await open();
    const answer = await new Promise<string>((resolve, reject) => {
      let got = '';
      const onData = (b: Buffer) => {
        got += b.toString('latin1');
        if (got.includes('\r\n\r\n')) {
          s.off('data', onData);
          s.pause();
          resolve(got);
        }
      };
      s.on('data', onData);
      s.once('error', reject);
      s.once('close', () => resolve(got));
      s.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
    });
    assert.match(answer, /^HTTP\/1\.1 200 /, answer);
    if (!tls) return s;
    const t = tlsConnect({ socket: s, servername: target.split(':')[0], ca: runnerCa.certPem });
    await new Promise<void>((resolve, reject) => {
      t.once('secureConnect', resolve);
      t.once('error', reject);
    });
    return t;
  }

  /** Writes `bytes` and returns everything the other end sends until it closes. */
  const exchange = (s: Socket | TLSSocket, bytes: string) => new Promise<string>((resolve) => {
    let got = '';
    s.on('data', (b: Buffer) => (got += b.toString('latin1')));
    s.once('error', () => resolve(got));
    s.once('close', () => resolve(got));
    s.resume();
    s.write(bytes, 'latin1');
  });

  /** The same attack through plain HTTP (absolute-form) and inside a TLS connection the proxy terminates (a credential host). */
  const transports = [
    { name: 'plain HTTP', host: plainHost, target: (path: string) => `http://${plainHost()}${path}`, open: () => open() },
    { name: 'TLS terminated for a credential', host: tlsHost, target: (path: string) => path, open: () => tunnel(tlsHost(), true) },
  ];

  function note(name: string, blocked: boolean, e: NetworkEvent[]) {
    const denied = e.filter((x) => !x.allowed);
    outcomes.push({ name, blocked, recorded: denied.length ? `proxy event ${[...new Set(denied.map((x) => x.rule))].join(', ')}` : 'NOT RECORDED' });
  }

  test('CL.TE, TE.CL and TE.TE framings are refused with a 400, recorded, and nothing reaches the outside', async () => {
    const smuggled = 'GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n';
    const cases: [string, (line: string, host: string) => string][] = [
      ['CL.TE: Content-Length and Transfer-Encoding: chunked', (l, h) => `${l}Host: ${h}\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggled}`],
      ['TE.CL: Transfer-Encoding: chunked and a short Content-Length', (l, h) => `${l}Host: ${h}\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n${smuggled.length.toString(16)}\r\n${smuggled}\r\n0\r\n\r\n`],
      ['TE.TE: Transfer-Encoding: xchunked', (l, h) => `${l}Host: ${h}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n${smuggled}`],
      ['TE.TE: Transfer-Encoding: chunked, then identity', (l, h) => `${l}Host: ${h}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n${smuggled}`],
      ['TE.TE: Transfer-Encoding: identity, then chunked', (l, h) => `${l}Host: ${h}\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggled}`],
      ['TE.TE: Transfer-Encoding: gzip, chunked', (l, h) => `${l}Host: ${h}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n${smuggled}`],
      ['TE.TE: a space before the colon', (l, h) => `${l}Host: ${h}\r\nTransfer-Encoding : chunked\r\nContent-Length: 0\r\n\r\n${smuggled}`],
      ['TE.TE: Transfer-Encoding folded onto a second line (obs-fold)', (l, h) => `${l}Host: ${h}\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n${smuggled}`],
      ['obs-fold in another header', (l, h) => `${l}Host: ${h}\r\nX-A: b\r\n c\r\n\r\n`],
      ['bare LF line endings', (l, h) => `${l.replace('\r\n', '\n')}Host: ${h}\nTransfer-Encoding: chunked\n\n0\n\n${smuggled}`],
      ['Transfer-Encoding in an HTTP/1.0 request', (l, h) => `${l.replace('HTTP/1.1', 'HTTP/1.0')}Host: ${h}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggled}`],
      ['two different Content-Lengths', (l, h) => `${l}Host: ${h}\r\nContent-Length: 0\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`],
    ];
    for (const t of transports) {
      for (const [name, make] of cases) {
        const n = events.events(ENV).length;
        const seen = outside.requests.length;
        const reply = await exchange(await t.open(), make(`GET ${t.target('/v1/framing')} HTTP/1.1\r\n`, t.host()));
        const e = since(n);
        const blocked = /^HTTP\/1\.1 400 /.test(reply) && outside.requests.length === seen && e.some((x) => !x.allowed && x.rule === 'deny:bad-request' && x.status === 400);
        note(`${name} (${t.name})`, blocked, e);
        assert.match(reply, /^HTTP\/1\.1 400 [^]*rule: deny:bad-request/, `${name} (${t.name}): ${JSON.stringify(reply)}`);
        assert.deepEqual(outside.requests.slice(seen), [], `${name} (${t.name}): nothing reaches the outside`);
        assert.ok(e.some((x) => !x.allowed && x.rule === 'deny:bad-request' && x.status === 400 && x.kind === 'http'), `${name} (${t.name}): ${JSON.stringify(e)}`);
        // What followed the refused request on that connection is not read as a request.
        assert.deepEqual(e.map((x) => x.rule).filter((r) => r !== 'deny:bad-request' && !r.endsWith('+tls-terminated')), [], `${name} (${t.name}): ${JSON.stringify(e)}`);
        assert.equal(reply.match(/HTTP\/1\.1 \d{3} /g)?.length, 1, `${name} (${t.name}): one answer: ${JSON.stringify(reply)}`);
      }
    }
  });

  test("a GET with a chunked body is re-framed: the body never becomes a second request upstream", async () => {
    for (const t of transports) {
      const n = events.events(ENV).length;
      const seen = outside.requests.length;
      const smuggled = `POST /smuggled HTTP/1.1\r\nHost: ${t.host()}\r\nContent-Length: 0\r\n\r\n`;
      const first = await exchange(await t.open(), `GET ${t.target('/v1/first')} HTTP/1.1\r\nHost: ${t.host()}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${smuggled.length.toString(16)}\r\n${smuggled}\r\n0\r\n\r\n`);
      // A later request: on a shared upstream connection it would meet what was left there.
      const later = await exchange(await t.open(), `GET ${t.target('/v1/later')} HTTP/1.1\r\nHost: ${t.host()}\r\nConnection: close\r\n\r\n`);
      const got = outside.requests.slice(seen);
      const blocked = got.length === 2 && got.every((r) => r.method === 'GET') && got[0]!.body === smuggled;
      outcomes.push({ name: `a chunked GET whose body is a POST (${t.name})`, blocked, recorded: 'each request on record: ' + since(n).filter((e) => e.kind === 'http').map((e) => `${e.method} ${e.path}`).join(', ') });
      assert.match(first, /^HTTP\/1\.1 200 [^]*hello GET \/v1\/first\n$/, first);
      assert.match(later, /^HTTP\/1\.1 200 [^]*hello GET \/v1\/later\n$/, later);
      assert.deepEqual(got.map((r) => `${r.method} ${r.url}`), ['GET /v1/first', 'GET /v1/later'], `${t.name}: the outside parsed only the two GETs`);
      assert.equal(got[0]!.body, smuggled, 'the POST arrived as the body of the GET, framed');
      assert.deepEqual(since(n).filter((e) => e.kind === 'http').map((e) => `${e.method} ${e.path} ${e.allowed}`), ['GET /v1/first true', 'GET /v1/later true']);
    }
  });

  test('an injected credential never reaches the response the sandbox gets for another request', async () => {
    // The red team's capture: a smuggled POST /echo whose Content-Length swallows the start
    // of the next request on the same upstream connection — which the proxy gave the credential.
    // Its length is that of the whole next request as the proxy forwarded it before the fix,
    // so the outside answers the echo and nothing else.
    const next = `GET /v1/b HTTP/1.1\r\nauthorization: Bearer ${SECRET}\r\nhost: ${tlsHost()}\r\nConnection: keep-alive\r\n\r\n`;
    const smuggled = `POST /echo HTTP/1.1\r\nHost: ${tlsHost()}\r\nContent-Length: ${next.length}\r\n\r\n`;
    const seen = outside.requests.length;
    const a = await tunnel(tlsHost(), true);
    await exchange(a, `GET /v1/a HTTP/1.1\r\nHost: ${tlsHost()}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${smuggled.length.toString(16)}\r\n${smuggled}\r\n0\r\n\r\n`);
    const b = await tunnel(tlsHost(), true);
    const reply = await exchange(b, `GET /v1/b HTTP/1.1\r\nAuthorization: Bearer the-sandbox-has-none\r\nHost: ${tlsHost()}\r\nConnection: close\r\n\r\n`);
    const blocked = !reply.includes(SECRET) && !outside.requests.slice(seen).some((r) => r.url === '/echo');
    outcomes.push({ name: 'capturing the injected Authorization with a smuggled POST /echo', blocked, recorded: blocked ? 'the body went upstream as a body' : 'NOT RECORDED' });
    assert.ok(!reply.includes(SECRET), `the sandbox read the credential: ${JSON.stringify(reply)}`);
    assert.match(reply, /hello GET \/v1\/b\n$/);
    assert.deepEqual(outside.requests.slice(seen).map((r) => `${r.method} ${r.url} ${r.authorization === `Bearer ${SECRET}`}`), ['GET /v1/a true', 'GET /v1/b true']);
  });

  test('upstream connections are never shared between client connections, tunnels or credentials', async () => {
    const seen = outside.requests.length;
    // Two plain-HTTP client connections, then two tunnels, each kept open while the next one asks.
    const p1 = await open();
    const p2 = await open();
    const t1 = await tunnel(tlsHost(), true);
    const t2 = await tunnel(tlsHost(), true);
    const ask = (s: Socket | TLSSocket, target: string, host: string) => new Promise<string>((resolve) => {
      let got = '';
      const onData = (b: Buffer) => {
        got += b.toString('latin1');
        if (/\n\n?hello [^\n]*\n$/.test(got)) {
          s.off('data', onData);
          resolve(got);
        }
      };
      s.on('data', onData);
      s.write(`GET ${target} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    });
    await ask(p1, `http://${plainHost()}/p1`, plainHost());
    await ask(p2, `http://${plainHost()}/p2`, plainHost());
    await ask(t1, '/v1/t1', tlsHost());
    await ask(t2, '/v1/t2', tlsHost());
    // In one tunnel: with the credential, without it, and with it again.
    await ask(t1, '/v2/t1-none', tlsHost());
    await ask(t1, '/v1/t1-again', tlsHost());
    for (const s of [p1, p2, t1, t2]) s.destroy();
    const conn = Object.fromEntries(outside.requests.slice(seen).map((r) => [r.url, r.connection]));
    const blocked = conn['/p1'] !== conn['/p2'] && conn['/v1/t1'] !== conn['/v1/t2'] && conn['/v1/t1'] !== conn['/v2/t1-none'];
    outcomes.push({ name: 'a second client connection or tunnel reusing a pooled upstream connection', blocked, recorded: 'not an event: no request was refused' });
    assert.notEqual(conn['/p1'], conn['/p2'], 'two client connections, two upstream connections');
    assert.notEqual(conn['/v1/t1'], conn['/v1/t2'], 'two tunnels, two upstream connections');
    assert.notEqual(conn['/v1/t1'], conn['/v2/t1-none'], 'a request without the credential does not ride the credential\'s connection');
    assert.equal(conn['/v1/t1'], conn['/v1/t1-again'], 'one tunnel keeps its own connection alive');
  });

  test('CONNECT to a plain-HTTP port: every request inside is parsed, held to the method policy and recorded', async () => {
    let n = events.events(ENV).length;
    let seen = outside.requests.length;
    const post = await exchange(await tunnel(plainHost(), false), `POST /inside HTTP/1.1\r\nHost: ${plainHost()}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx`);
    let blocked = /^HTTP\/1\.1 403 /.test(post) && outside.requests.length === seen;
    note('CONNECT to an allowed plain-HTTP port, then a POST inside (method rule)', blocked, since(n));
    assert.match(post, /^HTTP\/1\.1 403 [^]*rule: deny:environment:method:POST/, post);
    assert.equal(outside.requests.length, seen, 'the POST did not go out');
    assert.ok(since(n).some((e) => e.kind === 'http' && e.method === 'POST' && e.path === '/inside' && e.host === 'outside.test' && !e.allowed), JSON.stringify(since(n)));

    // A GET inside goes through and is on record as a request, with its path.
    n = events.events(ENV).length;
    const get = await exchange(await tunnel(plainHost(), false), `GET /inside?q=1 HTTP/1.1\r\nHost: ${plainHost()}\r\nConnection: close\r\n\r\n`);
    assert.match(get, /^HTTP\/1\.1 200 [^]*hello GET \/inside\?q=1\n$/, get);
    assert.ok(since(n).some((e) => e.kind === 'http' && e.method === 'GET' && e.path === '/inside?q=1' && e.allowed && e.port === outside.httpPort), JSON.stringify(since(n)));

    // What is neither TLS nor HTTP does not pass either: it would be a way round the parser.
    n = events.events(ENV).length;
    seen = outside.requests.length;
    const other = await exchange(await tunnel(plainHost(), false), `\r\nXPOST /inside HTTP/1.1\r\nHost: ${plainHost()}\r\n\r\n`);
    blocked = /^HTTP\/1\.1 400 /.test(other) && !outside.raw.some((r) => r.includes('XPOST'));
    note('CONNECT to a plain-HTTP port, then bytes that are not HTTP', blocked, since(n));
    assert.match(other, /^HTTP\/1\.1 400 [^]*rule: deny:bad-request/, other);
    assert.ok(!outside.raw.some((r) => r.includes('XPOST')), 'no byte of it reached the outside');
    assert.ok(since(n).some((e) => e.rule === 'deny:bad-request'), JSON.stringify(since(n)));

    // Inside TLS the proxy terminates, the method rule applies as well.
    n = events.events(ENV).length;
    seen = outside.requests.length;
    const tlsPost = await exchange(await tunnel(tlsHost(), true), `POST /v1/x HTTP/1.1\r\nHost: ${tlsHost()}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx`);
    blocked = /^HTTP\/1\.1 403 /.test(tlsPost) && outside.requests.length === seen;
    note('a POST inside TLS the proxy terminates (method rule)', blocked, since(n));
    assert.match(tlsPost, /^HTTP\/1\.1 403 [^]*rule: deny:environment:method:POST/, tlsPost);
    assert.equal(outside.requests.length, seen);
  });

  test("a credential's path prefix matches whole segments only", async () => {
    // The rule itself: /v1 covers /v1, /v1/… and /v1?…, never /v10 or /v1x.
    for (const [path, under] of [['/v1', true], ['/v1/', true], ['/v1/x', true], ['/v1?q=1', true], ['/v10/x', false], ['/v1x', false], ['/v1-admin', false], ['/', false], ['/v1/..%2fadmin', false], ['/v1/%2E%2E/admin', false]] as const) {
      assert.equal(pathUnder(path, '/v1'), under, path);
      assert.equal(pathUnder(path, '/v1/'), under, `${path} under /v1/`);
    }
    assert.equal(pathUnder('/anything', '/'), true);
    assert.equal(pathUnder('/api/v4/projects/group%2Fname', '/api/v4'), true, 'an encoded slash that is not a dot segment is fine');

    const seen = outside.requests.length;
    const paths = ['/v10/models', '/v1x', '/v1/models', '/v1', '/v1?q=1', '/v1/..%2fadmin'];
    for (const p of paths) await exchange(await tunnel(tlsHost(), true), `GET ${p} HTTP/1.1\r\nHost: ${tlsHost()}\r\nConnection: close\r\n\r\n`);
    const got = Object.fromEntries(outside.requests.slice(seen).map((r) => [r.url, r.authorization === `Bearer ${SECRET}`]));
    const blocked = !got['/v10/models'] && !got['/v1x'] && !got['/v1/..%2fadmin'];
    outcomes.push({ name: 'the credential for /v1 sent to /v10/… , /v1x or /v1/..%2f…', blocked, recorded: 'allowed without the credential (rule without +credential)' });
    assert.deepEqual(got, { '/v10/models': false, '/v1x': false, '/v1/models': true, '/v1': true, '/v1?q=1': true, '/v1/..%2fadmin': false });
    const rules = Object.fromEntries(events.events(ENV).filter((e) => e.kind === 'http' && paths.includes(e.path ?? '')).map((e) => [e.path, e.rule]));
    assert.match(rules['/v1/models'] ?? '', /\+credential:api$/);
    assert.doesNotMatch(rules['/v10/models'] ?? '', /credential/);
  });
});
