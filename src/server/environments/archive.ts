// An environment's export as one archive (api-environment-archive.ts): its state is spooled
// to a private folder while the environment is frozen (its runner's job), hashed on the
// way, and the manifest written before it so an import can check the rest against it. An
// import reads an archive from a user: the manifest bounded and checked, the state bounded
// by the manifest, hashed, compared and its entries checked (state-tar.ts) before the
// environment it makes exists; a damaged or hostile archive changes nothing.
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar';
import { ARCHIVE_FORMAT, ARCHIVE_VERSION, EnvironmentManifest, MANIFEST_ENTRY, MAX_MANIFEST_BYTES, STATE_ENTRY, STATE_OVERHEAD_BYTES } from '../../shared/api-environment-archive.ts';
import { conflict, invalid } from '../../shared/errors.ts';
import { formatSize } from '../../shared/units.ts';
import { checkStateFile, DEFAULT_STATE_ENTRIES, tarEntries } from '../../runner/index.ts';
import type { Scope } from '../authz.ts';
import type { EnvironmentService } from './service.ts';

export interface Spooled {
  manifest: EnvironmentManifest;
  /** Where the state's tar is kept until `discard`. */
  stateFile: string;
  discard(): Promise<void>;
}

/** Copies the environment's state out (frozen while read) and writes its manifest; `archive()` streams both. */
export async function spoolExport(environments: EnvironmentService, scope: Scope, ref: string): Promise<Spooled & { archive(): Readable }> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-export-'));
  const discard = () => rm(dir, { recursive: true, force: true });
  try {
    const stateFile = join(dir, STATE_ENTRY);
    const manifest = await environments.exportState(scope, ref, async (env, state) => {
      if (!env.imageDigest) {
        state.destroy();
        throw conflict(`environment '${env.name}' has no image digest on record, so an import could not check its image: it cannot be exported`);
      }
      const hash = createHash('sha256');
      let bytes = 0;
      const count = new Transform({
        transform(chunk: Buffer, _enc, done) {
          hash.update(chunk);
          bytes += chunk.length;
          done(null, chunk);
        },
      });
      await pipeline(state, count, createWriteStream(stateFile, { mode: 0o600 }));
      return EnvironmentManifest.parse({
        format: ARCHIVE_FORMAT,
        version: ARCHIVE_VERSION,
        createdAt: new Date().toISOString(),
        environment: { id: env.id, name: env.name, user: env.user },
        image: { ref: env.image, digest: env.imageDigest },
        limits: env.limits,
        state: { file: STATE_ENTRY, bytes, sha256: hash.digest('hex') },
      });
    });
    await writeFile(join(dir, MANIFEST_ENTRY), `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o600 });
    // The manifest first: an import checks everything after it against it.
    const archive = () => Readable.from(tar.c({ cwd: dir, portable: true }, [MANIFEST_ENTRY, STATE_ENTRY]));
    return { manifest, stateFile, discard, archive };
  } catch (err) {
    await discard();
    throw err;
  }
}

/** Reads an export (hostile) into a private folder: every check passed, or a clear refusal and nothing kept. */
/** `accept` checks the manifest's settings (throws to refuse) before a byte of the state is kept. */
export async function spoolImport(body: Readable, accept: (manifest: EnvironmentManifest) => void): Promise<Spooled> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-import-'));
  const discard = () => rm(dir, { recursive: true, force: true });
  const stateFile = join(dir, STATE_ENTRY);
  let manifest: EnvironmentManifest | undefined;
  let entries = 0;
  try {
    // The reader ends what it reads when it stops: a pipe of the request, not the request itself, whose socket carries the answer.
    const input = body.pipe(new PassThrough());
    for await (const entry of tarEntries(input)) {
      entries++;
      if (entries === 1) {
        if (entry.path !== MANIFEST_ENTRY || entry.type !== 'File') throw invalid(`not a Berth environment export: its first entry is ${JSON.stringify(entry.path.slice(0, 200))}, not ${MANIFEST_ENTRY}. Make one with \`berth env export\``);
        if ((entry.size ?? 0) > MAX_MANIFEST_BYTES) throw invalid(`${MANIFEST_ENTRY} is larger than ${formatSize(MAX_MANIFEST_BYTES)}: not a Berth export`);
        const chunks: Buffer[] = [];
        for await (const chunk of entry as AsyncIterable<Buffer>) chunks.push(chunk);
        let raw: unknown;
        try {
          raw = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          throw invalid(`${MANIFEST_ENTRY} is not JSON: the archive is damaged`);
        }
        const parsed = EnvironmentManifest.safeParse(raw);
        if (!parsed.success) {
          const issue = parsed.error.issues[0];
          throw invalid(`${MANIFEST_ENTRY} is not one this Berth reads (${issue ? `${issue.path.join('.')}: ${issue.message}` : 'invalid'}): export it again with this version`);
        }
        accept(parsed.data);
        manifest = parsed.data;
      } else if (entries === 2 && manifest) {
        if (entry.path !== STATE_ENTRY || entry.type !== 'File') throw invalid(`the archive's second entry must be ${STATE_ENTRY}: it is damaged`);
        const want = manifest.state;
        // Bounded before a byte is kept: no state is larger than its disk.
        const most = manifest.limits.diskBytes + STATE_OVERHEAD_BYTES;
        if (want.bytes > most) throw invalid(`${STATE_ENTRY} is said to be ${formatSize(want.bytes)}, more than the environment's disk (${formatSize(manifest.limits.diskBytes)}) can hold: the archive is refused`);
        if (entry.size !== want.bytes) throw invalid(`${STATE_ENTRY} is ${entry.size ?? 0} bytes but the manifest says ${want.bytes}: the archive is damaged`);
        const hash = createHash('sha256');
        const out = createWriteStream(stateFile, { mode: 0o600 });
        for await (const chunk of entry as AsyncIterable<Buffer>) {
          hash.update(chunk);
          if (!out.write(chunk)) await once(out, 'drain');
        }
        out.end();
        await once(out, 'close');
        if (hash.digest('hex') !== want.sha256) throw invalid(`${STATE_ENTRY} does not match the manifest's sha256: the archive is damaged (copy it again)`);
      } else {
        throw invalid(`the archive holds more than ${MANIFEST_ENTRY} and ${STATE_ENTRY} (${JSON.stringify(entry.path.slice(0, 200))}): it is not a Berth export`);
      }
    }
    if (!manifest || entries < 2) throw invalid(`the archive ends before ${STATE_ENTRY}: it is incomplete (copy it again)`);
    // Its entries checked here too, before any environment exists; its runner checks again (and owners).
    await checkStateFile(stateFile, { maxEntries: DEFAULT_STATE_ENTRIES });
    return { manifest, stateFile, discard };
  } catch (err) {
    body.unpipe();
    body.resume();
    await discard();
    throw err;
  }
}
