// The built-in agent against a scripted model server speaking the real OpenAI and
// Anthropic wire protocols (through the real SDKs), on a fixture repository in a
// temp dir: fixing a bug end to end, malformed model output, budgets, cancel,
// failing model APIs, and a second run continuing the conversation.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { BuiltinAgent, HostWorkspace, modelClientFromEnv, priceOf, TOOLS, type AgentBudget, type AgentOutcome, type ModelOptions, type ToolCall } from '../src/agent/index.ts';
import { callTool } from '../src/agent/tools/index.ts';
import { BerthError } from '../src/shared/errors.ts';
import type { TaskEventData } from '../src/shared/tasks.ts';
import { startModelServer, type ModelServer, type Protocol, type ScriptRequest, type Step } from './fakes/model-server.ts';

const KEY = 'sk-test-key';
const MODEL: Record<Protocol, string> = { openai: 'gpt-4.1', anthropic: 'claude-sonnet-4-5' };
const BUDGET: AgentBudget = { maxSteps: 30, maxTokens: null, maxCostUsd: null, deadline: null };

let repo: string;
let servers: ModelServer[] = [];

beforeEach(() => {
  repo = mkdtempSync(join(tmpdir(), 'berth-agent-'));
  writeFileSync(join(repo, 'sum.js'), 'function sum(a, b) {\n  return a - b;\n}\n\nmodule.exports = { sum };\n');
  writeFileSync(join(repo, 'test.js'), "const assert = require('node:assert');\nconst { sum } = require('./sum.js');\nassert.equal(sum(2, 3), 5);\nconsole.log('all tests passed');\n");
  execFileSync('git', ['init', '-q'], { cwd: repo });
});

afterEach(async () => {
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
  rmSync(repo, { recursive: true, force: true });
});

async function serve(script: Step[], opts: { apiKey?: string } = { apiKey: KEY }) {
  const server = await startModelServer(script, opts);
  servers.push(server);
  return server;
}

function envFor(protocol: Protocol, server: ModelServer, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  // The Anthropic SDK adds /v1 itself: give it the origin, as a user would give https://api.anthropic.com.
  return protocol === 'openai'
    ? { OPENAI_BASE_URL: server.url, OPENAI_API_KEY: KEY, BERTH_MODEL: MODEL.openai, ...extra }
    : { ANTHROPIC_BASE_URL: server.origin, ANTHROPIC_API_KEY: KEY, BERTH_MODEL: MODEL.anthropic, ...extra };
}

function agentFor(
  protocol: Protocol,
  server: ModelServer,
  opts: { budget?: Partial<AgentBudget>; signal?: AbortSignal; env?: Record<string, string>; model?: ModelOptions } = {},
) {
  const events: TaskEventData[] = [];
  const model = modelClientFromEnv(envFor(protocol, server, opts.env), { maxRetries: 1, timeoutMs: 10_000, ...opts.model });
  const agent = new BuiltinAgent({
    model,
    workspace: new HostWorkspace(repo),
    budget: { ...BUDGET, ...opts.budget },
    onEvent: (e) => events.push(e),
    signal: opts.signal,
    goal: 'Make `node test.js` pass.',
    context: 'A tiny JavaScript library. Check command: node test.js',
  });
  return { agent, events };
}

const call = (name: string, args: Record<string, unknown> | string) => ({ toolCalls: [{ name, args }] });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The script of a model that fixes the bug, checking at each step what it was sent. */
function fixingScript(): Step[] {
  return [
    (req) => {
      assert.match(req.messages[0]!.text, new RegExp(`repository at ${repo}`));
      assert.match(req.messages[0]!.text, /Check command: node test\.js/);
      assert.equal(req.messages.at(-1)!.role, 'user');
      assert.match(req.messages.at(-1)!.text, /Make `node test.js` pass/);
      assert.deepEqual(req.tools.sort(), TOOLS.map((t) => t.name).sort());
      return { ...call('run_command', { command: 'node test.js' }), usage: { input: 1000, output: 50 } };
    },
    (req) => {
      assert.match(req.lastToolResult ?? '', /AssertionError/);
      assert.match(req.lastToolResult ?? '', /\[exit code 1, /);
      return { text: 'The test fails; let me look at sum.js.', ...call('read_file', { path: 'sum.js' }), usage: { input: 1500, output: 40 } };
    },
    (req) => {
      assert.match(req.lastToolResult ?? '', /^ {5}2\t {2}return a - b;$/m);
      return { ...call('edit_file', { path: 'sum.js', old_text: 'return a - b;', new_text: 'return a + b;' }), usage: { input: 2000, output: 60 } };
    },
    (req) => {
      assert.match(req.lastToolResult ?? '', /edited sum\.js/);
      assert.match(req.lastToolResult ?? '', /return a \+ b;/);
      return { ...call('run_command', { command: 'node test.js' }), usage: { input: 2500, output: 30 } };
    },
    (req) => {
      assert.match(req.lastToolResult ?? '', /all tests passed\n\[exit code 0, /);
      return { ...call('finish', { summary: 'sum subtracted instead of adding; it adds now.' }), usage: { input: 3000, output: 70 } };
    },
  ];
}

for (const protocol of ['openai', 'anthropic'] as const) {
  test(`${protocol}: the agent reads the failure, fixes the file, runs the tests and finishes`, async () => {
    const server = await serve(fixingScript());
    const { agent, events } = agentFor(protocol, server);
    const outcome = await agent.run();
    assert.deepEqual(server.failures, []);
    assert.deepEqual(outcome, { kind: 'finished', summary: 'sum subtracted instead of adding; it adds now.' });
    assert.match(readFileSync(join(repo, 'sum.js'), 'utf8'), /return a \+ b;/);

    // Every request went to the protocol's path, with the key.
    assert.equal(server.requests.length, 5);
    for (const r of server.requests) {
      assert.equal(r.protocol, protocol);
      assert.equal(r.apiKey, KEY);
      assert.equal(r.body.model, MODEL[protocol]);
    }

    const models = events.filter((e) => e.type === 'model');
    const tools = events.filter((e) => e.type === 'tool');
    assert.equal(models.length, 5);
    assert.deepEqual(
      tools.map((t) => [t.tool, t.error, t.exitCode]),
      [
        ['run_command', false, 1],
        ['read_file', false, null],
        ['edit_file', false, null],
        ['run_command', false, 0],
        ['finish', false, null],
      ],
    );
    assert.deepEqual(tools[0]!.args, { command: 'node test.js' });
    assert.equal(models[1]!.text, 'The test fails; let me look at sum.js.');
    assert.equal(models[0]!.provider, protocol);
    assert.equal(models[0]!.via, 'agent');
    // The tool event carries the id the model gave the call.
    assert.equal(tools[0]!.id, models[0]!.toolCalls[0]!.id);

    const price = priceOf(MODEL[protocol])!;
    const expected = { steps: 5, inputTokens: 10_000, outputTokens: 250, costUsd: (10_000 * price.input + 250 * price.output) / 1e6 };
    assert.deepEqual({ ...agent.usage, costUsd: Number(agent.usage.costUsd.toFixed(9)) }, { ...expected, costUsd: Number(expected.costUsd.toFixed(9)) });
    assert.equal(
      models.reduce((n, m) => n + m.usage.inputTokens, 0),
      10_000,
    );
  });
}

test('anthropic: tool results go back as tool_result blocks for the tool_use ids, errors flagged', async () => {
  const server = await serve([call('read_file', { path: 'missing.js' }), call('finish', { summary: 'done' })]);
  const { agent } = agentFor('anthropic', server);
  assert.equal((await agent.run()).kind, 'finished');
  const second = server.requests[1]!.body;
  const toolUse = second.messages[1].content.find((b: any) => b.type === 'tool_use');
  const result = second.messages[2].content[0];
  assert.equal(result.type, 'tool_result');
  assert.equal(result.tool_use_id, toolUse.id);
  assert.equal(result.is_error, true);
  assert.match(result.content, /missing\.js does not exist/);
  assert.equal(typeof second.max_tokens, 'number');
  assert.match(second.system, /repository at/);
});

for (const protocol of ['openai', 'anthropic'] as const) {
  test(`${protocol}: malformed tool calls come back to the model as errors and the loop goes on`, async () => {
    const lastError = (req: ScriptRequest) => {
      assert.equal(req.toolResults.length, 1);
      if (protocol === 'anthropic') assert.equal(req.toolResults[0]!.isError, true);
      return req.lastToolResult ?? '';
    };
    const server = await serve([
      call('read_file', '{"path": "sum.js"'),
      (req) => {
        assert.match(lastError(req), /^Error: the arguments of read_file are not valid JSON .*\{"path": "sum\.js"/);
        return call('delete_everything', {});
      },
      (req) => {
        assert.match(lastError(req), /^Error: there is no tool named "delete_everything"; the tools are run_command, read_file/);
        return call('read_file', {});
      },
      (req) => {
        assert.match(lastError(req), /^Error: invalid arguments for read_file: path: /);
        return call('edit_file', { path: 'sum.js', old_text: 'return a * b;', new_text: 'x' });
      },
      (req) => {
        assert.match(lastError(req), /^Error: old_text was not found in sum\.js/);
        return call('edit_file', { path: 'sum.js', old_text: 'sum', new_text: 'total' });
      },
      (req) => {
        assert.match(lastError(req), /^Error: old_text occurs 2 times in sum\.js/);
        return call('edit_file', { path: 'sum.js', old_text: 'return  a - b;', new_text: 'return a + b;' });
      },
      (req) => {
        assert.match(lastError(req), /It does match if whitespace is ignored/);
        return {}; // neither text nor a tool call
      },
      (req) => {
        assert.equal(req.messages.at(-1)!.role, 'user');
        assert.match(req.messages.at(-1)!.text, /Your reply was empty/);
        return call('finish', { summary: 'gave up politely' });
      },
    ]);
    const { agent, events } = agentFor(protocol, server);
    const outcome = await agent.run();
    assert.deepEqual(server.failures, []);
    assert.deepEqual(outcome, { kind: 'finished', summary: 'gave up politely' });
    assert.equal(agent.usage.steps, 8);
    // The file was left alone.
    assert.match(readFileSync(join(repo, 'sum.js'), 'utf8'), /return a - b;/);
    const tools = events.filter((e) => e.type === 'tool');
    assert.deepEqual(
      tools.map((t) => t.error),
      [true, true, true, true, true, true, false],
    );
    assert.equal(tools[0]!.args, '{"path": "sum.js"');
    // The bad arguments are replayed as {} so that servers which parse the history accept it.
    const replayed = server.requests.at(-1)!.body;
    if (protocol === 'openai') assert.equal(replayed.messages[2].tool_calls[0].function.arguments, '{}');
    else assert.deepEqual(replayed.messages[1].content[0].input, {});
  });
}

test('a text answer without finish gets reminded twice, then becomes the summary', async () => {
  const server = await serve([
    { text: 'I think it is fine.' },
    (req) => {
      assert.match(req.messages.at(-1)!.text, /call finish/);
      return { text: 'Really, it is fine.' };
    },
    { text: 'The code is fine as it is.' },
  ]);
  const { agent, events } = agentFor('openai', server);
  assert.deepEqual(await agent.run(), { kind: 'finished', summary: 'The code is fine as it is.' });
  assert.deepEqual(server.failures, []);
  assert.equal(events.filter((e) => e.type === 'log' && e.level === 'warn').length, 2);
});

describe('budgets', () => {
  const forever: Step[] = Array.from({ length: 10 }, () => ({ ...call('run_command', { command: 'true' }), usage: { input: 40, output: 20 } }));

  test('steps', async () => {
    const server = await serve(forever);
    const { agent } = agentFor('openai', server, { budget: { maxSteps: 3 } });
    const outcome = await agent.run();
    assert.equal(outcome.kind, 'budget');
    assert.equal((outcome as Extract<AgentOutcome, { kind: 'budget' }>).which, 'steps');
    assert.equal(server.played, 3);
    assert.equal(agent.usage.steps, 3);
  });

  test('tokens', async () => {
    const server = await serve(forever);
    const { agent } = agentFor('anthropic', server, { budget: { maxTokens: 100 } });
    const outcome = await agent.run();
    assert.deepEqual(outcome, { kind: 'budget', which: 'tokens', message: 'used 120 tokens of the 100 allowed' });
    assert.equal(server.played, 2);
  });

  test('cost, with BERTH_MODEL_PRICE', async () => {
    const server = await serve(forever);
    // 60 tokens at $1000 per million each way: $0.06 a call.
    const { agent } = agentFor('openai', server, { budget: { maxCostUsd: 0.1 }, env: { BERTH_MODEL_PRICE: '1000/1000' } });
    const outcome = await agent.run();
    assert.equal(outcome.kind === 'budget' && outcome.which, 'cost');
    assert.equal(server.played, 2);
    assert.ok(Math.abs(agent.usage.costUsd - 0.12) < 1e-9);
  });

  test('time: a model call still running at the deadline is abandoned', async () => {
    const server = await serve([call('run_command', { command: 'true' }), { ...call('finish', { summary: 'late' }), delayMs: 5000 }]);
    const { agent } = agentFor('openai', server, { budget: { deadline: Date.now() + 500 } });
    const started = Date.now();
    const outcome = await agent.run();
    assert.equal(outcome.kind === 'budget' && outcome.which, 'time');
    assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
    await sleep(50);
    assert.equal(server.requests[1]!.aborted, true);
  });
});

describe('cancel', () => {
  test('while the model is answering', async () => {
    const controller = new AbortController();
    const server = await serve([
      call('run_command', { command: 'true' }),
      () => {
        setTimeout(() => controller.abort(), 100);
        return { ...call('finish', { summary: 'too late' }), delayMs: 10_000 };
      },
    ]);
    const { agent } = agentFor('anthropic', server, { signal: controller.signal });
    const started = Date.now();
    assert.deepEqual(await agent.run(), { kind: 'cancelled' });
    assert.ok(Date.now() - started < 3000);
    await sleep(50);
    assert.equal(server.requests[1]!.aborted, true);
    assert.equal(server.played, 2, 'a cancelled call is not retried');
  });

  test('while a command runs: it is killed and the next tool does not run', async () => {
    const controller = new AbortController();
    const server = await serve([
      () => {
        setTimeout(() => controller.abort(), 300);
        return { toolCalls: [{ name: 'run_command', args: { command: 'sleep 30' } }, { name: 'write_file', args: { path: 'after.txt', content: 'x' } }] };
      },
    ]);
    const { agent, events } = agentFor('openai', server, { signal: controller.signal });
    const started = Date.now();
    assert.deepEqual(await agent.run(), { kind: 'cancelled' });
    assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
    assert.equal(server.played, 1);
    const tools = events.filter((e) => e.type === 'tool');
    assert.equal(tools.length, 1);
    assert.match(tools[0]!.output, /\[cancelled\]$/);
    assert.throws(() => readFileSync(join(repo, 'after.txt')));
  });
});

describe('a failing model API ends the run with a reason', () => {
  test('500 on every attempt', async () => {
    const server = await serve(Array.from({ length: 10 }, () => ({ status: 500, message: 'the GPUs are on fire' })));
    const { agent } = agentFor('openai', server, { model: { maxRetries: 2 } });
    const outcome = await agent.run();
    assert.equal(outcome.kind, 'failed');
    assert.match((outcome as { reason: string }).reason, /OpenAI-compatible API at http:\/\/127\.0\.0\.1:\d+\/v1 kept failing \(3 attempts\): 500 .*the GPUs are on fire/);
    assert.equal(server.played, 3);
  });

  test('a 500 that goes away is retried by the SDK', async () => {
    const server = await serve([{ status: 529 }, call('finish', { summary: 'ok' })]);
    const { agent } = agentFor('anthropic', server);
    assert.deepEqual(await agent.run(), { kind: 'finished', summary: 'ok' });
    assert.equal(server.played, 2);
  });

  for (const [what, raw, contentType] of [
    ['text that is not JSON', 'garbage', 'text/plain'],
    ['JSON that does not parse', '{"choices": [', 'application/json'],
    ['JSON of the wrong shape', '{"hello": "world"}', 'application/json'],
  ] as const) {
    for (const protocol of ['openai', 'anthropic'] as const) {
      test(`${protocol}: ${what}, asked once more`, async () => {
        const server = await serve(Array.from({ length: 5 }, () => ({ raw, contentType })));
        const { agent, events } = agentFor(protocol, server);
        const outcome = await agent.run();
        assert.equal(outcome.kind, 'failed');
        assert.match((outcome as { reason: string }).reason, /API at http:\/\/127\.0\.0\.1:\d+\S* sent a reply that is not a completion/);
        assert.equal(server.played, 2);
        assert.ok(events.some((e) => e.type === 'log' && /asking the model again/.test(e.message)));
      });
    }
  }

  test('the key is refused', async () => {
    const server = await serve([call('finish', { summary: 'never' })], { apiKey: 'the-right-key' });
    const { agent } = agentFor('anthropic', server);
    const outcome = await agent.run();
    assert.equal(outcome.kind, 'failed');
    assert.match((outcome as { reason: string }).reason, /Anthropic API at .* refused the API key \(401 .*\)/);
    assert.equal(server.requests.length, 1, 'a refused key is not retried');
  });

  test('nothing listens', async () => {
    const server = await serve([]);
    await server.close();
    const { agent } = agentFor('openai', server, { model: { maxRetries: 0 } });
    const outcome = await agent.run();
    assert.equal(outcome.kind, 'failed');
    assert.match((outcome as { reason: string }).reason, /could not reach the OpenAI-compatible API at .*ECONNREFUSED/);
  });
});

test('a second run continues the same conversation', async () => {
  const server = await serve([
    (req) => {
      assert.equal(req.messages[1]!.text, 'Make `node test.js` pass.\n\nStart by running the tests.');
      return call('run_command', { command: 'node test.js' });
    },
    call('finish', { summary: 'first' }),
    (req) => {
      const roles = req.messages.map((m) => m.role);
      assert.deepEqual(roles, ['system', 'user', 'assistant', 'tool', 'assistant', 'tool', 'user']);
      assert.match(req.messages[3]!.text, /AssertionError/);
      assert.equal(req.messages[4]!.toolCalls![0]!.name, 'finish');
      assert.equal(req.messages[6]!.text, 'The checks failed: node test.js exited 1');
      return call('finish', { summary: 'second' });
    },
  ]);
  const { agent } = agentFor('openai', server);
  assert.deepEqual(await agent.run('Start by running the tests.'), { kind: 'finished', summary: 'first' });
  assert.deepEqual(await agent.run('The checks failed: node test.js exited 1'), { kind: 'finished', summary: 'second' });
  assert.deepEqual(server.failures, []);
  assert.equal(agent.usage.steps, 3);
});

describe('modelClientFromEnv', () => {
  test('picks the protocol from the model name, then from what is configured', () => {
    assert.equal(modelClientFromEnv({ ANTHROPIC_API_KEY: 'k' }, { model: 'claude-opus-4-1' }).provider, 'anthropic');
    assert.equal(modelClientFromEnv({ ANTHROPIC_API_KEY: 'k', BERTH_MODEL: 'some-model' }, {}).provider, 'anthropic');
    assert.equal(modelClientFromEnv({ ANTHROPIC_API_KEY: 'k', OPENAI_BASE_URL: 'http://localhost:11434/v1', BERTH_MODEL: 'qwen3' }, {}).provider, 'openai');
    assert.equal(modelClientFromEnv({ OPENAI_BASE_URL: 'http://localhost:8000/v1' }, { model: 'claude-x', provider: 'openai' }).provider, 'openai');
    assert.equal(modelClientFromEnv({ OPENAI_API_KEY: 'k' }, { model: 'gpt-4.1' }).model, 'gpt-4.1');
  });

  test('says what to set when nothing is configured', () => {
    assert.throws(
      () => modelClientFromEnv({}, {}),
      (err) => err instanceof BerthError && err.kind === 'unavailable' && /BERTH_MODEL/.test(err.message) && /OPENAI_API_KEY/.test(err.message) && /ANTHROPIC_API_KEY/.test(err.message),
    );
    assert.throws(() => modelClientFromEnv({ BERTH_MODEL: 'gpt-4.1' }, {}), (err) => err instanceof BerthError && err.kind === 'unavailable' && /OPENAI_API_KEY is not set/.test(err.message));
    assert.throws(() => modelClientFromEnv({ OPENAI_API_KEY: 'k', BERTH_MODEL: 'gpt-4.1', BERTH_MODEL_PRICE: 'cheap' }, {}), (err) => err instanceof BerthError && err.kind === 'invalid');
  });

  test('prices: the table, longest prefix, gateway prefixes, unknown models', () => {
    assert.deepEqual(priceOf('claude-opus-4-5-20251101'), { input: 5, output: 25 });
    assert.deepEqual(priceOf('claude-opus-4-1-20250805'), { input: 15, output: 75 });
    assert.deepEqual(priceOf('openai/gpt-4o-mini'), { input: 0.15, output: 0.6 });
    assert.equal(priceOf('qwen2.5-coder:7b'), null);
    assert.deepEqual(priceOf('qwen2.5-coder:7b', '0.5/1.5'), { input: 0.5, output: 1.5 });
  });
});

describe('tools', () => {
  const ws = () => new HostWorkspace(repo);
  let n = 0;
  const run = (name: string, args: Record<string, unknown>) => {
    const c: ToolCall = { id: `t${n++}`, name, arguments: JSON.stringify(args) };
    return callTool(TOOLS, c, { workspace: ws(), deadline: null });
  };

  test('run_command keeps the head and the tail of long output and says how much was cut', async () => {
    const out = await run('run_command', { command: 'seq 1 20000; echo oops >&2; exit 3' });
    assert.equal(out.exitCode, 3);
    assert.match(out.output, /^1\n2\n3\n/);
    assert.match(out.output, /\n\[\.\.\. \d+ bytes cut \.\.\.\]\n/);
    assert.match(out.output, /20000\noops\n\[exit code 3, [\d.]+ s\]$/);
    assert.ok(out.output.length < 17_000);
  });

  test('run_command times out', async () => {
    const out = await run('run_command', { command: 'sleep 5', timeout_seconds: 0.3 });
    assert.equal(out.exitCode, 124);
    assert.match(out.output, /timed out after 0 s and was killed/);
  });

  test('run_command does not wait for what the command left running in the background', async () => {
    const started = Date.now();
    const out = await run('run_command', { command: 'sleep 3 & echo started' });
    assert.match(out.output, /^started\n\[exit code 0, /);
    assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
  });

  test('commands do not see the host environment', async () => {
    process.env.BERTH_AGENT_TEST_SECRET = 'hunter2';
    try {
      const out = await run('run_command', { command: 'env' });
      assert.doesNotMatch(out.output, /hunter2/);
    } finally {
      delete process.env.BERTH_AGENT_TEST_SECRET;
    }
  });

  test('read_file: ranges, long files, binary files, directories', async () => {
    writeFileSync(join(repo, 'long.txt'), Array.from({ length: 3000 }, (_, i) => `line ${i + 1}`).join('\n'));
    const range = await run('read_file', { path: 'long.txt', start_line: 10, end_line: 12 });
    assert.equal(range.output, '    10\tline 10\n    11\tline 11\n    12\tline 12\n[lines 10-12 of 3000]');
    const capped = await run('read_file', { path: join(repo, 'long.txt') });
    assert.match(capped.output, /\[lines 1-2000 of 3000; read on with start_line=2001\]$/);
    const tail = await run('read_file', { path: 'long.txt', start_line: 2999 });
    assert.equal(tail.output, '  2999\tline 2999\n  3000\tline 3000');
    writeFileSync(join(repo, 'blob.bin'), Buffer.from([1, 2, 0, 3]));
    assert.match((await run('read_file', { path: 'blob.bin' })).output, /^Error: blob\.bin looks like a binary file/);
    assert.match((await run('read_file', { path: '.' })).output, /^Error: \. is a directory/);
    assert.match((await run('read_file', { path: 'sum.js', start_line: '2', end_line: '2' })).output, /^ {5}2\t {2}return a - b;\n\[lines 2-2 of 5\]$/);
  });

  test('write_file creates directories; list_files and search_files see the result', async () => {
    assert.match((await run('write_file', { path: 'lib/deep/new.js', content: 'const answer = 42;\n' })).output, /wrote lib\/deep\/new\.js \(19 bytes, 1 lines\)/);
    assert.equal(readFileSync(join(repo, 'lib/deep/new.js'), 'utf8'), 'const answer = 42;\n');
    writeFileSync(join(repo, '.gitignore'), 'ignored/\n');
    await run('write_file', { path: 'ignored/x.js', content: 'answer' });
    assert.deepEqual((await run('list_files', {})).output.split('\n').sort(), ['.gitignore', 'lib/deep/new.js', 'sum.js', 'test.js']);
    assert.equal((await run('list_files', { path: 'lib' })).output, '(relative to lib)\ndeep/new.js');
    assert.equal((await run('search_files', { pattern: 'answer\\s*=' })).output, 'lib/deep/new.js:1:const answer = 42;');
    assert.equal((await run('search_files', { pattern: 'ANSWER', ignore_case: true, path: 'lib' })).output, 'lib/deep/new.js:1:const answer = 42;');
    assert.match((await run('search_files', { pattern: 'nothing-like-this' })).output, /^no matches/);
    assert.match((await run('search_files', { pattern: '(' })).output, /^Error: /);
    // Without git: find and grep.
    rmSync(join(repo, '.git'), { recursive: true });
    assert.ok((await run('list_files', {})).output.split('\n').includes('ignored/x.js'));
    assert.match((await run('search_files', { pattern: 'answer =' })).output, /lib\/deep\/new\.js:1:const answer = 42;/);
  });

  test('edit_file keeps Windows line endings working', async () => {
    writeFileSync(join(repo, 'crlf.txt'), 'one\r\ntwo\r\nthree\r\n');
    const out = await run('edit_file', { path: 'crlf.txt', old_text: 'one\ntwo', new_text: 'one\n2' });
    assert.equal(out.error, false, out.output);
    assert.equal(readFileSync(join(repo, 'crlf.txt'), 'utf8'), 'one\r\n2\r\nthree\r\n');
  });
});
