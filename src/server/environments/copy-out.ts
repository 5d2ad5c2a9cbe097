// A file or folder copied out of an environment, as a tar archive the control plane can
// stand behind. The archive comes from `tar` inside the environment, which the sandbox
// controls, so it is read here entry by entry and checked against the rule in
// src/shared/copy-archive.ts (the host decides every path; no owners, no special mode bits,
// no device nodes; bounded), scanned for the environment's secrets, and written anew to a
// spool file: only a copy that passed every check is handed out, so a refusal is a clear
// 4xx, never an archive cut off half-way.
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { Transform } from 'node:stream';
import { once } from 'node:events';
import { Header, Pax, type ReadEntry } from 'tar';
import { CopyChecker, CopyRefused, isPlainName, type CheckedEntry, type CopyLimits } from '../../shared/copy-archive.ts';
import { BerthError, invalid, notFound } from '../../shared/errors.ts';
import { Redactor } from '../../shared/redact.ts';
import { tarEntries } from '../../runner/index.ts';
import type { AuditLog } from '../audit/index.ts';
import type { Scope } from '../authz.ts';
import type { AutoStart, EnvironmentService } from './service.ts';

// tar runs inside the environment, in its mount namespace: a symlink there resolves to
// a path in the environment, never to the host's files.
const PACK = 'cd -- "$1" 2>/dev/null || exit 3; [ -e "$2" ] || [ -L "$2" ] || exit 4; exec tar -cf - -- "$2"';
/** What a failed tar may say, at most: enough for its error, not a flood into a reply. */
const MAX_STDERR = 8 * 1024;

export interface CopyOutDeps {
  environments: EnvironmentService;
  audit: AuditLog;
  limits: CopyLimits;
  /** Where checked archives wait until they are sent; the OS's temp folder when absent. */
  spoolDir?: string | undefined;
}

export interface CopiedOut {
  /** The checked archive, ready to send. */
  file: string;
  size: number;
  /** Device nodes and FIFOs left out. */
  skipped: number;
  /** Removes the spool file; call once it is sent (or will not be). */
  discard(): Promise<void>;
}

/** `path` as folder and name: '/workspace/a/' → ['/workspace', 'a']. A path without a name ('/', '..') is refused. */
export function splitCopyPath(path: string): [string, string] {
  const normal = posix.normalize(path).replace(/\/+$/, '');
  const name = posix.basename(normal);
  if (!normal.startsWith('/') || !isPlainName(name)) throw invalid(`name a file or folder to copy, not ${path}`, 'path');
  return [posix.dirname(normal), name];
}

/** Reads `path` out of the environment and checks it; throws a 4xx (and records it) when refused. */
export async function copyOut(deps: CopyOutDeps, scope: Scope, ref: string, path: string, signal?: AbortSignal, autoStart?: AutoStart): Promise<CopiedOut> {
  const [dir, name] = splitCopyPath(path);
  const { environmentId, secrets } = await deps.environments.secretsOf(scope, ref);
  const redactor = new Redactor(secrets);
  const checker = new CopyChecker(name, deps.limits);
  const command = await deps.environments.exec(scope, ref, { cmd: ['sh', '-c', PACK, 'sh', dir, name], timeoutMs: 3_600_000 }, { redact: false, autoStart });
  command.stdin.end();
  let stderr = '';
  command.stderr.on('data', (b: Buffer) => {
    if (stderr.length < MAX_STDERR) stderr += b.toString('utf8', 0, MAX_STDERR - stderr.length);
  });
  let killed = false;
  const kill = () => {
    killed = true;
    void command.signal('SIGKILL');
  };
  signal?.addEventListener('abort', kill, { once: true });

  const spool = await mkdtemp(join(deps.spoolDir ?? tmpdir(), 'berth-copy-'));
  const file = join(spool, 'copy.tar');
  const discard = () => rm(spool, { recursive: true, force: true });
  const out = createWriteStream(file, { mode: 0o600 });
  let refusal: BerthError | undefined;
  let broken: Error | undefined;
  try {
    // Raw bytes are counted before the parser sees them, so no archive is unbounded.
    const counted = command.stdout.pipe(new Transform({
      transform(chunk: Buffer, _enc, done) {
        try {
          checker.count(chunk.length);
          done(null, chunk);
        } catch (err) {
          done(err as Error);
        }
      },
    }));
    for await (const entry of tarEntries(counted)) {
      const checked = checker.check(entry);
      if (checked.kind === 'skip') continue;
      const named = redactor.detect(checked.path + ('linkpath' in checked ? `\n${checked.linkpath}` : ''));
      if (named.length) throw secretRefusal(path, checked.path, named, redactor);
      await write(out, headerOf(checked, entry));
      if (checked.kind !== 'file') continue;
      // The whole body is scanned before anything is sent; the spool holds it meanwhile.
      const detector = redactor.detector();
      for await (const chunk of entry as AsyncIterable<Buffer>) {
        detector.push(chunk);
        await write(out, chunk);
      }
      const found = detector.end();
      if (found.length) throw secretRefusal(path, checked.path, found, redactor);
      const pad = (512 - (checked.size % 512)) % 512;
      if (pad) await write(out, Buffer.alloc(pad));
    }
    checker.finish();
    await write(out, Buffer.alloc(1024));
  } catch (err) {
    if (err instanceof CopyRefused) refusal = new BerthError(err.reason === 'limit' ? 'invalid' : 'forbidden', redactor.redact(err.message));
    else if (err instanceof SecretInCopy) refusal = err;
    else broken = err as Error;
    // A tar that ended by itself (and failed) is heard out below; one still sending is
    // stopped, and what it sent meanwhile is drained, so that its end can be heard.
    if (refusal || !command.stdout.readableEnded) kill();
    command.stdout.unpipe().resume();
  } finally {
    signal?.removeEventListener('abort', kill);
    out.end();
    await once(out, 'close').catch(() => {});
  }

  const status = await command.exited;
  try {
    if (status.exitCode === 3 || status.exitCode === 4) throw notFound(`no file or folder ${path} in the environment`);
    if (signal?.aborted) throw (signal.reason instanceof BerthError ? signal.reason : new BerthError('unavailable', `the copy of ${path} was stopped`));
    if (refusal) {
      const secrets = refusal instanceof SecretInCopy ? refusal.names : [];
      await deps.audit.append({
        orgId: scope.orgId,
        actor: scope.actor,
        action: 'file.copy_refused',
        target: environmentId,
        environmentId,
        details: { path, reason: secrets.length ? 'secret' : refusal.kind === 'invalid' ? 'limit' : 'entry', secrets, message: refusal.message },
      });
      throw refusal;
    }
    // tar's status 1 is "some file changed as we read it": what it sent is whole and was checked.
    if (!killed && status.exitCode !== 0 && status.exitCode !== 1) {
      throw new BerthError('unavailable', `could not read ${path}: ${redactor.redact(stderr.trim()) || `tar exited ${status.exitCode}`}`);
    }
    if (broken) throw new BerthError('forbidden', `refusing to copy ${path}: the environment did not send a valid tar archive (${redactor.redact(broken.message)})`);
    return { file, size: (await stat(file)).size, skipped: checker.skipped, discard };
  } catch (err) {
    await discard();
    throw err;
  }
}

/** A copy refused because it holds a secret: the names go on record, the value nowhere. */
class SecretInCopy extends BerthError {
  readonly names: string[];
  constructor(message: string, names: string[]) {
    super('forbidden', message);
    this.names = names;
  }
}

function secretRefusal(path: string, entry: string, names: string[], redactor: Redactor): SecretInCopy {
  const which = `${names.length > 1 ? 'secrets' : 'secret'} ${names.join(', ')}`;
  return new SecretInCopy(
    `refusing to copy ${path}: ${redactor.redact(entry)} holds the value of ${which}, which the environment receives. ` +
      'Secrets do not leave an environment through a copy: remove the value, or copy only the files that do not hold it',
    names,
  );
}

/** A fresh header: the checked path and mode, no owner, the entry's time. */
function headerOf(checked: Exclude<CheckedEntry, { kind: 'skip' }>, entry: ReadEntry): Buffer {
  const type = checked.kind === 'file' ? 'File' : checked.kind === 'directory' ? 'Directory' : checked.kind === 'symlink' ? 'SymbolicLink' : 'Link';
  const path = checked.kind === 'directory' ? `${checked.path}/` : checked.path;
  const linkpath = 'linkpath' in checked ? checked.linkpath : undefined;
  const mtime = entry.mtime instanceof Date && !Number.isNaN(entry.mtime.getTime()) ? entry.mtime : new Date(0);
  const fields = { path, type, mode: checked.mode, uid: 0, gid: 0, uname: '', gname: '', size: checked.size, mtime, linkpath } as const;
  const block = Buffer.alloc(512);
  // Names longer than the ustar fields go in a pax header first, as node-tar writes them.
  const needPax = new Header(fields).encode(block, 0);
  return needPax ? Buffer.concat([new Pax({ path, linkpath, size: checked.size, mtime }).encode(), block]) : block;
}

async function write(out: WriteStream, chunk: Buffer): Promise<void> {
  if (!out.write(chunk)) await once(out, 'drain');
}
