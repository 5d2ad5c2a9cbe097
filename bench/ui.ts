// Web UI benchmark: the JavaScript a first visit downloads (gzip, as the control plane
// serves it), the time to first render of a task page with 5,000 transcript events (the
// page asks for the last 500 first and the ones before on demand: both are timed), and
// the longest frame while events keep arriving at 100 a second. A real berth, a real
// Chromium; the events are written straight into task_events (as a runner on another
// replica would), so the page reads them through the real API and event stream.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { startTestBerth } from '../test/helpers.ts';
import { launchBrowser } from '../test/web/browser.ts';
import { REPO } from '../test/helpers.ts';

const EVENTS = Number(process.env.BENCH_EVENTS ?? 5_000);
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const STREAM_SECONDS = Number(process.env.BENCH_STREAM_SECONDS ?? 10);
const RATE = 100;
const GOAL_JS_KB = 300;
const GOAL_RENDER_MS = 1_000;
const GOAL_FRAME_MS = 50;
const TASK_ID = 'task_benchui00001';

// 1. What a first visit downloads: index.html's script and the modules it preloads.
const build = spawnSync(process.execPath, [join(REPO, 'node_modules', 'vite', 'bin', 'vite.js'), 'build', '--config', join(REPO, 'web', 'vite.config.ts'), '--logLevel', 'warn'], { cwd: REPO, stdio: 'inherit' });
if (build.status !== 0) process.exit(1);
const dist = join(REPO, 'web', 'dist');
const html = readFileSync(join(dist, 'index.html'), 'utf8');
const initial = [...html.matchAll(/(?:src|href)="(\/[^"]+\.(?:js|css))"/g)].map((m) => m[1]!);
const gz = (file: string) => gzipSync(readFileSync(join(dist, file)), { level: 9 }).length;
const initialJs = initial.filter((f) => f.endsWith('.js')).reduce((n, f) => n + gz(f), 0);
const initialCss = initial.filter((f) => f.endsWith('.css')).reduce((n, f) => n + gz(f), 0);
const allJs = readdirSync(join(dist, 'assets')).filter((f) => f.endsWith('.js')).map((f) => `/assets/${f}`);
const lazyJs = allJs.filter((f) => !initial.includes(f)).map((f) => `${f.replace(/^\/assets\//, '').replace(/-[\w-]{8}\.js$/, '')} ${(gz(f) / 1024).toFixed(1)} KB`);

// 2. A berth with one task holding 5,000 events of every kind the transcript shows.
const t = await startTestBerth();
const db = t.berth.database.db;
const orgId = (await t.api('GET', '/api/orgs')).body.items[0].id as string;
await db
  .insertInto('tasks')
  .values({
    id: TASK_ID, org_id: orgId, project_id: null, repo_url: 'https://example.invalid/bench.git', base_branch: null, goal: 'Benchmark: a long transcript', agent: 'builtin', command: null, model: 'gpt-4o-mini',
    budget: JSON.stringify({ maxSteps: 50, maxTokens: null, maxCostUsd: null, timeoutMs: 3_600_000, maxCheckRetries: 2 }), check_command: null, state: 'running', state_reason: null, step: 'agent', trigger: 'api',
    created_by: 'bench', runner_id: 'elsewhere', environment_id: null, branch: null, base_sha: null, head_sha: null, change_request: null, checks_passed: null, summary: null, diff: null,
  } as never)
  .execute();
let seq = 0;
const output = Array.from({ length: 40 }, (_, i) => `line ${i}: ok ${'x'.repeat(60)}`).join('\n');
const eventAt = (n: number) => {
  switch (n % 5) {
    case 0: return { type: 'model', provider: 'openai', model: 'gpt-4o-mini', usage: { inputTokens: 1200, outputTokens: 80, costUsd: 0.0003 }, durationMs: 900, text: n % 10 === 0 ? 'Looking at the failing test and the function it calls.' : null, toolCalls: [{ id: `c${n}`, name: 'run_command' }], via: 'agent' };
    case 1: return { type: 'tool', id: `c${n}`, tool: 'run_command', args: { command: 'node --test' }, output, error: false, exitCode: n % 7 === 0 ? 1 : 0, durationMs: 340 };
    case 2: return { type: 'command', phase: 'check', cmd: 'node --test', exitCode: 0, output, durationMs: 800, timedOut: false };
    case 3: return n % 50 === 3 ? { type: 'network', allowed: false, host: 'registry.example.com', port: 443, method: 'CONNECT', path: null, rule: 'default deny' } : { type: 'log', level: 'info', message: `step ${n}: working` };
    default: return { type: 'step', step: 'agent', message: `round ${n}` };
  }
};
const write = async (n: number) => {
  const rows = [];
  for (let i = 0; i < n; i++) {
    seq++;
    rows.push({ task_id: TASK_ID, seq, at: new Date().toISOString(), data: JSON.stringify(eventAt(seq)) });
  }
  for (let i = 0; i < rows.length; i += 500) await db.insertInto('task_events').values(rows.slice(i, i + 500) as never).execute();
};
await write(EVENTS);
const eventsBytes = JSON.stringify((await t.api('GET', `/api/orgs/default/tasks/${TASK_ID}/events`)).body).length;
// What the task page asks for first: the transcript's end (web/src/pages/TaskPage.tsx PAGE).
const TAIL = 500;
const tailBytes = JSON.stringify((await t.api('GET', `/api/orgs/default/tasks/${TASK_ID}/events?tail=${TAIL}`)).body).length;

// 3. Time to first render: from navigation start to the transcript showing its rows and count.
const b = await launchBrowser(t.client.url);
const measure = async (cpuSlowdown: number) => {
  const times: number[] = [];
  const server: number[] = [];
  const started: number[] = [];
  const earlier: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const { context, page } = await b.context();
    await context.addInitScript((token) => {
      sessionStorage.setItem('berth.token', token);
      const w = window as unknown as { __rendered?: number };
      new MutationObserver((_m, obs) => {
        const tab = document.querySelector('#tab-transcript');
        if (tab?.textContent?.includes(`(${String((window as unknown as { __expect: number }).__expect)})`) && document.querySelector('.ev-row')) {
          w.__rendered = performance.now();
          obs.disconnect();
        }
      }).observe(document, { subtree: true, childList: true, characterData: true });
    }, t.client.token);
    await context.addInitScript((n) => ((window as unknown as { __expect: number }).__expect = n), seq);
    const cdp = await context.newCDPSession(page);
    if (cpuSlowdown > 1) await cdp.send('Emulation.setCPUThrottlingRate', { rate: cpuSlowdown });
    await page.goto(`/tasks/${TASK_ID}`);
    await page.waitForFunction(() => (window as unknown as { __rendered?: number }).__rendered, undefined, { timeout: 60_000 });
    times.push(await page.evaluate(() => (window as unknown as { __rendered: number }).__rendered));
    // Where the time went: when the transcript request left, and how long the server took to answer it.
    const req = await page.evaluate(() => {
      const e = performance.getEntriesByType('resource').find((r) => /\/events\?tail=\d+$/.test(r.name)) as PerformanceResourceTiming | undefined;
      return e ? { start: e.startTime, took: e.responseEnd - e.startTime } : { start: 0, took: 0 };
    });
    started.push(req.start);
    server.push(req.took);
    // Then the page before it, asked for with the control at the top of the transcript.
    const left = (seq - TAIL * 2).toLocaleString('en-US');
    const clicked = await page.evaluate(() => performance.now());
    await page.getByRole('button', { name: 'Show earlier events' }).click();
    await page.getByText(`(${left} not loaded yet)`).waitFor({ timeout: 30_000 });
    earlier.push((await page.evaluate(() => performance.now())) - clicked);
    await context.close();
  }
  const mid = (xs: number[]) => [...xs].sort((a, c) => a - c)[Math.floor(xs.length / 2)]!;
  const after = times.map((x, i) => x - started[i]! - server[i]!);
  return { median: mid(times), max: Math.max(...times), requestStart: mid(started), request: mid(server), after: mid(after), earlier: mid(earlier) };
};
// The first visit fills caches (and the database's); it is not counted.
await measure(1);
const fast = await measure(1);
const slow = await measure(4);

// 4. The longest frame while 100 events a second arrive, with the page following the end.
const stream = async (cpuSlowdown: number) => {
  const { context, page } = await b.context();
  await context.addInitScript((token) => {
    sessionStorage.setItem('berth.token', token);
    const w = window as unknown as { __frames: { maxGap: number; longTasks: number[]; last: number; on: boolean } };
    w.__frames = { maxGap: 0, longTasks: [], last: 0, on: false };
    new PerformanceObserver((list) => {
      if (w.__frames.on) for (const e of list.getEntries()) w.__frames.longTasks.push(e.duration);
    }).observe({ type: 'longtask', buffered: false });
    const tick = (now: number) => {
      if (w.__frames.on && w.__frames.last) w.__frames.maxGap = Math.max(w.__frames.maxGap, now - w.__frames.last);
      w.__frames.last = now;
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  }, t.client.token);
  const cdp = await context.newCDPSession(page);
  if (cpuSlowdown > 1) await cdp.send('Emulation.setCPUThrottlingRate', { rate: cpuSlowdown });
  await page.goto(`/tasks/${TASK_ID}`);
  await page.getByText('● live').waitFor({ timeout: 60_000 });
  await page.waitForTimeout(1000);
  const start = seq;
  await page.evaluate(() => {
    const f = (window as unknown as { __frames: { on: boolean; last: number } }).__frames;
    f.last = 0;
    f.on = true;
  });
  const began = Date.now();
  for (let s = 0; s < STREAM_SECONDS * 10; s++) {
    await write(RATE / 10);
    const wait = began + (s + 1) * 100 - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
  // The stream relays rows another writer added on its next poll: wait until all arrived.
  await page.waitForFunction((n) => document.querySelector('#tab-transcript')?.textContent?.includes(`(${n})`), seq, { timeout: 30_000 });
  const f = await page.evaluate(() => (window as unknown as { __frames: { maxGap: number; longTasks: number[] } }).__frames);
  await context.close();
  return { events: seq - start, maxGap: f.maxGap, longTasks: f.longTasks };
};
const streamFast = await stream(1);
const streamSlow = await stream(4);
await b.close();
await t.destroy();

const kb = (n: number) => `${(n / 1024).toFixed(1)} KB`;
const verdict = (ok: boolean) => (ok ? 'ok' : 'OVER');
const longest = (s: { longTasks: number[] }) => (s.longTasks.length ? `${Math.max(...s.longTasks).toFixed(0)} ms` : 'none');
console.log(`# web UI (Chromium ${b.browser.version()}, ${EVENTS} transcript events, ${RUNS} runs each; load average ${loadavg()[0]!.toFixed(1)} on ${availableParallelism()} cores)`);
console.log(`initial JavaScript, gzip        ${kb(initialJs)}  (goal ≤ ${GOAL_JS_KB} KB: ${verdict(initialJs <= GOAL_JS_KB * 1024)}); CSS ${kb(initialCss)}`);
console.log(`loaded later, gzip              ${lazyJs.join(', ')}`);
console.log(`task page first render          median ${fast.median.toFixed(0)} ms, worst ${fast.max.toFixed(0)} ms (goal ≤ ${GOAL_RENDER_MS} ms: ${verdict(fast.max <= GOAL_RENDER_MS)})`);
console.log(`  of which: the transcript request leaves at ${fast.requestStart.toFixed(0)} ms, the server takes ${fast.request.toFixed(0)} ms to read and send the last ${TAIL} events (${(tailBytes / 1e6).toFixed(2)} MB of the transcript's ${(eventsBytes / 1e6).toFixed(1)} MB), the page renders ${fast.after.toFixed(0)} ms after the last byte`);
console.log(`  with the CPU slowed 4×        median ${slow.median.toFixed(0)} ms, worst ${slow.max.toFixed(0)} ms (${verdict(slow.max <= GOAL_RENDER_MS)}); the page renders ${slow.after.toFixed(0)} ms after the last byte`);
console.log(`  show ${TAIL} earlier events       median ${fast.earlier.toFixed(0)} ms from the click to the rows and count on screen; ${slow.earlier.toFixed(0)} ms with the CPU slowed 4×`);
console.log(`longest frame, ${RATE} events/s    ${streamFast.maxGap.toFixed(0)} ms between frames, long tasks: ${streamFast.longTasks.length} (longest ${longest(streamFast)}) over ${streamFast.events} events (goal ≤ ${GOAL_FRAME_MS} ms: ${verdict(streamFast.maxGap <= GOAL_FRAME_MS)})`);
console.log(`  with the CPU slowed 4×        ${streamSlow.maxGap.toFixed(0)} ms between frames, long tasks: ${streamSlow.longTasks.length} (longest ${longest(streamSlow)}) (${verdict(streamSlow.maxGap <= GOAL_FRAME_MS)})`);
console.log(`(events are written to task_events at ${RATE}/s; the server's stream relays rows written by another process on its 2 s poll, so the page gets them in bursts of about ${RATE * 2})`);
