import type { AttachStart } from '../../shared/api.ts';
import { STREAM } from '../../shared/api.ts';
import type { ErrorKind } from '../../shared/errors.ts';
import type { ApiClient } from '../client.ts';
import { ApiError } from '../errors.ts';
import { CliError } from '../output.ts';

export interface AttachOptions {
  cmd: string[];
  cwd?: string;
  env: Record<string, string>;
  timeout?: string;
  interactive: boolean;
  tty: boolean;
}

/** Runs a command over the attach WebSocket, wiring it to this terminal. Resolves to its exit code. */
export async function attach(client: ApiClient, id: string, o: AttachOptions): Promise<number> {
  const ws = await client.websocket(client.orgPath(`environments/${encodeURIComponent(id)}/attach`));
  const stdin = process.stdin;
  const rawTty = o.tty && stdin.isTTY;
  const cols = process.stdout.columns || 80;
  const rows = process.stdout.rows || 24;

  return new Promise<number>((resolve, reject) => {
    let exitCode: number | undefined;
    const restore = () => {
      if (rawTty) stdin.setRawMode(false);
      stdin.pause();
      process.stdout.off('resize', onResize);
    };
    const onResize = () => ws.send(JSON.stringify({ type: 'resize', cols: process.stdout.columns || 80, rows: process.stdout.rows || 24 }));

    ws.on('open', () => {
      const start: AttachStart = {
        type: 'start',
        cmd: o.cmd,
        cwd: o.cwd,
        env: o.env,
        timeout: o.timeout,
        tty: o.tty,
        stdin: o.interactive || o.tty,
        cols,
        rows,
      };
      ws.send(JSON.stringify(start));
      if (o.interactive || o.tty) {
        if (rawTty) stdin.setRawMode(true);
        stdin.on('data', (chunk: Buffer) => ws.send(Buffer.concat([Buffer.of(STREAM.stdin), chunk])));
        stdin.on('end', () => ws.send(JSON.stringify({ type: 'eof' })));
        stdin.resume();
      }
      if (o.tty) process.stdout.on('resize', onResize);
    });

    ws.on('message', (data, isBinary) => {
      const buf = data as Buffer;
      if (isBinary) {
        (buf[0] === STREAM.stderr ? process.stderr : process.stdout).write(buf.subarray(1));
        return;
      }
      const message = JSON.parse(buf.toString()) as { type: string; exitCode?: number; timedOut?: boolean; message?: string | null; environment?: string; error?: { message: string } };
      if (message.type === 'started') {
        process.stderr.write(`berth: environment ${message.environment ?? id} was stopped; starting it\n`);
      } else if (message.type === 'exit') {
        exitCode = message.exitCode ?? 1;
        if (message.timedOut) process.stderr.write(`berth: the command ran past its timeout and was killed\n`);
        // "killed: out of memory (limit 256m)"
        if (message.message) process.stderr.write(`berth: ${message.message}\n`);
      } else if (message.type === 'error') {
        restore();
        reject(new CliError(message.error?.message ?? 'the command failed'));
      }
    });

    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c));
      res.on('end', () => {
        restore();
        let error: { message?: string; kind?: ErrorKind; field?: string } = {};
        try {
          error = JSON.parse(body).error;
        } catch {
          // keep the status line
        }
        reject(new ApiError(error.message || `${res.statusCode} ${res.statusMessage}`, res.statusCode ?? 500, error.kind, error.field));
      });
    });
    ws.on('error', (err) => {
      restore();
      reject(new CliError(`cannot reach Berth at ${client.url} (${(err as NodeJS.ErrnoException).code ?? err.message}): is \`berth up\` running?`));
    });
    ws.on('close', () => {
      restore();
      if (exitCode !== undefined) resolve(exitCode);
      else reject(new CliError('the connection closed before the command finished'));
    });
  });
}
