// Runs one command through an environment's agent: one unix-socket connection, no child
// process on the runner's side at all.
import { closeSync, constants as fsConstants, fstatSync, openSync } from 'node:fs';
import { connect } from 'node:net';
import { constants as osConstants } from 'node:os';
import { Readable, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { timerDelay } from '../../shared/units.ts';
import { TIMEOUT_EXIT_CODE, type RunningCommand } from '../exec.ts';
import { encodeResize, encodeSignal, encodeStart, encodeStdin, frame, FRAME, FrameReader, type StartRequest } from './protocol.ts';

// Linux's O_PATH (the same on x86-64 and arm64); node's fs.constants leaves it out.
const O_PATH = 0o10000000;

/** How long a command told to die gets to report its exit before the connection is dropped (which makes the agent SIGKILL its process group). */
const KILL_GRACE_MS = 1000;
/** How long the agent may leave a START unanswered before the runner asks whether it is wedged (and again after each such wait). */
const ANSWER_CHECK_MS = 3000;

/**
 * Opens the agent's socket without following a symlink: the socket's directory is
 * writable from inside the environment, and a symlink planted there must not make the
 * runner connect to a socket on the host. Returns an O_PATH descriptor to connect
 * through (`/proc/self/fd/N`, which also keeps the address short of the 108-byte
 * limit), or undefined when no agent socket is there.
 */
export function openAgentSocket(path: string): number | undefined {
  let fd: number;
  try {
    fd = openSync(path, O_PATH | fsConstants.O_NOFOLLOW);
  } catch {
    return undefined;
  }
  try {
    if (fstatSync(fd).isSocket()) return fd;
  } catch {
    // not usable
  }
  closeSync(fd);
  return undefined;
}

export interface AgentCommand {
  /** From openAgentSocket; this function closes it. */
  socketFd: number;
  start: StartRequest;
  timeoutMs?: number | undefined;
  /**
   * Asked while the agent leaves the command unanswered: why it cannot answer (it is
   * stopped or traced), which ends the command with that message, or undefined while it
   * is merely slow, which keeps waiting. A stopped PID 1 still accepts connections (the
   * kernel queues them), so without this a command would wait for ever.
   */
  stalled?: (() => Promise<string | undefined>) | undefined;
}

export function startAgentCommand({ socketFd, start, timeoutMs, stalled }: AgentCommand): RunningCommand {
  const began = performance.now();
  const tty = Boolean(start.tty);
  const sock = connect({ path: `/proc/self/fd/${socketFd}` });
  let fdOpen = true;
  const releaseFd = () => {
    if (fdOpen) closeSync(socketFd);
    fdOpen = false;
  };
  sock.once('connect', releaseFd);
  sock.once('close', releaseFd);
  sock.write(encodeStart(start));

  // Output is pulled: when a reader falls behind, the socket pauses, the agent stops
  // reading the command's pipe, and the command blocks on a full pipe.
  let paused = false;
  const pause = () => {
    if (!paused) sock.pause();
    paused = true;
  };
  const resume = () => {
    if (paused) sock.resume();
    paused = false;
  };
  const stdout = new Readable({ read: resume });
  const stderr = new Readable({ read: resume });
  if (tty) stderr.push(null);
  const errorStream = tty ? stdout : stderr;

  let exit: { code: number; signal: number } | undefined;
  let refused = false;
  let lost: string | undefined;
  let timedOut = false;
  let killed = false;
  // After EXIT, or once the connection is gone, the process group may be someone else's.
  let done = false;
  let killTimer: NodeJS.Timeout | undefined;
  // Any frame from the agent: it is alive and serving this command.
  let answered = false;
  let wedged: string | undefined;

  const reader = new FrameReader();
  sock.on('data', (chunk: Buffer) => {
    let messages;
    try {
      messages = reader.push(chunk);
    } catch (err) {
      lost = (err as Error).message;
      sock.destroy();
      return;
    }
    answered ||= messages.length > 0;
    for (const m of messages) {
      if (done) break;
      switch (m.type) {
        case 'stdout':
          if (!stdout.push(m.data)) pause();
          break;
        case 'stderr':
          if (!errorStream.push(m.data)) pause();
          break;
        case 'error':
          // Written where a shell would put it: "berth: nosuch: command not found".
          refused = true;
          errorStream.push(Buffer.from(`berth: ${m.message}\n`));
          break;
        case 'exit':
          exit = m;
          done = true;
          // EXIT is the last frame: nothing more to wait for.
          sock.destroy();
          break;
        case 'started':
          break;
      }
    }
  });
  sock.on('error', (err) => {
    lost ??= err.message;
  });
  const closed = new Promise<void>((resolve) =>
    sock.once('close', () => {
      done = true;
      if (timer) clearTimeout(timer);
      if (killTimer) clearTimeout(killTimer);
      if (answerTimer) clearTimeout(answerTimer);
      if (wedged) {
        errorStream.push(Buffer.from(`berth: ${wedged}\n`));
      } else if (!exit && !refused && !killed && !timedOut) {
        errorStream.push(Buffer.from(`berth: lost the connection to the environment's agent${lost ? `: ${lost}` : ''}\n`));
      }
      stdout.push(null);
      if (!tty) stderr.push(null);
      resolve();
    }),
  );

  const stdin = new Writable({
    write(chunk: Buffer, _encoding, cb) {
      // A command that has exited reads nothing more: drop the input, as a closed pipe would.
      if (done || sock.destroyed) return cb();
      let ok = true;
      for (const f of encodeStdin(chunk)) ok = sock.write(f);
      if (ok) return cb();
      const go = () => {
        sock.off('drain', go);
        sock.off('close', go);
        cb();
      };
      sock.on('drain', go);
      sock.on('close', go);
    },
    final(cb) {
      if (!done && !sock.destroyed) sock.write(frame(FRAME.stdinEof));
      cb();
    },
  });

  const sendSignal = (signal: NodeJS.Signals) => {
    const signo = osConstants.signals[signal];
    if (done || sock.destroyed || !signo) return;
    sock.write(encodeSignal(signo));
    if (signal === 'SIGKILL') {
      killed = true;
      // The agent may be stuck behind input the command does not read; hanging up
      // reaches it anyway.
      killTimer ??= setTimeout(() => sock.destroy(), KILL_GRACE_MS);
    }
  };

  const timer =
    timeoutMs && timeoutMs > 0
      ? setTimeout(() => {
          timedOut = true;
          sendSignal('SIGKILL');
        }, timerDelay(timeoutMs))
      : undefined;

  let answerTimer: NodeJS.Timeout | undefined;
  const checkAnswer = async () => {
    answerTimer = undefined;
    if (answered || done || sock.destroyed || !stalled) return;
    const why = await stalled().catch(() => undefined);
    if (answered || done || sock.destroyed) return;
    if (why) {
      wedged = why;
      sock.destroy();
    } else {
      answerTimer = setTimeout(checkAnswer, ANSWER_CHECK_MS);
    }
  };
  if (stalled) answerTimer = setTimeout(checkAnswer, ANSWER_CHECK_MS);

  // Done when the connection has closed and the output has been read to the end (a
  // terminal's stderr is empty from the start, and nobody need read it).
  const ended = (s: Readable) => finished(s).catch(() => {});
  const exited = Promise.all([closed, ended(stdout), tty ? undefined : ended(stderr)]).then(() => {
    // 255 for a wedged agent as for a lost connection: the command's fate is unknown.
    const exitCode = timedOut ? TIMEOUT_EXIT_CODE : exit ? exit.code : refused ? 126 : killed ? 137 : 255;
    return { exitCode, timedOut, durationMs: performance.now() - began };
  });

  return {
    stdin,
    stdout,
    stderr,
    exited,
    async resize(cols, rows) {
      if (tty && !done && !sock.destroyed) sock.write(encodeResize(rows, cols));
    },
    async signal(signal) {
      sendSignal(signal);
    },
  };
}
