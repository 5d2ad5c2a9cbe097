// The runner protocol's parts on their own: URLs, labels, backoff, and two peers over a
// real WebSocket on loopback (calls, errors, a stream held back by a slow reader).
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { WebSocket, WebSocketServer } from 'ws';
import { backoffMs, connectUrl } from '../src/runner/remote/host.ts';
import { Peer } from '../src/runner/remote/peer.ts';
import { RemoteRunner } from '../src/runner/remote/client.ts';
import { DENY_ALL } from '../src/runner/network/policy.ts';
import { encodeFrame, FRAME, parseLabels, STREAM } from '../src/runner/remote/protocol.ts';
import { BerthError } from '../src/shared/errors.ts';

describe('runner protocol pieces', () => {
  it('dials wss for https, refuses plain http to another host unless --insecure', () => {
    assert.equal(connectUrl('https://berth.example.com', false).href, 'wss://berth.example.com/api/runners/connect');
    assert.equal(connectUrl('https://berth.example.com/base/', false).href, 'wss://berth.example.com/base/api/runners/connect');
    assert.equal(connectUrl('http://127.0.0.1:7070', false).href, 'ws://127.0.0.1:7070/api/runners/connect');
    assert.throws(() => connectUrl('http://10.0.0.5:7070', false), /not TLS.*--insecure/);
    assert.equal(connectUrl('http://10.0.0.5:7070', true).protocol, 'ws:');
    assert.throws(() => connectUrl('ftp://x', false), /must be an https:\/\/ URL/);
    assert.throws(() => connectUrl('not a url', false), /is not a URL/);
  });

  it('parses labels and refuses bad ones', () => {
    assert.deepEqual(parseLabels('gpu=true, zone=eu-1'), { gpu: 'true', zone: 'eu-1' });
    assert.deepEqual(parseLabels(undefined), {});
    assert.throws(() => parseLabels('gpu'), /not key=value/);
    assert.throws(() => parseLabels('GPU=true'), /lower-case/);
  });

  it('backs off exponentially with jitter, capped at 30 s', () => {
    assert.equal(backoffMs(0, () => 0), 250);
    assert.equal(backoffMs(0, () => 1), 500);
    assert.equal(backoffMs(3, () => 1), 4000);
    assert.equal(backoffMs(40, () => 1), 30_000);
    assert.equal(backoffMs(40, () => 0), 15_000);
  });
});

describe('two peers over a WebSocket', () => {
  let server: WebSocketServer;
  let a: Peer;
  let b: Peer;
  const violations: string[] = [];
  const messages: unknown[] = [];

  before(async () => {
    server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise((r) => server.once('listening', r));
    const accepted = new Promise<WebSocket>((r) => server.once('connection', r));
    const client = new WebSocket(`ws://127.0.0.1:${(server.address() as AddressInfo).port}`);
    await new Promise((r) => client.once('open', r));
    const serverSide = await accepted;
    const parse = (raw: unknown) => (typeof raw === 'object' && raw && typeof (raw as { t?: unknown }).t === 'string' ? (raw as { t: string }) : undefined);
    a = new Peer(client, { parse, onMessage: (m) => messages.push(m), onViolation: (why) => violations.push(why) });
    b = new Peer(serverSide, {
      parse,
      onMessage: (m) => messages.push(m),
      onViolation: (why) => violations.push(why),
      onCall: async (method, args) => {
        if (method === 'fail') throw new BerthError('conflict', 'it is stopped');
        if (method === 'boom') throw new Error('internal detail');
        return { method, args };
      },
    });
  });

  after(() => {
    a.close();
    b.close();
    server.close();
  });

  it('calls and answers, keeping the kind of a refusal', async () => {
    assert.deepEqual(await a.call('echo', { x: 1 }).result, { method: 'echo', args: { x: 1 } });
    await assert.rejects(a.call('fail', {}).result, (err: BerthError) => err.kind === 'conflict' && err.message === 'it is stopped');
    await assert.rejects(a.call('boom', {}).result, (err: BerthError) => err.kind === 'internal');
  });

  it('holds a stream back while its reader does not read, and delivers it whole', async () => {
    const data = randomBytes(8 * 1024 * 1024);
    const incoming = b.readable(7, STREAM.stdout);
    const outgoing = a.writable(7, STREAM.stdout);
    let written = 0;
    const writing = (async () => {
      for (let at = 0; at < data.length; at += 64 * 1024) {
        const chunk = data.subarray(at, at + 64 * 1024);
        if (!outgoing.write(chunk)) await new Promise((r) => outgoing.once('drain', r));
        written += chunk.length;
      }
      outgoing.end();
    })();
    await new Promise((r) => setTimeout(r, 300));
    // Nobody read: the reader holds about one window and the writer waits.
    assert.ok(incoming.readableLength <= 2 * 1024 * 1024, `buffered ${incoming.readableLength}`);
    assert.ok(written < 4 * 1024 * 1024, `written ${written}`);
    const hash = createHash('sha256');
    for await (const chunk of incoming) hash.update(chunk as Buffer);
    await writing;
    assert.equal(hash.digest('hex'), createHash('sha256').update(data).digest('hex'));
  });

  it('reports a sender that ignores its window', async () => {
    b.readable(8, STREAM.stdout);
    const chunk = Buffer.alloc(256 * 1024);
    for (let i = 0; i < 12; i++) a.sendFrame(encodeFrame(8, STREAM.stdout, FRAME.data, chunk));
    assert.deepEqual(await a.call('echo', 2).result, { method: 'echo', args: 2 });
    assert.ok(violations.includes('bytes sent past the stream window'), JSON.stringify(violations));
    violations.length = 0;
  });

  it('drops bytes for a stream nobody opened, and reports a malformed frame', async () => {
    a.sendFrame(encodeFrame(99, STREAM.stdout, FRAME.data, Buffer.from('stray')));
    a.sendFrame(Buffer.from([1, 2]));
    assert.deepEqual(await a.call('echo', 1).result, { method: 'echo', args: 1 });
    assert.deepEqual(violations, ['a binary frame with a bad header']);
  });
});

describe('a runner that answers what it should not', () => {
  let server: WebSocketServer;
  let runner: RemoteRunner;
  let cp: Peer;
  let host: Peer;
  const answers: Record<string, unknown> = {
    status: 'pwned',
    usage: { memoryBytes: -1, cpuSeconds: null, pids: null, oomKills: null, diskBytes: null },
    'images.get': { name: 'default', digest: 'not-a-digest', rootfs: '/', sizeBytes: 0, createdAt: '', source: 'debian', config: { env: [] } },
    resolveUser: { name: 'root', home: '/root', uid: 4_000_000, gid: 0, groups: [] },
  };

  before(async () => {
    server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise((r) => server.once('listening', r));
    const accepted = new Promise<WebSocket>((r) => server.once('connection', r));
    const client = new WebSocket(`ws://127.0.0.1:${(server.address() as AddressInfo).port}`);
    await new Promise((r) => client.once('open', r));
    const parse = (raw: unknown) => (typeof raw === 'object' && raw && typeof (raw as { t?: unknown }).t === 'string' ? (raw as { t: string }) : undefined);
    host = new Peer(client, { parse, onMessage: () => {}, onViolation: () => {}, onCall: async (method) => answers[method] });
    cp = new Peer(await accepted, { parse, onMessage: () => {}, onViolation: () => {} });
    runner = new RemoteRunner({ id: 'rnr_0000000000000000test', name: 'liar', peer: cp, policies: { policyFor: () => DENY_ALL } });
  });

  after(() => {
    cp.close();
    host.close();
    server.close();
  });

  it('refuses each malformed answer with the runner named, and passes nothing on', async () => {
    await assert.rejects(runner.status('env_000000000000'), /runner 'liar' sent a malformed answer to status/);
    await assert.rejects(runner.usage('env_000000000000', true), /malformed answer to usage/);
    await assert.rejects(runner.images.get('default'), /malformed answer to images.get/);
    const spec = { id: 'env_000000000000', hostname: 'x', image: {} as never, limits: {} as never };
    await assert.rejects(runner.resolveUser(spec, 'root'), /malformed answer to resolveUser/);
  });
});
