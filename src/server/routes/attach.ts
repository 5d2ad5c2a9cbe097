import type { WebSocket } from 'ws';
import { AttachControl, AttachStart, EnvironmentRef, STREAM } from '../../shared/api.ts';
import { invalid } from '../../shared/errors.ts';
import type { RunningCommand } from '../../runner/index.ts';
import { errorBody, type App, type AppDeps } from '../app.ts';
import { closeReason } from '../open-streams.ts';
import { exitFields, timeoutMs } from './environments.ts';

const BEARER_PROTOCOL = 'berth.bearer.';

/**
 * Browsers cannot set an Authorization header on a WebSocket, so the web terminal offers
 * the subprotocols `berth, berth.bearer.<token>`; this reads the token back as a bearer
 * header. Only on an upgrade request, and only when no Authorization header was sent. The
 * server (ws) answers with the first protocol offered, `berth`, so the token is never echoed.
 */
export function websocketBearer(headers: Record<string, string | string[] | undefined>): string | undefined {
  if (String(headers.upgrade ?? '').toLowerCase() !== 'websocket') return undefined;
  const offered = String(headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim());
  const token = offered.find((p) => p.startsWith(BEARER_PROTOCOL))?.slice(BEARER_PROTOCOL.length);
  return token ? `Bearer ${token}` : undefined;
}

/**
 * A command over a WebSocket, for interactive use: `berth env exec -i/-t` and the web
 * terminal. The client's first text frame is an AttachStart; after it, binary frames
 * carry stdin (client to server) or stdout/stderr (server to client) behind a one-byte
 * stream tag, and text frames carry control messages (resize, eof, signal; exit, error).
 */
export function attachRoutes(app: App, { environments }: AppDeps): void {
  app.get(
    '/api/orgs/:org/environments/:id/attach',
    {
    websocket: true,
    config: { permission: 'environment.exec', ownership: 'shared' },
    schema: {
      tags: ['environments'],
      summary: 'Run a command interactively (WebSocket)',
      description:
        'Upgrade to a WebSocket. First text frame: AttachStart JSON. Binary frames: 1 byte stream tag (0 stdin, 1 stdout, 2 stderr) + data. ' +
        'Text frames from the server: `started` (the environment was stopped and is being started), `exit` (the ExecResult fields without output), `error`.',
      params: EnvironmentRef,
    },
    },
    (socket: WebSocket, req) => {
      // Frames that arrive while the command starts wait on this promise, so input and
      // control messages are applied in the order they were sent.
      let command: Promise<RunningCommand> | undefined;
      let started: RunningCommand | undefined;
      // Set once the caller's token or role no longer allows this terminal: frames still in
      // flight are dropped, not written to the command.
      let ended = false;
      const release = app.openStreams.watch(req, (why) => {
        ended = true;
        void command?.then((running) => running.signal('SIGKILL'), () => {});
        if (socket.readyState === socket.OPEN) socket.send(JSON.stringify({ type: 'error', ...errorBody(why) }));
        socket.close(1008, closeReason(why));
      });
      const fail = (err: unknown) => {
        if (socket.readyState === socket.OPEN) socket.send(JSON.stringify({ type: 'error', ...errorBody(err) }));
        socket.close(1011);
      };

      const start = async (message: unknown): Promise<RunningCommand> => {
        const parsed = AttachStart.safeParse(message);
        if (!parsed.success) throw invalid(`start frame: ${parsed.error.issues[0]?.message ?? 'invalid'}`, 'start');
        const s = parsed.data;
        const running = await environments.exec(req.scope, req.params.id, {
          cmd: s.cmd,
          cwd: s.cwd,
          env: s.env,
          tty: s.tty ? { cols: s.cols, rows: s.rows } : undefined,
          timeoutMs: timeoutMs(s.timeout),
        }, {
          redact: true,
          // A stopped environment starts first; the client hears so before it waits.
          autoStart: { via: 'terminal', starting: (name) => socket.readyState === socket.OPEN && socket.send(JSON.stringify({ type: 'started', environment: name })) },
        });
        started = running;
        if (!s.stdin) running.stdin.end();
        pipeOut(running, socket);
        return running;
      };

      socket.on('message', (data, isBinary) => {
        if (ended) return;
        const buf = data as Buffer;
        if (!command) {
          if (isBinary) return fail(invalid('send the start frame first', 'start'));
          let message: unknown;
          try {
            message = JSON.parse(buf.toString());
          } catch {
            return fail(invalid('the start frame is not JSON', 'start'));
          }
          command = start(message);
          command.catch(fail);
          return;
        }
        void command
          .then(async (running) => {
            if (ended) return;
            if (isBinary) {
              if (buf[0] === STREAM.stdin) running.stdin.write(buf.subarray(1));
              return;
            }
            const control = AttachControl.safeParse(JSON.parse(buf.toString()));
            if (!control.success) throw invalid('unknown control frame', 'control');
            if (control.data.type === 'resize') await running.resize(control.data.cols, control.data.rows);
            else if (control.data.type === 'eof') running.stdin.end();
            else await running.signal(control.data.signal);
          })
          .catch(fail);
      });
      socket.on('close', () => {
        release();
        void started?.signal('SIGKILL');
      });
    },
  );
}

function pipeOut(command: RunningCommand, socket: WebSocket): void {
  const forward = (tag: number) => (chunk: Buffer) => {
    if (socket.readyState === socket.OPEN) socket.send(Buffer.concat([Buffer.of(tag), chunk]));
  };
  command.stdout.on('data', forward(STREAM.stdout));
  command.stderr.on('data', forward(STREAM.stderr));
  void command.exited.then(
    (status) => {
      if (socket.readyState === socket.OPEN) {
        socket.send(JSON.stringify({ type: 'exit', ...exitFields(status) }));
        socket.close(1000);
      }
    },
    // Its runner went away: the terminal ends with the reason.
    (err: Error) => socket.readyState === socket.OPEN && socket.close(1011, err.message.slice(0, 120)),
  );
}
