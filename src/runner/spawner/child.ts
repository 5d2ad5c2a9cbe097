// The spawner process: a small Node process that starts commands for the runner.
//
// Why it exists: fork() copies the page tables of the process that calls it, so in the
// control plane (the embedded database alone is hundreds of MB) every spawn costs over
// 10 ms. From this process, which holds almost nothing, a spawn costs about 1 ms.
import { spawn, type ChildProcess } from 'node:child_process';
import type { FromSpawner, ToSpawner } from './protocol.ts';

const children = new Map<number, ChildProcess>();
const send = (m: FromSpawner) => {
  if (process.connected) process.send!(m);
};
// A send racing the runner's exit fails with EPIPE; there is no one left to tell.
process.on('error', () => {});

process.on('message', (m: ToSpawner) => {
  if (m.t === 'spawn') return start(m);
  const child = children.get(m.id);
  if (!child) return;
  switch (m.t) {
    case 'stdin':
      child.stdin?.write(m.data);
      break;
    case 'stdin-end':
      child.stdin?.end();
      break;
    case 'kill':
      child.kill(m.signal);
      break;
    case 'pause':
      child.stdout?.pause();
      child.stderr?.pause();
      break;
    case 'resume':
      child.stdout?.resume();
      child.stderr?.resume();
      break;
  }
});

function start(m: Extract<ToSpawner, { t: 'spawn' }>): void {
  let child: ChildProcess;
  try {
    // nice(1) rather than setpriority after the fork: a shell script could fork its own
    // children before that, and they would keep the normal priority.
    const [file, args] = m.background ? ['nice', ['-n', '19', m.file, ...m.args]] : [m.file, m.args];
    const output = m.discardOutput ? 'ignore' : 'pipe';
    child = spawn(file, args, { cwd: m.cwd, env: m.env, stdio: [m.stdin ? 'pipe' : 'ignore', output, output] });
  } catch (err) {
    send({ t: 'error', id: m.id, message: (err as Error).message });
    return;
  }
  children.set(m.id, child);
  child.on('spawn', () => send({ t: 'started', id: m.id, pid: child.pid! }));
  child.on('error', (err: NodeJS.ErrnoException) => {
    children.delete(m.id);
    send({ t: 'error', id: m.id, message: err.message, code: err.code });
  });
  child.stdin?.on('error', () => {}); // the command may exit without reading its input
  child.stdout?.on('data', (data: Buffer) => send({ t: 'out', id: m.id, fd: 1, data }));
  child.stderr?.on('data', (data: Buffer) => send({ t: 'out', id: m.id, fd: 2, data }));
  child.on('close', (code, signal) => {
    children.delete(m.id);
    send({ t: 'exit', id: m.id, code, signal });
  });
}

// The runner is gone: nothing is left to report to.
process.on('disconnect', () => process.exit(0));
