// Attacks from inside a real environment on the runner and on its PID 1 (the Berth
// agent), and on the control plane's buffers and timers (issue #11: findings 6, 13, 18
// and the timeout of 20). Each attack is made as the red team made it; the test then
// checks that it fails and that nothing on the host paid for it.
import assert from 'node:assert/strict';
import { existsSync, lstatSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Spawner } from '../../src/runner/spawner/index.ts';
import { retentionFrom } from '../../src/server/network-events/index.ts';
import { MAX_BUFFERED_OUTPUT, truncationMarker } from '../../src/shared/output.ts';
import { MAX_TIMER_MS, parseDuration, timerDelay } from '../../src/shared/units.ts';
import { sh, startTestBerth, type TestBerth } from '../helpers.ts';

const MiB = 1024 * 1024;
const MARKER = truncationMarker(MAX_BUFFERED_OUTPUT);

let t: TestBerth;
let env: { id: string; name: string };

before(async () => {
  t = await startTestBerth();
  const res = await t.api('POST', '/api/orgs/default/environments', { name: 'pid1' });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  env = res.body;
});
after(async () => {
  await t?.destroy();
});

/** The host pid of the environment's PID 1. */
async function initPid(): Promise<number> {
  const runner = t.berth.runner;
  const pid = await runner.backend.pid(runner.containerId(env.id));
  assert.ok(pid, 'the environment is running');
  return pid;
}

/** Bytes the host's disk holds for the environment outside its quota'd disk image. */
function bytesOutsideQuota(dir: string): number {
  let total = 0;
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const st = lstatSync(path);
    // disk.img is the quota (its own size limit); disk/ is where it is mounted.
    if (name === 'disk.img' || (dir.endsWith(env.id) && name === 'disk')) continue;
    if (st.isDirectory()) total += bytesOutsideQuota(path);
    else total += st.blocks * 512;
  }
  return total;
}

const python = (script: string) => `python3 - <<'EOF'\n${script}\nEOF`;

describe("finding 6: PID 1's stdout and stderr are not a host file", () => {
  test('64 MiB written to /proc/1/fd/1 and /proc/1/fd/2, and through pidfd_getfd, land nowhere on the host', async () => {
    const dir = join(t.dataDir, 'environments', env.id);
    const before = bytesOutsideQuota(dir);

    const direct = await sh(t, env.id, 'for fd in 1 2; do head -c 67108864 /dev/zero >> /proc/1/fd/$fd; echo "fd$fd:$?"; done');
    assert.equal(direct.exitCode, 0, direct.stderr);
    // PID 1 is not dumpable: its descriptors cannot be opened through /proc.
    assert.match(direct.stdout, /^fd1:[1-9]\nfd2:[1-9]\n$/);
    assert.match(direct.stderr, /Permission denied/);
    // pidfd_getfd (438 on x86-64 and arm64) takes PID 1's own descriptor, whatever /proc allows.
    const stolen = await sh(t, env.id, python(`
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
pidfd = os.pidfd_open(1)
fd = libc.syscall(438, pidfd, 1, 0)
if fd < 0:
    print("pidfd_getfd:" + errno.errorcode[ctypes.get_errno()])
else:
    chunk = bytes(1 << 20)
    for _ in range(64):
        os.write(fd, chunk)
    print("pidfd_getfd:wrote")
`));
    assert.equal(stolen.exitCode, 0, stolen.stderr);
    assert.equal(stolen.stdout.trim(), 'pidfd_getfd:EPERM', 'PID 1 is not dumpable: its descriptors cannot be taken');

    // Whatever the writes did inside, PID 1's stdio on the host are no regular file, and
    // the host's disk outside the environment's quota grew by no more than a little.
    const pid = await initPid();
    // Nor does it hold any other host file (the runtime's log is the runtime's only).
    const fds = readdirSync(`/proc/${pid}/fd`);
    assert.ok(['0', '1', '2'].every((fd) => fds.includes(fd)));
    for (const fd of fds) {
      // A connection closing meanwhile takes its descriptor with it.
      const st = statSync(`/proc/${pid}/fd/${fd}`, { throwIfNoEntry: false });
      assert.equal(st?.isFile() ?? false, false, `PID 1's fd ${fd} is not a host file`);
    }
    const grown = bytesOutsideQuota(dir) - before;
    assert.ok(grown < MiB, `the host's disk outside the quota grew by ${grown} bytes`);
    const log = join(dir, 'bundle', 'runtime.log');
    assert.ok(!existsSync(log) || statSync(log).size < 64 * 1024, 'the runtime log holds the runtime\'s own messages only');
  });
});

describe('finding 13: buffered output is capped', () => {
  test('a non-streaming exec of 100 MB answers 200 with 16 MiB and a marker per stream, and the exit code', async () => {
    const res = await t.api('POST', `/api/orgs/default/environments/${env.id}/exec`, {
      cmd: ['sh', '-c', "head -c 100000000 /dev/zero | tr '\\0' x; head -c 20000000 /dev/zero | tr '\\0' y >&2; exit 7"],
    });
    assert.equal(res.status, 200);
    assert.equal(res.body.exitCode, 7);
    assert.equal(res.body.timedOut, false);
    assert.equal(res.body.stdout.length, MAX_BUFFERED_OUTPUT + MARKER.length);
    assert.ok(res.body.stdout.startsWith('xxxx') && res.body.stdout.endsWith(MARKER));
    assert.equal(res.body.stderr.length, MAX_BUFFERED_OUTPUT + MARKER.length);
    assert.ok(res.body.stderr.startsWith('yyyy') && res.body.stderr.endsWith(MARKER));
    // Output under the cap is untouched.
    const small = await sh(t, env.id, 'echo small; echo err >&2');
    assert.deepEqual([small.stdout, small.stderr], ['small\n', 'err\n']);
  });

  test("the runner's host commands keep at most 16 MiB of output too", async () => {
    const spawner = new Spawner();
    try {
      const r = await spawner.run('sh', ['-c', 'head -c 40000000 /dev/zero; exit 3']);
      assert.equal(r.code, 3);
      assert.equal(r.stdout.length, MAX_BUFFERED_OUTPUT + MARKER.length);
      assert.ok(r.stdout.endsWith(MARKER));
    } finally {
      spawner.close();
    }
  });
});

describe('finding 18: PID 1 cannot be traced or stopped from inside', () => {
  test('ptrace, process_vm_readv, /proc/1/mem and SIGSTOP all fail on PID 1; commands keep running', async () => {
    const r = await sh(t, env.id, python(`
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
def err():
    return errno.errorcode[ctypes.get_errno()]
if libc.ptrace(16, 1, None, None) == 0:  # PTRACE_ATTACH
    os.waitpid(1, 0x40000000)  # __WALL: until it stops
    libc.ptrace(17, 1, None, None)  # PTRACE_DETACH: let it go, so this test fails rather than hangs
    print("attach:ok")
else:
    print("attach:" + err())
if libc.ptrace(0x4206, 1, None, None) == 0:  # PTRACE_SEIZE
    libc.ptrace(17, 1, None, None)
    print("seize:ok")
else:
    print("seize:" + err())
buf = ctypes.create_string_buffer(16)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
local = iovec(ctypes.cast(buf, ctypes.c_void_p), 16)
remote = iovec(0x400000, 16)
n = libc.process_vm_readv(1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
print("vm_readv:" + ("ok" if n >= 0 else err()))
for path in ("/proc/1/mem", "/proc/1/environ"):
    try:
        open(path, "rb").read(1)
        print(path + ":ok")
    except OSError as e:
        print(path + ":" + errno.errorcode[e.errno])
try:
    open("/proc/1/fd/1", "ab").close()
    print("fd:ok")
except OSError as e:
    print("fd:" + errno.errorcode[e.errno])
`));
    assert.equal(r.exitCode, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), ['attach:EPERM', 'seize:EPERM', 'vm_readv:EPERM', '/proc/1/mem:EACCES', '/proc/1/environ:EACCES', 'fd:EACCES']);

    // SIGSTOP from inside its own pid namespace does not reach PID 1 (it has no handler).
    const stop = await sh(t, env.id, 'kill -STOP 1; grep State /proc/1/status');
    assert.doesNotMatch(stop.stdout, /State:\s+[Tt]/);
    assert.equal((await sh(t, env.id, 'echo still-serving')).stdout, 'still-serving\n');
  });

  test('a PID 1 stopped from the host is reported as such, not waited for', async () => {
    const pid = await initPid();
    process.kill(pid, 'SIGSTOP');
    try {
      const r = await t.api('POST', `/api/orgs/default/environments/${env.id}/exec`, { cmd: ['echo', 'hi'], timeout: '30s' });
      assert.equal(r.status, 200);
      assert.equal(r.body.exitCode, 255);
      assert.equal(r.body.timedOut, false);
      assert.match(r.body.stderr, /init \(PID 1\) is not responding: it is stopped\. Restart the environment/);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    assert.equal((await sh(t, env.id, 'echo resumed')).stdout, 'resumed\n');
  });
});

describe('finding 20: timeouts longer than a timer can hold', () => {
  test('a command timeout of 999999999999999d is refused with a 400 and the command does not run', async () => {
    for (const timeout of ['999999999999999d', 999_999_999_999_999, '25d']) {
      const r = await t.api('POST', `/api/orgs/default/environments/${env.id}/exec`, { cmd: ['touch', '/tmp/ran'], timeout });
      assert.equal(r.status, 400, `timeout ${timeout}: ${JSON.stringify(r.body)}`);
      assert.match(r.body.error.message, /timeout must be at most 24d/);
      // It says what was given, not a float turned back into a duration.
      assert.ok(r.body.error.message.includes(typeof timeout === 'number' ? `${timeout} ms` : `got ${timeout}:`), r.body.error.message);
      assert.equal(r.body.error.field, 'timeout');
    }
    assert.equal((await sh(t, env.id, 'test -e /tmp/ran')).exitCode, 1, 'the command did not run');
    // The maximum itself is accepted, and the command runs to its end.
    const ok = await t.api('POST', `/api/orgs/default/environments/${env.id}/exec`, { cmd: ['sh', '-c', 'sleep 1; echo done'], timeout: '24d' });
    assert.equal(ok.status, 200);
    assert.deepEqual([ok.body.exitCode, ok.body.stdout, ok.body.timedOut], [0, 'done\n', false]);
  });

  test('the other durations: a retention past what a Date holds is refused, and parseDuration never answers Infinity', () => {
    assert.throws(() => retentionFrom('999999999999999d'), /BERTH_NETWORK_EVENT_RETENTION is at most 3650d/);
    assert.equal(retentionFrom('3650d'), 3650 * 86_400_000);
    assert.equal(parseDuration('9'.repeat(400)), undefined);
    assert.equal(parseDuration(`${'9'.repeat(400)}d`), undefined);
    // The timers themselves never get more than they can hold, whatever reaches them.
    assert.equal(timerDelay(999_999_999_999_999), MAX_TIMER_MS);
    assert.equal(timerDelay(60_000), 60_000);
  });

  test("a task's timeout of 999999999999999d is refused with a 400", async () => {
    const r = await t.api('POST', '/api/orgs/default/tasks', { goal: 'x', project: 'none', budget: { timeout: '999999999999999d' } });
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.match(r.body.error.message, /timeout must be at most 24d/);
  });
});
