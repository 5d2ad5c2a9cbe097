import { chmodSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { Duplex } from 'node:stream';

/** A socket name Runner.serveSocket accepts: a plain file name, never a path. */
export const SOCKET_NAME_PATTERN = /^[a-z][a-z0-9.-]*$/;

/**
 * Listens on a unix socket at `path` (anything there is replaced), mode 0666 so an
 * environment's processes, whatever uid they map to, can connect: what is served must ask
 * for its own credential. Returns a function that stops it, cuts its connections and
 * removes the socket.
 */
export async function serveUnixSocket(path: string, accept: (connection: Duplex) => void): Promise<() => Promise<void>> {
  await rm(path, { force: true });
  const sockets = new Set<Duplex>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    accept(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  chmodSync(path, 0o666);
  return async () => {
    const closed = new Promise<void>((r) => server.close(() => r()));
    for (const socket of sockets) socket.destroy();
    await closed;
    await rm(path, { force: true });
  };
}
