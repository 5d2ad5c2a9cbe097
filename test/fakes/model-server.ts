// A scripted model server for tests: speaks the real wire shapes of the OpenAI Chat
// Completions and the Anthropic Messages protocols, so the real SDKs talk to it, and
// plays a script of replies, one per HTTP request (SDK retries included).
//
//   const server = await startModelServer([step1, step2, ...], { apiKey: 'sk-test' });
//   OPENAI_BASE_URL = ANTHROPIC_BASE_URL = server.url
//
// The OpenAI SDK posts to `${baseURL}/chat/completions`, the Anthropic SDK to
// `${baseURL}/v1/messages`. The server routes on how the path ends, so `url` (…/v1)
// works as the base URL of both; `origin` (no /v1) works too.
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type Protocol = 'openai' | 'anthropic';

/** A message of the conversation as the model received it, in either protocol. */
export interface ReceivedMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  text: string;
  /** For assistant messages: the tool calls it made, arguments parsed when they are JSON. */
  toolCalls?: { id: string; name: string; args: unknown }[];
  /** For tool messages: which call this is the result of. */
  toolCallId?: string;
  isError?: boolean;
}

export interface ScriptRequest {
  protocol: Protocol;
  /** Which step this is, from 0. */
  step: number;
  messages: ReceivedMessage[];
  /** The tool results sent since the model's last turn. */
  toolResults: { id: string; text: string; isError: boolean }[];
  /** The text of the last of those. */
  lastToolResult?: string;
  /** Names of the tools offered. */
  tools: string[];
  body: any;
}

export interface ToolCallReply {
  name: string;
  /** An object, or a string sent as is (for malformed JSON). */
  args: Record<string, unknown> | string;
  id?: string;
}

export type Reply =
  | { text?: string; toolCalls?: ToolCallReply[]; usage?: { input: number; output: number }; delayMs?: number }
  /** An HTTP error in the protocol's error shape. */
  | { status: number; message?: string; delayMs?: number }
  /** Any bytes at all. */
  | { raw: string; status?: number; contentType?: string; delayMs?: number };

export type Step = Reply | ((req: ScriptRequest) => Reply | Promise<Reply>);

export interface RecordedRequest {
  method: string;
  path: string;
  protocol: Protocol | null;
  headers: IncomingHttpHeaders;
  /** From x-api-key or Authorization: Bearer. */
  apiKey: string | null;
  body: any;
  /** The step it was answered with; null when it did not reach the script (401, 404, bad JSON). */
  step: number | null;
  /** The client hung up before the answer (it was cancelled). */
  aborted: boolean;
}

export interface ModelServer {
  /** http://127.0.0.1:PORT/v1: the base URL for either SDK. */
  url: string;
  origin: string;
  requests: RecordedRequest[];
  /** Steps played so far. */
  readonly played: number;
  /** Errors thrown by step functions (failed assertions): a test should expect none. */
  failures: string[];
  close(): Promise<void>;
}

export interface ModelServerOptions {
  /** Answer 401 unless this key is sent. */
  apiKey?: string;
  /** Sent as retry-after-ms with error replies, so SDK retries are quick. Default 1. */
  retryAfterMs?: number;
}

const DEFAULT_USAGE = { input: 10, output: 5 };

export async function startModelServer(script: Step[], opts: ModelServerOptions = {}): Promise<ModelServer> {
  const requests: RecordedRequest[] = [];
  const failures: string[] = [];
  let played = 0;

  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const protocol: Protocol | null = path.endsWith('/chat/completions') ? 'openai' : path.endsWith('/messages') ? 'anthropic' : null;
    const apiKey = (req.headers['x-api-key'] as string | undefined) ?? /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1] ?? null;
    let body: any = Buffer.concat(chunks).toString('utf8');
    try {
      body = JSON.parse(body);
    } catch {
      // kept as text
    }
    const record: RecordedRequest = { method: req.method ?? '', path, protocol, headers: req.headers, apiKey, body, step: null, aborted: false };
    requests.push(record);
    res.on('close', () => {
      if (!res.writableFinished) record.aborted = true;
    });

    if (!protocol || req.method !== 'POST') return sendError(res, protocol ?? 'openai', 404, `model-server: no route for ${req.method} ${path}`);
    if (opts.apiKey !== undefined && apiKey !== opts.apiKey) return sendError(res, protocol, 401, 'invalid x-api-key / API key');
    if (typeof body !== 'object' || body === null) return sendError(res, protocol, 400, 'model-server: the body is not JSON');

    const step = played++;
    record.step = step;
    const entry = script[step];
    let reply: Reply;
    try {
      if (entry === undefined) reply = { status: 500, message: `model-server: the script has no step ${step} (it has ${script.length})` };
      else reply = typeof entry === 'function' ? await entry(scriptRequest(protocol, step, body)) : entry;
    } catch (err) {
      // A failed assertion inside a step: kept for the test, and answered with a 500.
      failures.push(`step ${step}: ${(err as Error).message}`);
      reply = { status: 500, message: `model-server: step ${step} threw: ${(err as Error).message}` };
    }
    if (reply.delayMs) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, reply.delayMs);
        res.on('close', () => {
          clearTimeout(timer);
          resolve();
        });
      });
      if (res.destroyed || record.aborted) return;
    }

    if ('raw' in reply) {
      res.writeHead(reply.status ?? 200, { 'content-type': reply.contentType ?? 'application/json' });
      return res.end(reply.raw);
    }
    if ('status' in reply) return sendError(res, protocol, reply.status, reply.message ?? `model-server: scripted ${reply.status}`, opts.retryAfterMs ?? 1);
    const json = protocol === 'openai' ? openaiReply(reply, step, body.model) : anthropicReply(reply, step, body.model);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(json));
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const origin = `http://127.0.0.1:${port}`;
  return {
    url: `${origin}/v1`,
    origin,
    requests,
    get played() {
      return played;
    },
    failures,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

type ReplyContent = Extract<Reply, { toolCalls?: unknown }>;

function openaiReply(reply: ReplyContent, step: number, model: unknown) {
  const usage = reply.usage ?? DEFAULT_USAGE;
  const calls = (reply.toolCalls ?? []).map((c, i) => ({
    id: c.id ?? `call_${step}_${i}`,
    type: 'function',
    function: { name: c.name, arguments: typeof c.args === 'string' ? c.args : JSON.stringify(c.args) },
  }));
  return {
    id: `chatcmpl-fake-${step}`,
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [
      {
        index: 0,
        message: { role: 'assistant', content: reply.text ?? null, refusal: null, ...(calls.length ? { tool_calls: calls } : {}) },
        finish_reason: calls.length ? 'tool_calls' : 'stop',
        logprobs: null,
      },
    ],
    usage: { prompt_tokens: usage.input, completion_tokens: usage.output, total_tokens: usage.input + usage.output },
  };
}

function anthropicReply(reply: ReplyContent, step: number, model: unknown) {
  const usage = reply.usage ?? DEFAULT_USAGE;
  const content: unknown[] = [];
  if (reply.text !== undefined) content.push({ type: 'text', text: reply.text });
  (reply.toolCalls ?? []).forEach((c, i) => content.push({ type: 'tool_use', id: c.id ?? `toolu_${step}_${i}`, name: c.name, input: c.args }));
  return {
    id: `msg_fake_${step}`,
    type: 'message',
    role: 'assistant',
    model,
    content,
    stop_reason: reply.toolCalls?.length ? 'tool_use' : 'end_turn',
    stop_sequence: null,
    usage: { input_tokens: usage.input, output_tokens: usage.output },
  };
}

const ERROR_TYPE: Record<number, [openai: string, anthropic: string]> = {
  400: ['invalid_request_error', 'invalid_request_error'],
  401: ['invalid_request_error', 'authentication_error'],
  404: ['invalid_request_error', 'not_found_error'],
  429: ['rate_limit_exceeded', 'rate_limit_error'],
  529: ['server_error', 'overloaded_error'],
};

function sendError(res: ServerResponse, protocol: Protocol, status: number, message: string, retryAfterMs?: number): void {
  const [openaiType, anthropicType] = ERROR_TYPE[status] ?? ['server_error', 'api_error'];
  const body =
    protocol === 'openai'
      ? { error: { message, type: openaiType, param: null, code: status === 401 ? 'invalid_api_key' : null } }
      : { type: 'error', error: { type: anthropicType, message } };
  res.writeHead(status, { 'content-type': 'application/json', ...(retryAfterMs !== undefined ? { 'retry-after-ms': String(retryAfterMs) } : {}) });
  res.end(JSON.stringify(body));
}

/** The conversation of a request, the same shape whichever protocol carried it. */
function scriptRequest(protocol: Protocol, step: number, body: any): ScriptRequest {
  const messages = protocol === 'openai' ? fromOpenAI(body) : fromAnthropic(body);
  let lastAssistant = -1;
  messages.forEach((m, i) => {
    if (m.role === 'assistant') lastAssistant = i;
  });
  const toolResults = messages
    .slice(lastAssistant + 1)
    .filter((m) => m.role === 'tool')
    .map((m) => ({ id: m.toolCallId ?? '', text: m.text, isError: m.isError ?? false }));
  const tools = ((body.tools ?? []) as any[]).map((t) => (protocol === 'openai' ? t.function?.name : t.name) as string);
  return { protocol, step, messages, toolResults, ...(toolResults.length ? { lastToolResult: toolResults.at(-1)!.text } : {}), tools, body };
}

function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .filter((b) => b?.type === 'text')
      .map((b) => b.text as string)
      .join('\n');
  }
  return '';
}

function parseArgs(args: unknown): unknown {
  if (typeof args !== 'string') return args;
  try {
    return JSON.parse(args);
  } catch {
    return args;
  }
}

function fromOpenAI(body: any): ReceivedMessage[] {
  return ((body.messages ?? []) as any[]).map((m): ReceivedMessage => {
    switch (m.role) {
      case 'system':
      case 'developer':
        return { role: 'system', text: textOf(m.content) };
      case 'assistant':
        return {
          role: 'assistant',
          text: textOf(m.content),
          toolCalls: ((m.tool_calls ?? []) as any[]).map((c) => ({ id: c.id, name: c.function?.name, args: parseArgs(c.function?.arguments) })),
        };
      case 'tool':
        return { role: 'tool', text: textOf(m.content), toolCallId: m.tool_call_id };
      default:
        return { role: 'user', text: textOf(m.content) };
    }
  });
}

function fromAnthropic(body: any): ReceivedMessage[] {
  const out: ReceivedMessage[] = [];
  if (body.system) out.push({ role: 'system', text: textOf(body.system) });
  for (const m of (body.messages ?? []) as any[]) {
    const blocks: any[] = typeof m.content === 'string' ? [{ type: 'text', text: m.content }] : (m.content ?? []);
    if (m.role === 'assistant') {
      out.push({
        role: 'assistant',
        text: textOf(blocks),
        toolCalls: blocks.filter((b) => b.type === 'tool_use').map((b) => ({ id: b.id, name: b.name, args: b.input })),
      });
      continue;
    }
    // A user turn: tool results, each a message of its own, and text.
    for (const b of blocks) {
      if (b.type === 'tool_result') out.push({ role: 'tool', text: textOf(b.content), toolCallId: b.tool_use_id, isError: b.is_error === true });
      else if (b.type === 'text') {
        const last = out.at(-1);
        if (last?.role === 'user') last.text += `\n${b.text}`;
        else out.push({ role: 'user', text: b.text });
      }
    }
  }
  return out;
}
