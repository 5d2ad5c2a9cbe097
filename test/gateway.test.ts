// The LLM gateway: per-task tokens in, real keys out, usage counted, budgets enforced,
// against a scripted provider; then an agent inside a real environment, which has no
// network, reaching it through the relay on its loopback.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync, existsSync } from 'node:fs';
import { createServer, request, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { gatewayEnv, GATEWAY_SOCKET_NAME, LlmGateway, relayCommand, relayReady, type GatewayCall } from '../src/runner/gateway/index.ts';
import { ImageStore, LocalRunner, type EnvironmentSpec } from '../src/runner/index.ts';
import { DEFAULT_LIMITS } from '../src/shared/environment.ts';
import { newId } from '../src/shared/ids.ts';
import { runToEnd } from './helpers.ts';

const REPO = new URL('..', import.meta.url).pathname.replace(/\/$/, '');
const IMAGE_DIR = process.env.BERTH_IMAGE_DIR ?? join(REPO, '.cache', 'images');

const OPENAI_KEY = `sk-real-openai-${randomBytes(16).toString('hex')}`;
const ANTHROPIC_KEY = `sk-ant-real-${randomBytes(16).toString('hex')}`;
const logger = pino({ level: process.env.BERTH_TEST_LOG ?? 'silent' });

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(what: string, check: () => boolean | Promise<boolean>, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

// ---- a scripted provider: OpenAI's and Anthropic's shapes, recording what it was sent ----

interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: any;
  /** The gateway hung up before the answer was complete. */
  cutOff: boolean;
}

function fakeProvider() {
  const seen: Seen[] = [];
  // Streams stop halfway until released, so a test can see a first chunk arrive alone.
  let release: () => void = () => {};
  let gate = Promise.resolve();
  const hold = () => {
    gate = new Promise<void>((r) => (release = r));
  };
  const sse = (res: ServerResponse) => res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  const event = (res: ServerResponse, data: unknown, name?: string) => res.write(`${name ? `event: ${name}\n` : ''}data: ${JSON.stringify(data)}\n\n`);

  const server = createServer(async (req, res) => {
    let raw = '';
    for await (const chunk of req) raw += chunk;
    const body = raw ? JSON.parse(raw) : undefined;
    const entry: Seen = { method: req.method!, url: req.url!, headers: req.headers, body, cutOff: false };
    seen.push(entry);
    res.on('close', () => (entry.cutOff = !res.writableFinished));
    const key = String(req.headers.authorization ?? req.headers['x-api-key'] ?? '');
    const last = body?.messages?.at(-1)?.content ?? body?.input ?? '';
    const path = req.url!.split('?')[0];
    if (last === 'slow') await gate;

    if (last === 'leak') {
      // As some providers do for a bad key: echo it, in a header and in the body.
      res.writeHead(401, { 'content-type': 'application/json', 'x-echo': key });
      return res.end(JSON.stringify({ error: { message: `Incorrect API key provided: ${key}`, type: 'invalid_request_error' } }));
    }
    if (last === 'leak-stream') {
      sse(res);
      res.write(`data: {"said":"${key.slice(0, 12)}`);
      await sleep(50);
      res.write(`${key.slice(12)}"}\n\n`);
      return res.end('data: [DONE]\n\n');
    }
    if (req.method === 'GET' && path === '/v1/models') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ object: 'list', data: [{ id: 'gpt-4o', object: 'model' }] }));
    }
    if (path === '/v1/chat/completions' && body.stream) {
      sse(res);
      const chunk = (delta: unknown, extra: object = {}) => event(res, { id: 'c1', object: 'chat.completion.chunk', model: 'gpt-4o-2024-08-06', choices: [{ index: 0, delta, finish_reason: null }], ...extra });
      chunk({ role: 'assistant', content: 'Hel' });
      await gate;
      chunk({ content: 'lo' });
      if (body.stream_options?.include_usage) {
        event(res, { id: 'c1', object: 'chat.completion.chunk', model: 'gpt-4o-2024-08-06', choices: [], usage: { prompt_tokens: 13, completion_tokens: 5, total_tokens: 18 } });
      }
      return res.end('data: [DONE]\n\n');
    }
    if (path === '/v1/chat/completions') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({
        id: 'c2', object: 'chat.completion', model: 'gpt-4o-2024-08-06',
        choices: [{ index: 0, message: { role: 'assistant', content: `echo: ${last}` }, finish_reason: 'stop' }],
        usage: { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18, prompt_tokens_details: { cached_tokens: 4 } },
      }));
    }
    if (path === '/v1/responses' && body.stream) {
      sse(res);
      event(res, { type: 'response.created', response: { id: 'r1', model: 'gpt-5', usage: null } }, 'response.created');
      event(res, { type: 'response.output_text.delta', delta: 'hi' }, 'response.output_text.delta');
      event(res, { type: 'response.completed', response: { id: 'r1', model: 'gpt-5', usage: { input_tokens: 31, output_tokens: 3 } } }, 'response.completed');
      return res.end();
    }
    if (path === '/v1/responses') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ id: 'r2', object: 'response', model: 'gpt-5', output: [], usage: { input_tokens: 30, output_tokens: 12 } }));
    }
    if (path === '/v1/messages' && body.stream) {
      sse(res);
      event(res, { type: 'message_start', message: { id: 'm1', model: 'claude-sonnet-4-5-20250929', usage: { input_tokens: 20, cache_read_input_tokens: 100, cache_creation_input_tokens: 0, output_tokens: 1 } } }, 'message_start');
      event(res, { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Hel' } }, 'content_block_delta');
      await gate;
      event(res, { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'lo' } }, 'content_block_delta');
      event(res, { type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage: { output_tokens: 9 } }, 'message_delta');
      event(res, { type: 'message_stop' }, 'message_stop');
      return res.end();
    }
    if (path === '/v1/messages') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({
        id: 'm2', type: 'message', role: 'assistant', model: 'claude-sonnet-4-5-20250929',
        content: [{ type: 'text', text: `echo: ${last}` }],
        usage: { input_tokens: 20, cache_read_input_tokens: 100, cache_creation_input_tokens: 10, output_tokens: 9 },
      }));
    }
    res.writeHead(404).end();
  });
  return { server, seen, hold, release: () => release() };
}

async function listening(server: Server): Promise<string> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

let provider: ReturnType<typeof fakeProvider>;
let gateway: LlmGateway;
let url: string;

before(async () => {
  provider = fakeProvider();
  const upstream = await listening(provider.server);
  gateway = new LlmGateway({
    logger,
    upstreams: { openai: { baseUrl: `${upstream}/v1`, apiKey: OPENAI_KEY }, anthropic: { baseUrl: upstream, apiKey: ANTHROPIC_KEY } },
  });
  url = (await gateway.listenTcp(0)).url;
});
after(async () => {
  await gateway?.close();
  provider?.server.closeAllConnections();
  provider?.server.close();
});

/** A task's token, and the calls reported for it. */
function task(maxTokens: number | null = null) {
  const calls: GatewayCall[] = [];
  const issued = gateway.issue({ taskId: newId('task'), maxTokens, onCall: (c) => calls.push(c) });
  return { ...issued, calls };
}

const openai = (token: string, path: string, body?: unknown, init: RequestInit = {}) =>
  fetch(`${url}/openai/v1${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    ...init,
  });

const anthropic = (token: string, path: string, body: unknown) =>
  fetch(`${url}/anthropic/v1${path}`, {
    method: 'POST',
    headers: { 'x-api-key': token, 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
    body: JSON.stringify(body),
  });

const chat = (content: string, extra: object = {}) => ({ model: 'gpt-4o', messages: [{ role: 'user', content }], ...extra });
const message = (content: string, extra: object = {}) => ({ model: 'claude-sonnet-4-5', max_tokens: 100, messages: [{ role: 'user', content }], ...extra });

/** The provider saw the real key, and the task's token nowhere. */
function assertRealKey(seen: Seen | undefined, token: string, provider: 'openai' | 'anthropic') {
  assert.ok(seen, 'the provider was called');
  if (provider === 'openai') {
    assert.equal(seen.headers.authorization, `Bearer ${OPENAI_KEY}`);
    assert.equal(seen.headers['x-api-key'], undefined);
  } else {
    assert.equal(seen.headers['x-api-key'], ANTHROPIC_KEY);
    assert.equal(seen.headers.authorization, undefined);
    assert.equal(seen.headers['anthropic-version'], '2023-06-01');
  }
  assert.ok(!JSON.stringify(seen).includes(token), 'the task token never reaches the provider');
}

function assertNoKeys(text: string) {
  for (const key of [OPENAI_KEY, ANTHROPIC_KEY]) assert.ok(!text.includes(key), `a real key reached the client: ${text}`);
}

describe('forwarding', () => {
  test('an OpenAI chat completion goes out with the real key, and its usage is recorded', async () => {
    const t = task();
    const res = await openai(t.token, '/chat/completions', chat('ping'));
    const text = await res.text();
    assert.equal(res.status, 200, text);
    assert.equal(JSON.parse(text).choices[0].message.content, 'echo: ping');
    assertNoKeys(text);
    assertRealKey(provider.seen.at(-1), t.token, 'openai');
    assert.equal(provider.seen.at(-1)!.url, '/v1/chat/completions');
    await until('the call is recorded', () => t.calls.length === 1);
    const call = t.calls[0]!;
    assert.equal(call.provider, 'openai');
    assert.equal(call.model, 'gpt-4o-2024-08-06');
    assert.equal(call.status, 200);
    assert.equal(call.stream, false);
    assert.deepEqual([call.usage.inputTokens, call.usage.outputTokens], [11, 7]);
    assert.equal(call.cache.readTokens, 4);
    assert.ok(call.usage.costUsd > 0, 'gpt-4o is priced');
    assert.ok(call.durationMs >= 0);
    assert.deepEqual(t.usage(), { inputTokens: 11, outputTokens: 7, costUsd: call.usage.costUsd });
  });

  test('a streamed chat completion passes through chunk by chunk and reports its usage', async () => {
    const t = task();
    provider.hold();
    const res = await openai(t.token, '/chat/completions', chat('stream me', { stream: true }));
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    // The provider is holding the rest back: this chunk came through on its own.
    const first = decoder.decode((await reader.read()).value);
    assert.match(first, /"content":"Hel"/);
    assert.doesNotMatch(first, /"content":"lo"/);
    provider.release();
    let rest = '';
    for (let r = await reader.read(); !r.done; r = await reader.read()) rest += decoder.decode(r.value, { stream: true });
    assert.match(rest, /"content":"lo"/);
    assert.match(rest, /data: \[DONE\]/);
    assertNoKeys(first + rest);
    // The gateway asked for the usage the client did not.
    assert.deepEqual(provider.seen.at(-1)!.body.stream_options, { include_usage: true });
    assertRealKey(provider.seen.at(-1), t.token, 'openai');
    await until('the call is recorded', () => t.calls.length === 1);
    assert.deepEqual([t.calls[0]!.usage.inputTokens, t.calls[0]!.usage.outputTokens, t.calls[0]!.stream], [13, 5, true]);
  });

  test('the Responses API, whole and streamed, is counted', async () => {
    const t = task();
    const whole = await openai(t.token, '/responses', { model: 'gpt-5', input: 'hi' });
    assert.equal(whole.status, 200);
    await whole.text();
    const streamed = await openai(t.token, '/responses', { model: 'gpt-5', input: 'hi', stream: true });
    assert.match(await streamed.text(), /response\.completed/);
    await until('both calls are recorded', () => t.calls.length === 2);
    assert.deepEqual(t.calls.map((c) => [c.model, c.usage.inputTokens, c.usage.outputTokens]), [['gpt-5', 30, 12], ['gpt-5', 31, 3]]);
  });

  test('an Anthropic message goes out with the real key; cached input counts as input', async () => {
    const t = task();
    const res = await anthropic(t.token, '/messages?beta=true', message('ping'));
    const text = await res.text();
    assert.equal(res.status, 200, text);
    assert.equal(JSON.parse(text).content[0].text, 'echo: ping');
    assertNoKeys(text);
    const seen = provider.seen.at(-1);
    assertRealKey(seen, t.token, 'anthropic');
    assert.equal(seen!.url, '/v1/messages?beta=true', 'the query string is passed on');
    await until('the call is recorded', () => t.calls.length === 1);
    const call = t.calls[0]!;
    assert.equal(call.provider, 'anthropic');
    assert.equal(call.model, 'claude-sonnet-4-5-20250929');
    assert.deepEqual([call.usage.inputTokens, call.usage.outputTokens], [130, 9]);
    assert.deepEqual(call.cache, { readTokens: 100, writeTokens: 10 });
    // claude-sonnet-4 at $3/$15 per million: 20 plain + 100 read at a tenth + 10 written at 1.25.
    assert.ok(Math.abs(call.usage.costUsd - (20 * 3 + 100 * 0.3 + 10 * 3.75 + 9 * 15) / 1e6) < 1e-12, String(call.usage.costUsd));
  });

  test('a streamed Anthropic message passes through and its usage comes from message_start and message_delta', async () => {
    const t = task();
    provider.hold();
    const res = await fetch(`${url}/anthropic/v1/messages`, {
      method: 'POST',
      // Claude Code's other way to send a key: a bearer token.
      headers: { authorization: `Bearer ${t.token}`, 'content-type': 'application/json' },
      body: JSON.stringify(message('stream me', { stream: true })),
    });
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let first = '';
    while (!first.includes('"Hel"')) first += decoder.decode((await reader.read()).value);
    assert.doesNotMatch(first, /"lo"/);
    provider.release();
    let rest = '';
    for (let r = await reader.read(); !r.done; r = await reader.read()) rest += decoder.decode(r.value, { stream: true });
    assert.match(rest, /event: message_stop/);
    assertRealKey(provider.seen.at(-1), t.token, 'anthropic');
    await until('the call is recorded', () => t.calls.length === 1);
    assert.deepEqual([t.calls[0]!.usage.inputTokens, t.calls[0]!.usage.outputTokens, t.calls[0]!.stream], [120, 9, true]);
  });

  test('the model list is passed through and is not a model call', async () => {
    const t = task();
    const res = await openai(t.token, '/models');
    assert.equal(res.status, 200);
    assert.equal((await res.json()).data[0].id, 'gpt-4o');
    assertRealKey(provider.seen.at(-1), t.token, 'openai');
    await sleep(50);
    assert.equal(t.calls.length, 0);
  });

  test('a key the provider echoes is scrubbed from headers, bodies and streams split mid-key', async () => {
    const t = task();
    const res = await openai(t.token, '/chat/completions', chat('leak'));
    const text = await res.text();
    assert.equal(res.status, 401);
    assert.match(text, /Incorrect API key provided: Bearer \[secret:openai-api-key\]/);
    assert.equal(res.headers.get('x-echo'), 'Bearer [secret:openai-api-key]');
    assertNoKeys(text + JSON.stringify([...res.headers]));

    const streamed = await anthropic(t.token, '/messages', message('leak-stream', { stream: true }));
    const body = await streamed.text();
    assert.equal(body, 'data: {"said":"[secret:anthropic-api-key]"}\n\ndata: [DONE]\n\n');
    await until('both calls are recorded', () => t.calls.length === 2);
    assert.deepEqual(t.calls.map((c) => c.status), [401, 200]);
  });

  test('a client that hangs up mid-stream cuts the provider off, and the call is still recorded', async () => {
    const t = task();
    provider.hold();
    const abort = new AbortController();
    const res = await openai(t.token, '/chat/completions', chat('then leave', { stream: true }), { signal: abort.signal });
    await res.body!.getReader().read();
    abort.abort();
    const seen = provider.seen.at(-1)!;
    await until('the provider is cut off', () => seen.cutOff);
    provider.release();
    await until('the call is recorded', () => t.calls.length === 1);
    assert.equal(t.calls[0]!.model, 'gpt-4o-2024-08-06');

    // Gone before the provider has answered at all.
    provider.hold();
    const early = new AbortController();
    const pending = openai(t.token, '/chat/completions', chat('slow'), { signal: early.signal }).catch(() => 'aborted');
    await until('the provider has the request', () => provider.seen.at(-1)?.body.messages[0].content === 'slow');
    early.abort();
    assert.equal(await pending, 'aborted');
    const slow = provider.seen.at(-1)!;
    await until('the provider is cut off', () => slow.cutOff);
    provider.release();
    await until('the call is recorded', () => t.calls.length === 2);
    assert.deepEqual([t.calls[1]!.status, t.calls[1]!.model, t.calls[1]!.usage.inputTokens], [499, 'gpt-4o', 0]);
  });
});

describe('refusals', () => {
  test('a task over its token budget gets 429 in its protocol\'s shape, and the provider is not called', async () => {
    const t = task(30);
    for (let i = 0; i < 2; i++) {
      const ok = await openai(t.token, '/chat/completions', chat('spend'));
      assert.equal(ok.status, 200);
      await ok.text();
      await until('the call is recorded', () => t.calls.length === i + 1);
    }
    // 2 × 18 = 36 ≥ 30: spent.
    const before = provider.seen.length;
    const refused = await openai(t.token, '/chat/completions', chat('more'));
    assert.equal(refused.status, 429);
    assert.equal(refused.headers.get('x-should-retry'), 'false');
    const body = await refused.json();
    assert.equal(body.error.code, 'insufficient_quota');
    assert.match(body.error.message, /token budget is spent: it has used 36 of its 30 tokens/);
    const viaAnthropic = await anthropic(t.token, '/messages', message('more'));
    assert.equal(viaAnthropic.status, 429);
    assert.deepEqual(Object.keys(await viaAnthropic.json()), ['type', 'error']);
    assert.equal(provider.seen.length, before, 'no call reached the provider');
    assert.equal(t.calls.length, 2);
  });

  test('a revoked or unknown token gets 401 in its protocol\'s shape', async () => {
    const t = task();
    const ok = await openai(t.token, '/chat/completions', chat('hi'));
    assert.equal(ok.status, 200);
    await ok.text();
    t.revoke();
    const before = provider.seen.length;
    const revoked = await openai(t.token, '/chat/completions', chat('hi'));
    assert.equal(revoked.status, 401);
    assert.equal((await revoked.json()).error.code, 'invalid_api_key');
    const viaAnthropic = await anthropic(t.token, '/messages', message('hi'));
    assert.equal(viaAnthropic.status, 401);
    const body = await viaAnthropic.json();
    assert.equal(body.type, 'error');
    assert.equal(body.error.type, 'authentication_error');
    for (const token of ['berth-llm-nope', OPENAI_KEY, '']) {
      assert.equal((await openai(token, '/chat/completions', chat('hi'))).status, 401);
    }
    assert.equal((await fetch(`${url}/openai/v1/chat/completions`, { method: 'POST', body: '{}' })).status, 401);
    assert.equal(provider.seen.length, before);
  });

  test('unknown paths are 404, wrong methods 405, in the shape of the protocol asked', async () => {
    const t = task();
    const embeddings = await openai(t.token, '/embeddings', { input: 'x' });
    assert.equal(embeddings.status, 404);
    assert.match((await embeddings.json()).error.message, /no POST \/openai\/v1\/embeddings/);
    const complete = await anthropic(t.token, '/complete', {});
    assert.equal(complete.status, 404);
    assert.equal((await complete.json()).error.type, 'not_found_error');
    assert.equal((await fetch(`${url}/`)).status, 404);
    assert.equal((await openai(t.token, '/chat/completions')).status, 405);
  });

  test('a body over the limit is refused with 413; a body that is not JSON with 400', async () => {
    const small = new LlmGateway({ logger, upstreams: { openai: { baseUrl: 'http://127.0.0.1:9/v1', apiKey: OPENAI_KEY } }, maxBodyBytes: 1024 });
    try {
      const at = await small.listenTcp(0);
      const { token } = small.issue({ taskId: 't', maxTokens: null, onCall: () => {} });
      const big = await fetch(`${at.url}/openai/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: JSON.stringify(chat('x'.repeat(2000))) });
      assert.equal(big.status, 413);
      assert.match((await big.json()).error.message, /larger than the LLM gateway's limit of 1024 bytes/);
      // Without a length up front: counted as it arrives.
      const chunked = await fetch(`${at.url}/openai/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}` },
        body: new ReadableStream({ start(c) { c.enqueue(new TextEncoder().encode('x'.repeat(4096))); c.close(); } }),
        duplex: 'half',
      } as RequestInit);
      assert.equal(chunked.status, 413);
      const notJson = await fetch(`${at.url}/openai/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: 'hello' });
      assert.equal(notJson.status, 400);
    } finally {
      await small.close();
    }
  });

  test('a provider that cannot be reached is 502, and the attempt is recorded', async () => {
    const down = new LlmGateway({ logger, upstreams: { openai: { baseUrl: 'http://127.0.0.1:9/v1', apiKey: OPENAI_KEY } } });
    try {
      const at = await down.listenTcp(0);
      const calls: GatewayCall[] = [];
      const { token } = down.issue({ taskId: 't', maxTokens: null, onCall: (c) => calls.push(c) });
      const res = await fetch(`${at.url}/openai/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: JSON.stringify(chat('hi')) });
      assert.equal(res.status, 502);
      const text = await res.text();
      assert.match(text, /could not reach OpenAI/);
      assertNoKeys(text);
      await until('the attempt is recorded', () => calls.length === 1);
      assert.deepEqual([calls[0]!.status, calls[0]!.model, calls[0]!.usage.inputTokens], [502, 'gpt-4o', 0]);
      // No Anthropic provider configured: 503, saying what to set.
      const none = await fetch(`${at.url}/anthropic/v1/messages`, { method: 'POST', headers: { 'x-api-key': token }, body: JSON.stringify(message('hi')) });
      assert.equal(none.status, 503);
      assert.match((await none.json()).error.message, /set ANTHROPIC_API_KEY/);
    } finally {
      await down.close();
    }
  });
});

describe('unix sockets', () => {
  test('the gateway serves a socket anyone may connect to, and removes it when closed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'berth-gateway-'));
    try {
      const path = join(dir, GATEWAY_SOCKET_NAME);
      const close = await gateway.listenUnix(path);
      assert.equal(statSync(path).mode & 0o777, 0o666);
      const t = task();
      const reply = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = request({ socketPath: path, method: 'POST', path: '/openai/v1/chat/completions', headers: { authorization: `Bearer ${t.token}` } }, (res) => {
          let body = '';
          res.on('data', (b: Buffer) => (body += b));
          res.on('end', () => resolve({ status: res.statusCode!, body }));
        });
        req.on('error', reject);
        req.end(JSON.stringify(chat('over a socket')));
      });
      assert.equal(reply.status, 200);
      assert.equal(JSON.parse(reply.body).choices[0].message.content, 'echo: over a socket');
      await close();
      assert.equal(existsSync(path), false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});


describe('from inside an environment', () => {
  let dataDir: string;
  let runner: LocalRunner;
  let spec: EnvironmentSpec;

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'berth-gateway-env-'));
    const images = new ImageStore({ dir: IMAGE_DIR, logger });
    runner = new LocalRunner({ dataDir, images, logger });
    spec = { id: newId('env'), hostname: 'gateway-test', image: await images.resolve('default'), limits: DEFAULT_LIMITS };
    await runner.start(spec);
  });
  after(async () => {
    await runner?.remove(spec.id).catch(() => {});
    runner?.close();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  test('an agent with no network reaches the gateway through the relay, and only with its token', async () => {
    const closeSocket = await gateway.listenUnix(join(runner.agentDir(spec.id), GATEWAY_SOCKET_NAME));
    const relay = runner.exec(spec, { cmd: relayCommand() });
    const relayExit = relay.exited;
    await relayReady(relay);
    const t = task();
    const env = gatewayEnv(t.token);
    try {
      const curl = await runToEnd(runner.exec(spec, {
        cmd: ['sh', '-c', `curl -sS "$OPENAI_BASE_URL/chat/completions" -H "Authorization: Bearer $OPENAI_API_KEY" -H 'content-type: application/json' -d '{"model":"gpt-4o","messages":[{"role":"user","content":"from inside"}]}'`],
        env,
      }));
      assert.equal(curl.exitCode, 0, curl.stderr);
      assert.equal(JSON.parse(curl.stdout).choices[0].message.content, 'echo: from inside');
      assertRealKey(provider.seen.at(-1), t.token, 'openai');

      // A streamed Anthropic call from node, as an SDK would make it, through the same relay.
      const script = `
        const res = await fetch(process.env.ANTHROPIC_BASE_URL + '/v1/messages', {
          method: 'POST',
          headers: { 'x-api-key': process.env.ANTHROPIC_API_KEY, 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 10, stream: true, messages: [{ role: 'user', content: 'hi' }] }),
        });
        process.stdout.write(res.status + '\\n' + await res.text());`;
      const node = await runToEnd(runner.exec(spec, { cmd: ['node', '--input-type=module', '-e', script], env }));
      assert.equal(node.exitCode, 0, node.stderr);
      assert.match(node.stdout, /^200\n/);
      assert.match(node.stdout, /event: message_stop/);
      await until('both calls are recorded', () => t.calls.length === 2);
      assert.deepEqual(t.calls.map((c) => [c.provider, c.usage.outputTokens]), [['openai', 7], ['anthropic', 9]]);

      // The relay holds nothing once its clients are gone: stdio, its listener and its signalfd.
      const fds = `for p in /proc/[0-9]*; do case "$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)" in '/.berth/init --relay '*) ls $p/fd | wc -l;; esac; done`;
      await until('the relay closes finished connections', async () => (await runToEnd(runner.exec(spec, { cmd: ['sh', '-c', fds] }))).stdout.trim() === '5');

      t.revoke();
      const refused = await runToEnd(runner.exec(spec, {
        cmd: ['sh', '-c', `curl -s -o /dev/null -w '%{http_code}' "$OPENAI_BASE_URL/models" -H "Authorization: Bearer $OPENAI_API_KEY"`],
        env,
      }));
      assert.equal(refused.stdout, '401');
    } finally {
      await relay.signal('SIGTERM');
      await closeSocket();
    }
    assert.equal((await relayExit).exitCode, 0, 'the relay exits cleanly on SIGTERM');
  });
});
