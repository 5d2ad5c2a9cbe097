// Devcontainer images are built on the runner that runs the task (issue #14): a runner
// joined from its own network namespace gets the checkout over its connection, builds it
// with buildah into its own store, and the task's environment starts from that image; the
// control plane's own store never sees it.
import assert from 'node:assert/strict';
import { lstat, mkdir, mkdtemp, readdir, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { Header } from 'tar';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ImageStore, packCheckout } from '../src/runner/index.ts';
import { unpackCheckout } from '../src/runner/images/checkout-tar.ts';
import { startCluster, type Cluster } from './cluster.ts';
import { createBareRepo, runGit } from './fakes/git-server.ts';
import { IMAGE_DIR, waitFor } from './helpers.ts';
import { ON_POSTGRES } from './postgres.ts';

describe('a devcontainer build on a joined runner', { skip: !ON_POSTGRES && 'joined runners in namespaces (test/cluster.ts) need PostgreSQL: runs in the PostgreSQL suite', timeout: 900_000 }, () => {
  let c: Cluster;
  let runnerId: string;
  let root: string;
  let built: { name: string; org: string } | undefined;

  before(async () => {
    c = await startCluster({ replicas: 1, runners: 1 });
    [runnerId] = (await c.connected()) as [string];
    root = await mkdtemp(join(tmpdir(), 'berth-remote-build-'));
  });
  after(async () => {
    // The runner shares the tests' image cache: the image built here goes with the test.
    if (built) await new ImageStore({ dir: IMAGE_DIR }).remove(built.name, { org: built.org }).catch(() => {});
    await c?.close();
    if (root) await rm(root, { recursive: true, force: true });
  });

  test("a task's Dockerfile is built on the runner that claimed it, and its environment runs the image", async () => {
    const bare = (
      await createBareRepo({
        root,
        name: 'far-built.git',
        files: {
          '.devcontainer/devcontainer.json': JSON.stringify({ build: { dockerfile: 'Dockerfile' } }),
          '.devcontainer/Dockerfile': 'FROM default\nRUN echo built > /built\n',
        },
      })
    ).path;
    const api = c.replicas[0]!.api;
    assert.equal((await api('POST', '/api/orgs/default/projects', { name: 'far-built', repoUrl: bare })).status, 201);
    const r = await api('POST', '/api/orgs/default/tasks', { project: 'far-built', goal: 'read the image', agent: 'command', command: 'cat /built > seen.txt' });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const done = await waitFor(`task ${r.body.id} to end`, async () => {
      const body = (await api('GET', `/api/orgs/default/tasks/${r.body.id}`)).body;
      return ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(body.state) ? body : null;
    }, 600_000);
    assert.equal(done.state, 'succeeded', `${done.stateReason}; the runner said:\n${c.runners[0]!.log().slice(-3000)}`);
    assert.equal(await runGit(['show', `${done.branch}:seen.txt`], { cwd: bare }), 'built\n');

    const row = await c.replicas[0]!.berth.database.db.selectFrom('tasks').select(['runner_id', 'org_id']).where('id', '=', done.id).executeTakeFirstOrThrow();
    assert.equal(row.runner_id, runnerId);
    const env = (await api('GET', `/api/orgs/default/environments/${done.environmentId}`)).body;
    assert.match(env.image, /^build\/far-built:[0-9a-f]{20}$/);
    built = { name: env.image, org: row.org_id };
    // In the runner's store (its --image-dir), not the control plane's (DATA_DIR/images).
    assert.ok(await new ImageStore({ dir: IMAGE_DIR }).get(env.image, { org: row.org_id }), 'the image is in the runner\'s store');
    assert.equal(await new ImageStore({ dir: join(c.replicas[0]!.dataDir, 'images') }).get(env.image, { org: row.org_id }), undefined);
    const logs = (await api('GET', `/api/orgs/default/tasks/${done.id}/events`)).body;
    assert.match(JSON.stringify(logs), /STEP 2\/2: RUN echo built > \/built/, 'the build log comes back from the runner');
  });
});

describe('a checkout on its way to the runner that builds it', () => {
  test('relative symlinks go as symlinks, absolute ones and .git stay behind, paths out of the folder are refused, the bytes are capped', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'berth-checkout-tar-'));
    try {
      const checkout = join(dir, 'checkout');
      await mkdir(join(checkout, '.git'), { recursive: true });
      await mkdir(join(checkout, '.devcontainer'));
      await writeFile(join(checkout, '.git', 'config'), 'secret-ish\n');
      await writeFile(join(checkout, '.devcontainer', 'Dockerfile'), 'FROM default\n');
      await symlink('/etc/passwd', join(checkout, 'passwd'));
      await symlink('.devcontainer/Dockerfile', join(checkout, 'Dockerfile'));
      const to = join(dir, 'unpacked');
      await mkdir(to);
      await unpackCheckout(packCheckout(checkout), to);
      // The absolute link (out of the checkout on any host) stays behind; the control plane's /etc/passwd never goes.
      assert.deepEqual((await readdir(to)).sort(), ['.devcontainer', 'Dockerfile']);
      assert.ok((await lstat(join(to, 'Dockerfile'))).isSymbolicLink());
      assert.equal(await readlink(join(to, 'Dockerfile')), '.devcontainer/Dockerfile');

      // A hand-made tar whose entry climbs out: nothing lands outside.
      const header = new Header({ path: '../escaped', type: 'File', size: 3, mode: 0o644, mtime: new Date(0) });
      header.encode();
      const tarball = Buffer.concat([header.block!, Buffer.from('bad'), Buffer.alloc(509), Buffer.alloc(1024)]);
      const inner = join(dir, 'inner');
      await mkdir(inner);
      await unpackCheckout(Readable.from([tarball]), inner).catch(() => {});
      assert.deepEqual(await readdir(dir).then((l) => l.filter((n) => n === 'escaped')), []);

      await assert.rejects(unpackCheckout(packCheckout(checkout), await mkdtemp(join(dir, 'small-')), 1024), /larger than/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
