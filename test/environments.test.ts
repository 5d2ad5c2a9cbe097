// Real environments under crun: isolation, limits, persistence, lifecycle and bad input.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ID_BASE } from '../src/runner/idmap.ts';
import { sh, startTestBerth, type TestBerth } from './helpers.ts';

let t: TestBerth;
before(async () => {
  t = await startTestBerth();
});
after(async () => {
  await t?.destroy();
});

async function create(body: Record<string, unknown> = {}) {
  const res = await t.api('POST', '/api/orgs/default/environments', body);
  assert.equal(res.status, 201, JSON.stringify(res.body));
  assert.equal(res.body.state, 'running');
  return res.body as { id: string; name: string };
}

describe('isolation', () => {
  test('an environment sees only its own processes, hostname and files, as an unprivileged root', async () => {
    const a = await create({ name: 'iso-a' });
    const b = await create({ name: 'iso-b' });

    const ps = await sh(t, a.id, 'ls /proc | grep -E "^[0-9]+$" | wc -l; hostname; id -u; cat /proc/self/uid_map');
    const [count, hostname, uid, uidMap] = ps.stdout.trim().split('\n');
    assert.ok(Number(count) <= 5, `expected only a handful of processes, saw ${count}`);
    assert.equal(hostname, 'iso-a');
    assert.equal(uid, '0');
    assert.deepEqual(uidMap!.trim().split(/\s+/).map(Number), [0, ID_BASE, 65536]);

    // The host's files are not there, and one environment's files are not in another.
    await sh(t, a.id, 'echo secret-of-a > /workspace/a.txt');
    assert.equal((await sh(t, b.id, 'cat /workspace/a.txt')).exitCode, 1);
    assert.equal((await sh(t, a.id, `test -e ${t.dataDir}`)).exitCode, 1);

    // No new namespaces or mounts from inside (seccomp and dropped capabilities).
    const escape = await sh(t, a.id, 'unshare -U true; echo unshare=$?; mount -t tmpfs none /mnt; echo mount=$?');
    assert.match(escape.stdout, /unshare=[1-9]/);
    assert.match(escape.stdout, /mount=[1-9]/);
  });

  test('an environment reaches nothing but its egress proxy, which allows nothing by default', async () => {
    const env = await create();
    const probe = (target: string) =>
      sh(t, env.id, `timeout 5 bash -c 'exec 3<>/dev/tcp/${target}' 2>/dev/null && echo open || echo closed`);
    for (const target of ['127.0.0.1/5432', '169.254.169.254/80', '1.1.1.1/443', '10.0.0.1/22']) {
      const r = await probe(target);
      assert.equal(r.stdout.trim(), 'closed', `${target} should be unreachable`);
    }
    // Loopback and one link to the runner; the proxy is set for every command, and with no
    // policy it refuses everything, saying which rule did.
    const links = await sh(t, env.id, 'ip -o link | grep -vc ": lo:"; echo "$HTTPS_PROXY"; ls /sys/class/net | wc -l');
    const [count, proxy, sysfs] = links.stdout.trim().split('\n');
    assert.equal(count, '1');
    assert.equal(sysfs, '0', "the host's interfaces are not listed in /sys");
    assert.match(proxy ?? '', /^http:\/\/[\d.]+:\d+$/);
    const denied = await sh(t, env.id, 'curl -s -o /dev/null -w "%{http_code}" http://example.com/; echo; curl -sS https://example.com/ 2>&1 | head -1');
    assert.match(denied.stdout, /^403\n/);
    assert.match(denied.stdout, /403/);
  });

  test('a memory hog is killed inside its environment and the environment lives on', async () => {
    const env = await create({ memory: '128m' });
    const hog = await sh(t, env.id, 'python3 -c "x = bytearray(512 * 1024 * 1024); print(len(x))"');
    assert.notEqual(hog.exitCode, 0);
    assert.doesNotMatch(hog.stdout, /536870912/);
    assert.equal((await sh(t, env.id, 'echo alive')).stdout, 'alive\n');
  });

  test('a fork bomb hits the process limit and the environment lives on', async () => {
    const env = await create({ pids: 64 });
    const bomb = sh(t, env.id, 'for i in $(seq 500); do sleep 3 & done 2>/dev/null; wait', { timeout: '30s' });
    await new Promise((r) => setTimeout(r, 1500));
    const during = await t.api('GET', `/api/orgs/default/environments/${env.id}`);
    const pids = during.body.usage.pids as number;
    assert.ok(pids > 32 && pids <= 64, `the process limit held at ${pids}`);
    await bomb;
    assert.equal((await sh(t, env.id, 'echo alive')).stdout, 'alive\n');
  });

  test('the CPU limit is applied to the cgroup', async () => {
    const env = await create({ cpus: 0.5 });
    const quota = await sh(t, env.id, 'cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us 2>/dev/null');
    assert.match(quota.stdout, /50000/);
  });
});

describe('persistence', () => {
  test('stop and start keep every file, in the workspace and elsewhere', async () => {
    const env = await create({ name: 'keeper' });
    await sh(t, env.id, 'echo work > /workspace/w.txt && echo conf > /etc/berth-test.conf && mkdir -p /root/deep/er && echo x > /root/deep/er/f');
    const stopped = await t.api('POST', `/api/orgs/default/environments/${env.id}/stop`);
    assert.equal(stopped.body.state, 'stopped');
    const started = await t.api('POST', '/api/orgs/default/environments/keeper/start');
    assert.equal(started.body.state, 'running');
    const r = await sh(t, env.id, 'cat /workspace/w.txt /etc/berth-test.conf /root/deep/er/f');
    assert.equal(r.stdout, 'work\nconf\nx\n');
  });

  test('a restarted control plane finds every environment as it was', async () => {
    const running = await create({ name: 'survivor' });
    const stopped = await create({ name: 'sleeper' });
    await sh(t, running.id, 'echo still-here > /workspace/proof');
    await t.api('POST', `/api/orgs/default/environments/${stopped.id}/stop`);

    await t.close();
    t = await startTestBerth({ dataDir: t.dataDir, database: t.database });

    const list = await t.api('GET', '/api/orgs/default/environments');
    const byName = Object.fromEntries(list.body.items.map((e: { name: string; state: string }) => [e.name, e.state]));
    assert.equal(byName.survivor, 'running');
    assert.equal(byName.sleeper, 'stopped');
    assert.equal((await sh(t, 'survivor', 'cat /workspace/proof')).stdout, 'still-here\n');
  });
});

describe('exec', () => {
  test('exit codes, stdout and stderr apart, stdin, cwd and env', async () => {
    const env = await create();
    const r = await t.api('POST', `/api/orgs/default/environments/${env.id}/exec`, {
      cmd: ['sh', '-c', 'echo out; echo err >&2; cat; pwd; echo $GREETING; exit 42'],
      cwd: '/tmp',
      env: { GREETING: 'hello' },
      stdin: 'from-stdin\n',
    });
    assert.equal(r.status, 200);
    assert.equal(r.body.exitCode, 42);
    assert.equal(r.body.stdout, 'out\nfrom-stdin\n/tmp\nhello\n');
    assert.equal(r.body.stderr, 'err\n');
  });

  test('a command past its timeout is killed and says so', async () => {
    const env = await create();
    const r = await sh(t, env.id, 'sleep 30', { timeout: '1s' });
    assert.equal(r.timedOut, true);
    assert.equal(r.exitCode, 124);
    assert.equal((await sh(t, env.id, 'pgrep -c sleep || true')).stdout.trim(), '0');
  });

  test('output streams as server-sent events before the command ends', async () => {
    const env = await create();
    const res = await fetch(`${t.client.url}/api/orgs/default/environments/${env.id}/exec`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t.client.token}`, 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify({ cmd: ['sh', '-c', 'echo first; sleep 2; echo second; exit 3'] }),
    });
    assert.equal(res.headers.get('content-type'), 'text/event-stream');
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let text = '';
    const started = Date.now();
    let firstAt = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value);
      if (!firstAt && text.includes('first')) firstAt = Date.now() - started;
    }
    assert.ok(firstAt > 0 && !text.slice(0, text.indexOf('first')).includes('second'));
    assert.match(text, /event: stdout\ndata: \{"data":"first\\n"\}/);
    assert.match(text, /event: exit\ndata: \{"exitCode":3,/);
    // The first line arrived while the command was still sleeping.
    assert.ok(text.indexOf('first') < text.indexOf('second'));
  });
});

describe('lifecycle', () => {
  test('idle timeout and max lifetime stop environments, with the reason', async () => {
    const idle = await create({ idleTimeout: '10m', maxLifetime: 'off' });
    const old = await create({ idleTimeout: 'off', maxLifetime: '1h' });
    const busy = await create({ idleTimeout: '10m' });
    const later = new Date(Date.now() + 11 * 60_000);
    // A command running keeps an environment from being idle.
    const long = t.api('POST', `/api/orgs/default/environments/${busy.id}/exec`, { cmd: ['sleep', '3'] });
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual((await t.berth.environments.sweep(later)).sort(), [idle.id].sort());
    await long;
    const muchLater = new Date(Date.now() + 2 * 3_600_000);
    assert.ok((await t.berth.environments.sweep(muchLater)).includes(old.id));

    const shown = await t.api('GET', `/api/orgs/default/environments/${idle.id}`);
    assert.equal(shown.body.state, 'stopped');
    assert.match(shown.body.stateReason, /idle for 10m/);
    assert.match((await t.api('GET', `/api/orgs/default/environments/${old.id}`)).body.stateReason, /maximum lifetime of 1h/);
  });

  test('rm frees the disk and the name', async () => {
    const env = await create({ name: 'doomed' });
    await sh(t, env.id, 'head -c 10000000 /dev/urandom > /workspace/blob');
    const dir = join(t.dataDir, 'environments', env.id);
    assert.ok(existsSync(dir));
    const removed = await t.api('DELETE', '/api/orgs/default/environments/doomed');
    assert.equal(removed.body.state, 'deleted');
    assert.ok(!existsSync(dir));
    assert.equal((await t.api('GET', '/api/orgs/default/environments/doomed')).status, 404);
    await create({ name: 'doomed' });
  });
});

describe('bad input changes nothing', () => {
  const count = async () => (await t.api('GET', '/api/orgs/default/environments?includeDeleted=true&limit=500')).body.items.length;

  test('unknown image, absurd limits, taken name, bad fields', async () => {
    await create({ name: 'taken' });
    const before = await count();
    const cases: [Record<string, unknown> | string, number, RegExp][] = [
      [{ image: 'no-such-image' }, 404, /image 'no-such-image' not found/],
      [{ memory: '1t' }, 400, /memory must be between/],
      [{ memory: 'lots' }, 400, /memory/],
      [{ cpus: 1000 }, 400, /cpus/],
      [{ pids: 3 }, 400, /pids/],
      [{ idleTimeout: 'soon' }, 400, /idleTimeout/],
      [{ name: 'Bad Name!' }, 400, /name/],
      [{ name: 'taken' }, 409, /taken/],
      [{ colour: 'blue' }, 400, /colour/],
      ['{"name": ', 400, /JSON/i],
    ];
    for (const [body, status, message] of cases) {
      const res = await t.api('POST', '/api/orgs/default/environments', body);
      assert.equal(res.status, status, `${JSON.stringify(body)} -> ${JSON.stringify(res.body)}`);
      assert.match(res.body.error.message, message);
    }
    assert.equal(await count(), before);
  });

  test('unknown ids, stopped environments and unknown routes', async () => {
    assert.equal((await t.api('GET', '/api/orgs/default/environments/env_000000000000')).status, 404);
    assert.equal((await t.api('POST', '/api/orgs/default/environments/nope/stop')).status, 404);
    const env = await create();
    await t.api('POST', `/api/orgs/default/environments/${env.id}/stop`);
    // A stopped environment starts for a command (test/autostart-oom.test.ts has the rest).
    const exec = await t.api('POST', `/api/orgs/default/environments/${env.id}/exec`, { cmd: ['true'] });
    assert.equal(exec.status, 200);
    assert.equal(exec.body.exitCode, 0);
    assert.equal((await t.api('POST', `/api/orgs/default/environments/${env.id}/exec`, { cmd: [] })).status, 400);
    assert.equal((await t.api('GET', '/api/nothing-here')).status, 404);
    const anonymous = await fetch(`${t.client.url}/api/orgs/default/environments`);
    assert.equal(anonymous.status, 401);
  });

  test('/openapi.json describes the API', async () => {
    const res = await fetch(`${t.client.url}/openapi.json`);
    const doc = (await res.json()) as { openapi: string; paths: Record<string, unknown> };
    assert.match(doc.openapi, /^3\./);
    for (const p of ['/api/orgs/{org}/environments', '/api/orgs/{org}/environments/{id}', '/api/orgs/{org}/environments/{id}/exec', '/api/orgs/{org}/environments/{id}/files', '/api/orgs/{org}/audit', '/api/orgs/{org}/tokens']) {
      assert.ok(doc.paths[p], `${p} is documented`);
    }
  });
});
