// Run as root in a new, empty network namespace (`unshare --net`): brings its loopback up,
// relays one loopback port to the pull proxy's unix socket (pull-proxy.ts, in the host's
// namespace), and runs the command after `--` with that port as its HTTP(S) proxy. Nothing
// else is reachable from here: not the host's loopback services, not its networks, and not
// the hosts skopeo's Go runtime would reach without the proxy (it never proxies loopback).
//   node pull-sandbox.ts SOCKET -- skopeo copy ...
import { spawn, spawnSync } from 'node:child_process';
import { connect, createServer, type AddressInfo } from 'node:net';

const [socketPath, separator, command, ...args] = process.argv.slice(2);
if (!socketPath || separator !== '--' || !command) {
  process.stderr.write('usage: pull-sandbox.ts SOCKET -- COMMAND [ARGS...]\n');
  process.exit(2);
}
const up = spawnSync('ip', ['link', 'set', 'lo', 'up'], { stdio: 'inherit' });
if (up.status !== 0) process.exit(up.status ?? 1);

const relay = createServer((client) => {
  const upstream = connect(socketPath);
  client.pipe(upstream).pipe(client);
  client.on('error', () => upstream.destroy());
  upstream.on('error', () => client.destroy());
});
relay.listen(0, '127.0.0.1', () => {
  const proxy = `http://127.0.0.1:${(relay.address() as AddressInfo).port}`;
  const env = { ...process.env, HTTPS_PROXY: proxy, HTTP_PROXY: proxy, https_proxy: proxy, http_proxy: proxy, NO_PROXY: '', no_proxy: '' };
  const child = spawn(command, args, { stdio: 'inherit', env });
  child.on('error', (error) => {
    process.stderr.write(`${error.message}\n`);
    process.exit(127);
  });
  child.on('close', (code) => process.exit(code ?? 1));
});
