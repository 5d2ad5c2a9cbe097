// Byte progress of image imports: what the store reports for an archive of a known size, what
// the API hands out under a progress id (to its caller only), and how the CLI words it.
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { create as createTar } from 'tar';
import { ImageStore, type ImageProgressEvent } from '../src/runner/images/index.ts';
import { ByteRate, transferText } from '../src/cli/transfer.ts';
import { IMAGE_DIR, startTestBerth } from './helpers.ts';
import { pushImage, startRegistry } from './registry-server.ts';

const scratch = await mkdtemp(join(tmpdir(), 'berth-image-progress-'));
after(() => rm(scratch, { recursive: true, force: true }));
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** An OCI layout tarball of one uncompressed layer holding `bytes` of random data (so it reads in many chunks). */
async function archiveOf(name: string, bytes: number): Promise<string> {
  const content = join(scratch, `${name}-content`);
  await mkdir(content, { recursive: true });
  await writeFile(join(content, 'data.bin'), randomBytes(bytes));
  const layerFile = join(scratch, `${name}-layer.tar`);
  await createTar({ file: layerFile, cwd: content, portable: true }, ['data.bin']);
  const layer = await readFile(layerFile);
  const dir = join(scratch, `${name}-layout`);
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  const put = async (data: Buffer) => {
    await writeFile(join(dir, 'blobs', 'sha256', sha256(data)), data);
    return { digest: `sha256:${sha256(data)}`, size: data.length };
  };
  const layerDescriptor = { mediaType: 'application/vnd.oci.image.layer.v1.tar', ...(await put(layer)) };
  const config = Buffer.from(
    JSON.stringify({ architecture: process.arch === 'arm64' ? 'arm64' : 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [`sha256:${sha256(layer)}`] } }),
  );
  const configDescriptor = { mediaType: 'application/vnd.oci.image.config.v1+json', ...(await put(config)) };
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: configDescriptor, layers: [layerDescriptor] }));
  const manifestDescriptor = { mediaType: 'application/vnd.oci.image.manifest.v1+json', ...(await put(manifest)), annotations: { 'org.opencontainers.image.ref.name': 'latest' } };
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [manifestDescriptor] }));
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const file = join(scratch, `${name}.oci.tar`);
  await createTar({ file, cwd: dir, portable: true }, await readdir(dir));
  return file;
}

describe('import progress in bytes', () => {
  test('each step over the archive counts up, never back, and ends at its size, which it names as the total', async () => {
    const file = await archiveOf('known', 6 << 20);
    const { size } = await stat(file);
    const events: ImageProgressEvent[] = [];
    const store = new ImageStore({ dir: join(scratch, 'store') });
    const image = await store.importArchive(file, { name: 'progress:known' }, (e) => events.push(e));
    assert.equal(image.name, 'progress:known');

    const counted = events.filter((e) => e.bytes !== undefined);
    const steps = [...new Set(counted.map((e) => e.message))];
    // The archive is read twice (checked, then extracted), then its one layer is applied.
    assert.deepEqual(steps, ['checking known.oci.tar', 'extracting known.oci.tar', 'unpacking layer 1 of 1']);
    for (const step of steps) {
      const seen = counted.filter((e) => e.message === step).map((e) => e.bytes!);
      const total = seen[0]!.total!;
      if (step.startsWith('unpacking')) assert.ok(total > 6 << 20 && total < size, `${step}: the layer's size (${total})`);
      else assert.equal(total, size, `${step}: the total is the file's size`);
      assert.ok(seen.every((b) => b.total === total), `${step}: one total`);
      const done = seen.map((b) => b.done);
      assert.deepEqual(done, [...done].sort((a, b) => a - b), `${step}: monotonic (${done.join(', ')})`);
      assert.equal(done.at(-1), total, `${step}: ends at the size`);
      assert.ok(done.every((d) => d >= 0 && d <= total));
    }
    // Cheap to draw: events are spaced out, not one per 64 KiB chunk (a 6 MiB file is ~100 chunks).
    assert.ok(counted.length < 90, `${counted.length} events`);

    // Imported again: the store remembers the archive and reads nothing, so there are no counts.
    const again: ImageProgressEvent[] = [];
    await store.importArchive(file, { name: 'progress:again' }, (e) => again.push(e));
    assert.deepEqual(again.filter((e) => e.bytes), []);
  });
});

describe('pull progress in bytes', () => {
  test('a pull counts the bytes skopeo writes, up and never back, with no total (the manifest comes last)', { timeout: 300_000 }, async () => {
    const registryDir = join(scratch, 'registry');
    await mkdir(registryDir, { recursive: true });
    const registry = await startRegistry(registryDir);
    try {
      const ref = `${registry.host}/berth/progress:1`;
      await pushImage(ref, 'hello from the progress test');
      const events: ImageProgressEvent[] = [];
      const store = new ImageStore({ dir: join(scratch, 'pull-store'), allowedRegistries: [registry.host] });
      await store.resolve(ref, { onProgress: (e) => events.push(e) });
      const counted = events.filter((e) => e.bytes !== undefined && e.phase === 'pull');
      assert.deepEqual([...new Set(counted.map((e) => e.message))], [`pulling ${ref}`]);
      const done = counted.map((e) => e.bytes!.done);
      assert.deepEqual(done, [...done].sort((a, b) => a - b), `monotonic (${done.join(', ')})`);
      assert.ok(done.at(-1)! > 0, 'ends at what was written');
      assert.ok(counted.every((e) => e.bytes!.total === undefined));
    } finally {
      await registry.stop();
    }
  });
});

describe('GET /api/images/progress/:id', () => {
  test('an import with a progress id works; the id answers only while it runs, and only to its caller', { timeout: 300_000 }, async () => {
    const t = await startTestBerth();
    try {
      const file = await archiveOf('api', 2 << 20);
      const { size } = await stat(file);
      const id = randomUUID();
      const importing = t.api('POST', '/api/images/import', { path: file, name: 'progress:api', progress: id });
      // Whatever it shows while it runs stays within the file (no timing is asserted: it may be done first).
      const { body: other } = await t.api('POST', '/api/orgs/default/tokens', { role: 'admin', name: 'someone-else' });
      const asOther = () => fetch(`${t.client.url}/api/images/progress/${id}`, { headers: { authorization: `Bearer ${other.token}` } });
      const seen: number[] = [];
      let finished = false;
      void importing.finally(() => (finished = true));
      while (!finished) {
        const res = await t.api('GET', `/api/images/progress/${id}`);
        assert.ok(res.status === 200 || res.status === 404, `status ${res.status}`);
        if (res.status === 200) {
          if (res.body.progress?.bytes) seen.push(res.body.progress.bytes.done);
          // Open for its caller at this moment, and still nothing to anyone else.
          assert.equal((await asOther()).status, 404);
        }
        await sleep(20);
      }
      const done = await importing;
      assert.equal(done.status, 201, JSON.stringify(done.body));
      assert.ok(seen.every((n) => n >= 0 && n <= size), seen.join(', '));

      const gone = await t.api('GET', `/api/images/progress/${id}`);
      assert.equal(gone.status, 404, 'nothing is kept once the request is answered');
      assert.match(gone.body.error.message, /no pull or import of yours is running under progress id/);
      const bad = await t.api('GET', '/api/images/progress/not-a-uuid');
      assert.equal(bad.status, 400);
      const badBody = await t.api('POST', '/api/images/import', { path: file, progress: 'x' });
      assert.equal(badBody.status, 400);
      assert.match(badBody.body.error.field, /progress/);
    } finally {
      await t.destroy();
      // The shared image cache keeps nothing of this test's.
      await new ImageStore({ dir: IMAGE_DIR }).remove('progress:api').catch(() => {});
    }
  });
});

describe('the CLI line', () => {
  test('done / total with the share and the rate; done alone when the total is unknown', () => {
    assert.equal(transferText({ done: 5 << 20, total: 20 << 20 }, 2 << 20), '5M / 20M (25%), 2M/s');
    assert.equal(transferText({ done: 1536 }, undefined), '1.5K');
    const rate = new ByteRate();
    assert.equal(rate.sample(0, 0), undefined, 'no rate from one sample');
    assert.equal(rate.sample(1 << 20, 500), 2 << 20);
    assert.equal(rate.sample(100, 1000), undefined, 'a count that goes back is a new step');
  });
});
