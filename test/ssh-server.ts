// A real OpenSSH server for tests (Debian's openssh-server): sshd -D with its own config on
// 127.0.0.1 and a free port, its own host key, and one authorized deploy key. It logs in as
// root (the tests run as root) with the key only; AuthorizedKeysFile points into the test's
// directory, so nothing of the machine's own ssh setup is read or changed.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './oidc-provider.ts';

const run = promisify(execFile);

export interface SshServer {
  port: number;
  /** known_hosts lines for it, as `ssh-keyscan -p PORT 127.0.0.1` prints them. */
  knownHosts: string;
  output: () => string;
  stop: () => Promise<void>;
}

export interface SshKey {
  privateKey: string;
  publicKey: string;
}

/** A fresh ed25519 key pair without a passphrase. */
export async function makeKey(dir: string, name: string): Promise<SshKey> {
  const file = join(dir, name);
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', name, '-f', file]);
  return { privateKey: await readFile(file, 'utf8'), publicKey: await readFile(`${file}.pub`, 'utf8') };
}


export async function startSshServer(dir: string, authorized: string[]): Promise<SshServer> {
  const port = await freePort();
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_key')]);
  await writeFile(join(dir, 'authorized_keys'), authorized.join(''), { mode: 0o600 });
  const config = join(dir, 'sshd_config');
  await writeFile(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${join(dir, 'host_key')}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'PermitRootLogin prohibit-password',
      'AllowUsers root',
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      // The test's temporary directory is not root-owned all the way up, which StrictModes would refuse.
      'StrictModes no',
      'LogLevel VERBOSE',
      '',
    ].join('\n'),
  );
  // sshd's privilege separation wants this directory; a machine without the service has none.
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
  const child: ChildProcess = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', (error: NodeJS.ErrnoException) =>
      reject(error.code === 'ENOENT' ? new Error('sshd is not installed (openssh-server): run `sudo bash scripts/setup.sh --deps`') : error),
    );
  });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  };
  try {
    return { port, knownHosts: await ready(port, child, () => output), output: () => output, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Waits for sshd's banner, then asks it for its host key. */
async function ready(port: number, child: ChildProcess, output: () => string): Promise<string> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`sshd exited with ${child.exitCode}:\n${output()}`);
    const up = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('data', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (up) break;
    if (Date.now() > deadline) throw new Error(`sshd did not answer on 127.0.0.1:${port} within 20 s:\n${output()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const { stdout } = await run('ssh-keyscan', ['-t', 'ed25519', '-p', String(port), '127.0.0.1']);
  return stdout;
}
