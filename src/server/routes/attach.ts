import type { WebSocket } from 'ws';
import { AttachControl, AttachStart, EnvironmentRef, STREAM } from '../../shared/api.ts';
import { invalid } from '../../shared/errors.ts';
import type { RunningCommand } from '../../runner/index.ts';
import { errorBody, type App, type AppDeps } from '../app.ts';
import { timeoutMs } from './environments.ts';

/**
 * A command over a WebSocket, for interactive use: `berth env exec -i/-t` and the web
 * terminal. The client's first text frame is an AttachStart; after it, binary frames
 * carry stdin (client to server) or stdout/stderr (server to client) behind a one-byte
 * stream tag, and text frames carry control messages (resize, eof, signal; exit, error).
 */
export function attachRoutes(app: App, { environments }: AppDeps): void {
  app.get(
    '/api/environments/:id/attach',
    {
    websocket: true,
    schema: {
      tags: ['environments'],
      summary: 'Run a command interactively (WebSocket)',
      description: 'Upgrade to a WebSocket. First text frame: AttachStart JSON. Binary frames: 1 byte stream tag (0 stdin, 1 stdout, 2 stderr) + data.',
      params: EnvironmentRef,
    },
    },
    (socket: WebSocket, req) => {
      let command: RunningCommand | undefined;
      const fail = (err: unknown) => {
        if (socket.readyState === socket.OPEN) socket.send(JSON.stringify({ type: 'error', ...errorBody(err) }));
        socket.close(1011);
      };

      socket.on('message', async (data, isBinary) => {
        try {
          if (isBinary) {
            const buf = data as Buffer;
            if (command && buf[0] === STREAM.stdin) command.stdin.write(buf.subarray(1));
            return;
          }
          const message = JSON.parse(data.toString());
          if (!command) {
            const parsed = AttachStart.safeParse(message);
            if (!parsed.success) throw invalid(`start frame: ${parsed.error.issues[0]?.message ?? 'invalid'}`, 'start');
            const start = parsed.data;
            socket.pause();
            command = await environments.exec(req.caller.orgId, req.params.id, {
              cmd: start.cmd,
              cwd: start.cwd,
              env: start.env,
              tty: start.tty ? { cols: start.cols, rows: start.rows } : undefined,
              timeoutMs: timeoutMs(start.timeout),
            });
            socket.resume();
            if (!start.stdin) command.stdin.end();
            pipeOut(command, socket);
            return;
          }
          const control = AttachControl.safeParse(message);
          if (!control.success) throw invalid('unknown control frame', 'control');
          if (control.data.type === 'resize') await command.resize(control.data.cols, control.data.rows);
          else if (control.data.type === 'eof') command.stdin.end();
          else await command.signal(control.data.signal);
        } catch (err) {
          fail(err);
        }
      });
      socket.on('close', () => void command?.signal('SIGKILL'));
    },
  );
}

function pipeOut(command: RunningCommand, socket: WebSocket): void {
  const forward = (tag: number) => (chunk: Buffer) => {
    if (socket.readyState === socket.OPEN) socket.send(Buffer.concat([Buffer.of(tag), chunk]));
  };
  command.stdout.on('data', forward(STREAM.stdout));
  command.stderr.on('data', forward(STREAM.stderr));
  void command.exited.then((status) => {
    if (socket.readyState === socket.OPEN) {
      socket.send(JSON.stringify({ type: 'exit', ...status }));
      socket.close(1000);
    }
  });
}
