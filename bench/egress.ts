// Egress benchmarks: an allowed HTTPS download through the runner's egress proxy against
// the same download direct, in the same run, from a local server (in a process of its
// own, on 127.0.0.1, which the proxy may reach only through the benchmark's escape
// hatch). Throughput of a large file, and latency of small requests on new connections
// (each one a fresh CONNECT). Then the same through a real environment's namespace, and
// what giving an environment a network adds to its start.
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pino from 'pino';
import { ImageStore, LocalRunner, type EnvironmentSpec } from '../src/runner/index.ts';
import { CertificateAuthority } from '../src/runner/network/ca.ts';
import { EgressProxy, NetworkEventStore, type EgressPolicy } from '../src/runner/network/index.ts';
import { blockListOf } from '../src/runner/network/request-filter.ts';
import { DEFAULT_LIMITS } from '../src/shared/environment.ts';
import { newId } from '../src/shared/ids.ts';
import { percentile, summary } from './stats.ts';
import { runToEnd } from '../test/helpers.ts';

const REPO = new URL('..', import.meta.url).pathname;
const RUNS = Number(process.env.BENCH_RUNS ?? 30);
const SIZE = Number(process.env.BENCH_EGRESS_BYTES ?? 256 * 1024 * 1024);
const REQUESTS = Number(process.env.BENCH_EGRESS_REQUESTS ?? 300);
const NAME = 'outside.bench';
const run = promisify(execFile);

const dir = mkdtempSync(join(tmpdir(), 'berth-bench-egress-'));
const logger = pino({ level: 'silent' });
const ca = await CertificateAuthority.open(join(dir, 'public-ca'));
const leaf = ca.leaf(NAME);
const caFile = join(dir, 'ca.pem');
writeFileSync(caFile, ca.certPem);

// The "outside" server, in its own process so it does not share the proxy's thread.
const serverCode = `
import { createServer } from 'node:https';
const body = Buffer.alloc(1 << 20, 120);
const s = createServer({ cert: process.env.CERT, key: process.env.KEY }, (req, res) => {
  const n = Number(req.url.slice(1));
  res.writeHead(200, { 'content-length': n, 'content-type': 'application/octet-stream' });
  let left = n;
  const more = () => { while (left > 0) { const c = Math.min(left, body.length); left -= c; if (!res.write(c === body.length ? body : body.subarray(0, c))) return res.once('drain', more); } res.end(); };
  more();
});
s.listen(0, '127.0.0.1', () => console.log(s.address().port));`;
const server = spawn(process.execPath, ['--input-type=module', '-e', serverCode], { env: { ...process.env, CERT: leaf.cert, KEY: leaf.key }, stdio: ['ignore', 'pipe', 'inherit'] });
const port = await new Promise<number>((resolve) => server.stdout.once('data', (b: Buffer) => resolve(Number(String(b).trim()))));

const policy: EgressPolicy = { allowDomains: [NAME], presets: [], allowPorts: [port], allowMethods: null, maxConnections: 256, credentials: [], scope: 'bench' };
const events = new NetworkEventStore({ limit: 10 });
const proxy = new EgressProxy({
  environmentId: 'bench',
  policies: { policyFor: () => policy },
  events,
  usage: { bytesUp: 0, bytesDown: 0, connections: 0, open: 0, refused: 0, peak: 0 },
  resolver: async () => ['127.0.0.1'],
  allowPrivate: blockListOf(['127.0.0.1/32']),
});
await proxy.listen(0, '127.0.0.1');
const proxyUrl = `http://127.0.0.1:${proxy.address().port}`;
const url = (n: number) => `https://${NAME}:${port}/${n}`;
const resolve = ['--resolve', `${NAME}:${port}:127.0.0.1`];

console.log(`Berth egress benchmarks — ${availableParallelism()} cores, ${SIZE / 2 ** 20} MiB downloads × ${RUNS >= 10 ? 7 : 3}, ${REQUESTS} small requests, HTTPS from a local server\n`);

/** MiB/s of one curl download of SIZE bytes. */
async function throughput(args: string[]): Promise<number> {
  const { stdout } = await run('curl', ['-sS', '--cacert', caFile, '-o', '/dev/null', '-w', '%{speed_download}', ...args, url(SIZE)]);
  return Number(stdout) / 2 ** 20;
}

/** Per-request total times (ms) of REQUESTS small requests, each on a new connection, from one curl. */
async function latencies(args: string[], n = REQUESTS): Promise<number[]> {
  // -o applies to one URL each: one per URL, so bodies never mix with the timings.
  const urls = Array.from({ length: n }, () => [url(1024), '-o', '/dev/null']).flat();
  const { stdout } = await run('curl', ['-sS', '--cacert', caFile, '-H', 'Connection: close', '-w', '%{time_total}\\n', ...args, ...urls], { maxBuffer: 1 << 24 });
  return stdout.trim().split('\n').map((s) => Number(s) * 1000);
}

const env: { runner?: LocalRunner; spec?: EnvironmentSpec } = {};
try {
  // Warm up both paths.
  await latencies(resolve, 20);
  await latencies(['-x', proxyUrl], 20);

  const reps = RUNS >= 10 ? 7 : 3;
  const direct: number[] = [];
  const proxied: number[] = [];
  // This process is the proxy (and idle otherwise): its CPU time per download is what the
  // relay costs, a figure the load of a shared CI host does not move the way MiB/s does.
  const cpuDirect: number[] = [];
  const cpuProxied: number[] = [];
  const cpuMs = async (samples: number[], download: Promise<number>) => {
    const c = process.cpuUsage();
    const v = await download;
    const u = process.cpuUsage(c);
    samples.push((u.user + u.system) / 1000);
    return v;
  };
  for (let i = 0; i < reps; i++) {
    direct.push(await cpuMs(cpuDirect, throughput(resolve)));
    proxied.push(await cpuMs(cpuProxied, throughput(['-x', proxyUrl])));
  }
  const d = summary('HTTPS download, direct', direct, 'MiB/s');
  const p = summary('HTTPS download, through the egress proxy', proxied, 'MiB/s');
  console.log(`${''.padEnd(52)} ratio proxy/direct at p50: ${(p.p50 / d.p50 * 100).toFixed(0)}% (goal ≥ 80%)`);
  console.log(`${''.padEnd(52)} proxy CPU per ${SIZE / 2 ** 20} MiB at p50: ${(percentile(cpuProxied, 50) - percentile(cpuDirect, 50)).toFixed(0)} ms (this process: ${percentile(cpuProxied, 50).toFixed(0)} ms proxied, ${percentile(cpuDirect, 50).toFixed(0)} ms direct)\n`);

  // Alternating batches, so both paths see the same load.
  const ld: number[] = [];
  const lp: number[] = [];
  for (let i = 0; i < 10; i++) {
    ld.push(...(await latencies(resolve, REQUESTS / 10)));
    lp.push(...(await latencies(['-x', proxyUrl], REQUESTS / 10)));
  }
  const a = summary('1 KiB HTTPS request, new connection, direct', ld);
  const b = summary('1 KiB HTTPS request, new connection, via proxy', lp);
  console.log(`${''.padEnd(52)} added at p50: ${(b.p50 - a.p50).toFixed(2)} ms (goal ≤ 2 ms), at p99: ${(b.p99 - a.p99).toFixed(2)} ms\n`);

  // The same from inside a real environment, through its namespace, veth and proxy.
  const images = new ImageStore({ dir: process.env.BERTH_IMAGE_DIR ?? join(REPO, '.cache', 'images'), logger });
  const image = await images.resolve('default');
  const runner = new LocalRunner({
    dataDir: join(dir, 'data'),
    images,
    logger,
    network: { policies: { policyFor: () => policy }, events, resolver: async () => ['127.0.0.1'], allowPrivateAddresses: ['127.0.0.1/32'] },
  });
  env.runner = runner;
  const spec: EnvironmentSpec = { id: newId('env'), hostname: 'bench', image, limits: { ...DEFAULT_LIMITS, cpus: availableParallelism() } };
  env.spec = spec;
  await runner.start(spec);
  const inside = async (script: string) => {
    const r = await runToEnd(runner.exec(spec, { cmd: ['sh', '-c', script] }));
    if (r.exitCode !== 0) throw new Error(r.stderr);
    return r.stdout;
  };
  const cacert = (await inside(`cat > /tmp/ca.pem <<'EOF'\n${ca.certPem}EOF\necho /tmp/ca.pem`)).trim();
  const tIn: number[] = [];
  for (let i = 0; i < reps; i++) tIn.push(Number(await inside(`curl -sS --cacert ${cacert} -o /dev/null -w '%{speed_download}' ${url(SIZE)}`)) / 2 ** 20);
  const pin = summary('HTTPS download, inside an environment (its proxy)', tIn, 'MiB/s');
  console.log(`${''.padEnd(52)} ratio to direct on the host at p50: ${(pin.p50 / d.p50 * 100).toFixed(0)}%`);
  const lin = (await inside(`curl -sS --cacert ${cacert} -H 'Connection: close' -w '%{time_total}\\n' ${Array.from({ length: REQUESTS }, () => `${url(1024)} -o /dev/null`).join(' ')}`)).trim().split('\n').map((s) => Number(s) * 1000);
  const c = summary('1 KiB HTTPS request, inside an environment', lin);
  console.log(`${''.padEnd(52)} added to direct on the host at p50: ${(c.p50 - a.p50).toFixed(2)} ms\n`);

  // What the network adds to a start: start → first command, with and without it,
  // alternating so both see the same load.
  const plain = new LocalRunner({ dataDir: join(dir, 'plain'), images, logger });
  const without: number[] = [];
  const withNet: number[] = [];
  for (let i = 0; i < RUNS + 3; i++) {
    for (const [r, samples] of [[plain, without], [runner, withNet]] as const) {
      const s = { ...spec, id: newId('env') };
      const t0 = performance.now();
      await r.start(s);
      await runToEnd(r.exec(s, { cmd: ['true'] }));
      if (i >= 3) samples.push(performance.now() - t0);
      await r.remove(s.id);
    }
  }
  plain.close();
  const s0 = summary('start → first command, no network', without);
  const s1 = summary('start → first command, with network', withNet);
  console.log(`${''.padEnd(52)} added at p50: ${(s1.p50 - s0.p50).toFixed(1)} ms, at p99: ${(percentile(withNet, 99) - percentile(without, 99)).toFixed(1)} ms`);
} finally {
  if (env.runner && env.spec) await env.runner.remove(env.spec.id).catch(() => {});
  env.runner?.close();
  await proxy.close();
  server.kill();
  rmSync(dir, { recursive: true, force: true });
}

