// The fake runner keeps the port's contract that tests on it rely on.
// sandbox: none (test/fakes/fake-runner.ts; scripts/test.ts runs these more at once)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { connect } from 'node:net';
import { FakeRunner, fakeImages } from './fakes/fake-runner.ts';
import { runToEnd } from './helpers.ts';
import type { EnvironmentSpec } from '../src/runner/index.ts';

const limits = { memoryBytes: 2 ** 30, cpus: 1, pids: 100, diskBytes: 2 ** 30 } as unknown as EnvironmentSpec['limits'];

test('fake runner: states, exec in the workspace, timeouts, users, sockets, knobs', async () => {
  const images = fakeImages();
  const runner = new FakeRunner({ images });
  const spec: EnvironmentSpec = { id: 'env_fake1', hostname: 'fake1', image: await images.resolve('default'), limits, volumes: [{ name: 'cache', target: '/cache' }] };
  try {
    assert.equal(await runner.status(spec.id), 'absent');
    runner.failNextStart();
    await assert.rejects(runner.start(spec), /failNextStart/);
    assert.equal(await runner.status(spec.id), 'absent');
    await runner.start(spec);
    await runner.start(spec);
    assert.equal(await runner.status(spec.id), 'running');
    assert.equal(runner.calls.start, 3);

    const pwd = await runToEnd(runner.exec(spec, { cmd: ['sh', '-c', 'pwd; echo $X; echo err >&2; cat; exit 3'], env: { X: 'y' } }));
    assert.equal(pwd.exitCode, 3);
    assert.equal(pwd.stdout, '/workspace\ny\n');
    assert.equal(pwd.stderr, 'err\n');

    // /workspace is the environment's, by its absolute path too.
    const cmd = runner.exec(spec, { cmd: ['sh', '-c', 'read line; echo "got $line" > f; cat /workspace/sub/f > /workspace/g'], cwd: '/workspace/sub' });
    cmd.stdout.resume();
    cmd.stderr.resume();
    cmd.stdin.end('hello\n');
    assert.equal((await cmd.exited).exitCode, 0);
    assert.equal(readFileSync(runner.hostPath(spec.id, '/workspace/g'), 'utf8'), 'got hello\n');

    const slow = await runToEnd(runner.exec(spec, { cmd: ['sleep', '30'], timeoutMs: 200 }));
    assert.deepEqual([slow.exitCode, slow.timedOut], [124, true]);
    const missing = await runToEnd(runner.exec(spec, { cmd: ['no-such-command-here'] }));
    assert.equal(missing.exitCode, 127);
    assert.match(missing.stderr, /not found/);

    assert.equal((await runner.resolveUser(spec, 'root')).uid, 0);
    mkdirSync(runner.hostPath(spec.id, '/etc'), { recursive: true });
    writeFileSync(runner.hostPath(spec.id, '/etc/passwd'), 'root:x:0:0::/root:/bin/sh\ndev:x:1000:1000::/home/dev:/bin/sh\n');
    assert.deepEqual(await runner.resolveUser(spec, 'dev'), { name: 'dev', uid: 1000, gid: 1000, groups: [1000], home: '/home/dev' });
    await assert.rejects(runner.resolveUser(spec, 'nobody-here'), /not in the environment's \/etc\/passwd/);

    const usage = await runner.usage(spec.id, true);
    assert.equal(usage.memoryBytes, null);
    assert.ok((usage.diskBytes ?? 0) > 0);

    const stopServing = await runner.serveSocket(spec.id, 'test.sock', (c) => c.end('hi'));
    const got = await new Promise<string>((resolve, reject) => {
      let data = '';
      connect(runner.hostPath(spec.id, '/.berth/agent/test.sock')).on('data', (b) => (data += b)).on('end', () => resolve(data)).on('error', reject);
    });
    assert.equal(got, 'hi');
    assert.equal((await runToEnd(runner.exec(spec, { cmd: ['test', '-S', '/.berth/agent/test.sock'] }))).exitCode, 0, 'the socket is where commands inside look');
    await stopServing();

    const long = runToEnd(runner.exec(spec, { cmd: ['sleep', '30'] }));
    await runner.stop(spec.id);
    assert.equal((await long).exitCode, 137);
    assert.equal(await runner.status(spec.id), 'stopped');
    await runner.remove(spec.id);
    assert.equal(await runner.status(spec.id), 'absent');
  } finally {
    await runner.close();
  }
});
