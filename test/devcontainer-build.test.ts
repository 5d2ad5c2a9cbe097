// Devcontainer images built by Berth (issue #13, "environment as code"): a repository's
// Dockerfile (build args, context, target) and local features (options, order, containerEnv)
// built with real buildah by `berth project check`, reused while nothing changes, and run as
// a real environment; RUN steps reach nothing but the egress proxy; bad input is a clear error.
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { create as createTar } from 'tar';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { copyContext } from '../src/runner/images/build-context.ts';
import { rewriteFroms } from '../src/runner/images/build-dockerfile.ts';
import { optionVariable, resolveFeatures } from '../src/runner/images/features.ts';
import { createBareRepo, pushCommit, runGit } from './fakes/git-server.ts';
import { sh, startTestBerth, waitFor, type TestBerth } from './helpers.ts';

const run = promisify(execFile);

let t: TestBerth;
let root: string;
let registry: { host: string; child: ChildProcess };

/** Debian's docker-registry on loopback, listed as a registry Berth may pull from (as an instance administrator would). */
async function startRegistry(dir: string): Promise<{ host: string; child: ChildProcess }> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  await writeFile(join(dir, 'registry.yml'), `version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, 'registry')}\nhttp:\n  addr: 127.0.0.1:${port}\n`);
  const child = spawn('docker-registry', ['serve', join(dir, 'registry.yml')], { stdio: 'ignore' });
  const host = `127.0.0.1:${port}`;
  await waitFor('the registry to listen', async () => (await fetch(`http://${host}/v2/`).catch(() => null))?.ok);
  return { host, child };
}

/** Publishes a devcontainer feature as the devcontainer CLI does: an OCI artifact whose one layer is the folder's tar. */
async function publishFeature(ref: string, files: Record<string, string>): Promise<void> {
  const dir = await mkdtemp(join(root, 'feature-'));
  const layout = join(dir, 'oci');
  await mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
  const put = async (data: Buffer) => {
    const hex = createHash('sha256').update(data).digest('hex');
    await writeFile(join(layout, 'blobs', 'sha256', hex), data);
    return { digest: `sha256:${hex}`, size: data.length };
  };
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  const chunks: Buffer[] = [];
  for await (const chunk of createTar({ cwd: dir, portable: true }, Object.keys(files)) as AsyncIterable<Buffer>) chunks.push(chunk);
  const layer = await put(Buffer.concat(chunks));
  const config = await put(Buffer.from('{}'));
  const manifest = await put(
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.devcontainers', ...config }, layers: [{ mediaType: 'application/vnd.devcontainers.layer.v1+tar', ...layer }] })),
  );
  await writeFile(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  await writeFile(join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': '1' } }] }));
  await run('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${layout}:1`, `docker://${ref}`]);
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'berth-dcbuild-'));
  registry = await startRegistry(root);
  process.env.BERTH_ALLOWED_REGISTRIES = registry.host;
  t = await startTestBerth({ taskConcurrency: 1 });
});
after(async () => {
  // Built images are named in this test's org of the shared image cache: they go with it.
  if (t) {
    const store = t.berth.runner.images;
    for (const image of await store.list()) if (image.org && image.name.startsWith('build/')) await store.remove(image.name, { org: image.org }).catch(() => {});
  }
  await t?.destroy();
  registry?.child.kill();
  await rm(root, { recursive: true, force: true });
});

const feature = (id: string, extra: Record<string, unknown> = {}) => JSON.stringify({ id, version: '1.0.0', ...extra });

describe('features and Dockerfiles, read from a checkout', () => {
  test('options become upper-cased variables with defaults; dependsOn and installsAfter order the install', async () => {
    const repo = await mkdtemp(join(root, 'features-'));
    const write = async (path: string, text: string) => {
      await mkdir(join(repo, path, '..'), { recursive: true });
      await writeFile(join(repo, path), text);
    };
    await write('.devcontainer/a/devcontainer-feature.json', feature('a', { installsAfter: ['c'], options: { 'go-version': { type: 'string', default: '1.22' }, '2fast': { type: 'boolean', default: false } } }));
    await write('.devcontainer/a/install.sh', 'true');
    await write('.devcontainer/b/devcontainer-feature.json', feature('b', { dependsOn: { a: {} } }));
    await write('.devcontainer/b/install.sh', 'true');
    await write('.devcontainer/c/devcontainer-feature.json', feature('c', { options: { flavour: { type: 'string', enum: ['mild', 'hot'], default: 'mild' } } }));
    await write('.devcontainer/c/install.sh', 'true');
    const order = await resolveFeatures(repo, '.devcontainer', { './b': true, './a': { 'go-version': '1.23' }, './c': 'ignored-version' });
    assert.deepEqual(order.map((f) => f.id), ['c', 'a', 'b']);
    assert.deepEqual(order[1]!.env, { GO_VERSION: '1.23', _FAST: 'false' });
    assert.deepEqual(order[0]!.env, { FLAVOUR: 'mild', VERSION: 'ignored-version' });
    assert.equal(optionVariable('my.option-x'), 'MY_OPTION_X');

    await assert.rejects(resolveFeatures(repo, '.devcontainer', { './c': { flavour: 'bland' } }), /option 'flavour' is 'bland', but it must be one of mild, hot/);
    await assert.rejects(resolveFeatures(repo, '.devcontainer', { './b': {} }), /depends on 'a', which devcontainer\.json does not list/);
    await assert.rejects(resolveFeatures(repo, '.devcontainer', { './missing': {} }), /feature '\.\/missing' does not exist in the repository/);
    await assert.rejects(resolveFeatures(repo, '.devcontainer', { '../../etc': {} }), /leads outside the repository|does not exist/);
    await assert.rejects(resolveFeatures(repo, '.devcontainer', { 'ghcr.io/devcontainers/features/node:1': {} }), /fetched from a registry/);
    await write('.devcontainer/a/devcontainer-feature.json', feature('a', { dependsOn: { b: {} } }));
    await assert.rejects(resolveFeatures(repo, '.devcontainer', { './a': {}, './b': {} }), /cycle \(\.\/a, \.\/b\)/);
  });

  test('a build context with a symlink out of it is refused; the copy is hashed by content', async () => {
    const ctx = await mkdtemp(join(root, 'ctx-'));
    await writeFile(join(ctx, 'a.txt'), 'one');
    await symlink('a.txt', join(ctx, 'inside'));
    const first = await copyContext(ctx, join(root, `copy-${Date.now()}-1`));
    assert.equal(first, await copyContext(ctx, join(root, `copy-${Date.now()}-2`)));
    await writeFile(join(ctx, 'a.txt'), 'two');
    assert.notEqual(first, await copyContext(ctx, join(root, `copy-${Date.now()}-3`)));
    await symlink('/etc/passwd', join(ctx, 'out'));
    await assert.rejects(copyContext(ctx, join(root, `copy-${Date.now()}-4`)), /symlink 'out' points outside the context/);
  });

  test('FROM lines: global ARGs and build args substituted, stages left alone', () => {
    const text = 'ARG VARIANT=bookworm\nFROM base:${VARIANT} AS build\nRUN true\nFROM build\nFROM \\\n  other:1\n';
    const { froms, text: out } = rewriteFroms(text, { VARIANT: 'trixie' }, (ref) => `x/${ref.replace(':', '-')}`);
    assert.deepEqual(froms, [{ ref: 'base:trixie', internal: false }, { ref: 'build', internal: true }, { ref: 'other:1', internal: false }]);
    assert.equal(out, 'ARG VARIANT=bookworm\nFROM x/base-trixie AS build\nRUN true\nFROM build\nFROM x/other-1\n\n');
    assert.throws(() => rewriteFroms('FROM base:${NOPE}\n', {}, (r) => r), /no ARG before the first FROM/);
    assert.throws(() => rewriteFroms('RUN true\n', {}, (r) => r), /has no FROM line/);
  });
});

const DOCKERFILE = `ARG BASE=default
FROM \${BASE} AS tools
ARG GREETING
COPY app.txt /opt/app.txt
RUN echo "$GREETING" > /opt/greeting && id -u > /opt/built-as
# Only the proxy leads out: a refused name, and the host's own loopback not there at all.
RUN curl -s -o /dev/null -w '%{http_code}' http://blocked.example.com/ > /opt/proxied-status; \\
    if curl -s --noproxy '*' --max-time 5 http://127.0.0.1:HOSTPORT/health; then echo reached > /opt/host-loopback; else echo unreachable > /opt/host-loopback; fi
FROM tools AS unused
RUN false
`;

describe('berth project check', () => {
  test('builds a Dockerfile and local features with buildah, reuses the result, and the image runs as an environment', async () => {
    const port = new URL(t.client.url).port;
    const bare = (
      await createBareRepo({
        root,
        name: 'built.git',
        files: {
          '.devcontainer/devcontainer.json': JSON.stringify({
            build: { dockerfile: 'Dockerfile', context: '..', args: { GREETING: 'hello from a build arg' }, target: 'tools' },
            features: { './greeter': { message: "it's a feature" }, './base-dir': {} },
          }),
          '.devcontainer/Dockerfile': DOCKERFILE.replace('HOSTPORT', port),
          'app.txt': 'from the context\n',
          '.devcontainer/base-dir/devcontainer-feature.json': feature('base-dir'),
          '.devcontainer/base-dir/install.sh': '#!/bin/sh\nset -e\nmkdir -p /opt/features\necho base-dir > /opt/features/order\n',
          '.devcontainer/greeter/devcontainer-feature.json': feature('greeter', {
            installsAfter: ['base-dir'],
            options: { message: { type: 'string', default: 'hi' }, loud: { type: 'boolean', default: true } },
            containerEnv: { GREETER_HOME: '/opt/greeter' },
          }),
          '.devcontainer/greeter/install.sh': '#!/bin/sh\nset -e\necho greeter >> /opt/features/order\nmkdir -p /opt/greeter\nprintf "%s|%s|%s|%s\\n" "$MESSAGE" "$LOUD" "$_REMOTE_USER" "$_REMOTE_USER_HOME" > /opt/greeter/said\n',
        },
      })
    ).path;
    assert.equal((await t.cli(['project', 'create', 'built', '--repo', bare])).code, 0);

    let r = await t.cli(['project', 'check', 'built']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /STEP 1\/\d+: FROM localhost\/berth-base:[0-9a-f]{64} AS tools/);
    assert.match(r.stderr, /installing 2 feature\(s\): base-dir, greeter/);
    assert.match(r.stderr, /network: GET blocked\.example\.com:80\/ refused/);
    assert.doesNotMatch(r.stderr, /RUN false/, 'the target stage ends the build');
    const image = /image (build\/built:[0-9a-f]{20}) \(sha256:[0-9a-f]{12}\), built/.exec(r.stdout)?.[1];
    assert.ok(image, r.stdout);

    // Nothing changed: the same image, without building.
    r = await t.cli(['project', 'check', 'built', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual({ ...JSON.parse(r.stdout), digest: undefined }, { image, digest: undefined, reused: true });
    assert.doesNotMatch(r.stderr, /STEP/);

    // The image runs as an environment of the org.
    const created = await t.api('POST', '/api/orgs/default/environments', { name: 'from-build', image });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    await waitFor('the environment to run', async () => (await t.api('GET', '/api/orgs/default/environments/from-build')).body.state === 'running');
    const out = await sh(t, 'from-build', 'cat /opt/greeting /opt/built-as /opt/app.txt /opt/proxied-status /opt/host-loopback /opt/features/order /opt/greeter/said; echo "home=$GREETER_HOME"; test -e /tmp/berth-features || echo clean');
    assert.equal(out.exitCode, 0, out.stderr);
    assert.equal(out.stdout, "hello from a build arg\n0\nfrom the context\n403unreachable\nbase-dir\ngreeter\nit's a feature|true|root|/root\nhome=/opt/greeter\nclean\n");

    // A change to the context builds anew.
    await pushCommit({ bare, branch: 'main', files: { 'app.txt': 'changed\n' }, message: 'change the context' });
    r = await t.cli(['project', 'check', 'built', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const rebuilt = JSON.parse(r.stdout);
    assert.equal(rebuilt.reused, false);
    assert.notEqual(rebuilt.image, image);
    assert.match(r.stderr, /Using cache/, "buildah's layer cache serves the steps before the change");

    const audit = (await t.api('GET', '/api/orgs/default/audit?action=project.check')).body.items as { target: string; details: { reused: boolean } }[];
    assert.equal(audit.length, 3);
    assert.equal(audit[0]!.target, 'built');
  });

  test("a task builds (here: reuses) its devcontainer image and runs in it; the transcript says so", async () => {
    const bare = join(root, 'built.git');
    const r = await t.cli(['run', 'Read the image', '--project', 'built', '--agent', 'command', '--command', 'cat /opt/app.txt /opt/greeter/said > seen.txt', '--json', '-d']);
    assert.equal(r.code, 0, r.stderr);
    const id = JSON.parse(r.stdout).id as string;
    const done = await waitFor(`task ${id} to end`, async () => {
      const body = (await t.api('GET', `/api/orgs/default/tasks/${id}`)).body;
      return ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(body.state) ? body : null;
    }, 600_000);
    assert.equal(done.state, 'succeeded', done.stateReason);
    assert.equal(await runGit(['show', `${done.branch}:seen.txt`], { cwd: bare }), "changed\nit's a feature|true|root|/root\n");
    const logs = (await t.cli(['task', 'logs', id])).stdout;
    assert.match(logs, /environment from devcontainer\.json: image built from \.devcontainer\/Dockerfile with 2 feature\(s\)/);
    assert.match(logs, /building the devcontainer image/);
    assert.match(logs, /image build\/built:[0-9a-f]{20} \(unchanged since it was built\)/);
    const env = (await t.api('GET', `/api/orgs/default/environments/${done.environmentId}`)).body;
    assert.match(env.image, /^build\/built:[0-9a-f]{20}$/);
  });

  test('a feature from a registry is fetched as an OCI artifact under the registry rules and installed with its options', async () => {
    const ref = `${registry.host}/features/hello:1`;
    await publishFeature(ref, {
      'devcontainer-feature.json': feature('hello', { options: { greeting: { type: 'string', default: 'hey' } } }),
      'install.sh': '#!/bin/sh\nset -e\necho "$GREETING" > /opt/oci-feature\n',
    });
    const bare = (await createBareRepo({ root, name: 'oci-feature.git', files: { '.devcontainer/devcontainer.json': JSON.stringify({ image: 'default', features: { [ref]: { greeting: 'from a registry' } } }) } })).path;
    assert.equal((await t.cli(['project', 'create', 'oci-feature', '--repo', bare])).code, 0);
    const r = await t.cli(['project', 'check', 'oci-feature', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`fetching feature ${ref.replaceAll('.', '\\.')}`));
    const { image } = JSON.parse(r.stdout) as { image: string };
    const created = await t.api('POST', '/api/orgs/default/environments', { name: 'from-oci-feature', image });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal((await sh(t, 'from-oci-feature', 'cat /opt/oci-feature')).stdout, 'from a registry\n');

    // A feature the registry does not have: a clear error.
    const missing = (await createBareRepo({ root, name: 'oci-missing.git', files: { '.devcontainer/devcontainer.json': JSON.stringify({ features: { [`${registry.host}/features/nothing:1`]: {} } }) } })).path;
    assert.equal((await t.cli(['project', 'create', 'oci-missing', '--repo', missing])).code, 0);
    const m = await t.cli(['project', 'check', 'oci-missing']);
    assert.equal(m.code, 1);
    assert.match(m.stderr, /features\/nothing:1' is not in its registry/);
  });

  test('bad input is a clear error and builds nothing', async () => {
    const cases: [string, Record<string, string>, RegExp][] = [
      ['no-dockerfile', { '.devcontainer/devcontainer.json': '{ "build": { "dockerfile": "Nope" } }' }, /build\.dockerfile 'Nope' does not exist in the repository/],
      ['escapes', { '.devcontainer/devcontainer.json': '{ "build": { "dockerfile": "Dockerfile", "context": "../.." } }', '.devcontainer/Dockerfile': 'FROM default\n' }, /build\.context '\.\.\/\.\.' leads outside the repository/],
      ['unknown-feature', { '.devcontainer/devcontainer.json': '{ "features": { "./nowhere": {} } }' }, /feature '\.\/nowhere' does not exist/],
      [
        'cycle',
        {
          '.devcontainer/devcontainer.json': '{ "features": { "./x": {}, "./y": {} } }',
          '.devcontainer/x/devcontainer-feature.json': feature('x', { dependsOn: { y: {} } }),
          '.devcontainer/x/install.sh': 'true',
          '.devcontainer/y/devcontainer-feature.json': feature('y', { dependsOn: { x: {} } }),
          '.devcontainer/y/install.sh': 'true',
        },
        /cycle \(\.\/x, \.\/y\)/,
      ],
      ['unknown-base', { '.devcontainer/devcontainer.json': '{ "build": { "dockerfile": "Dockerfile" } }', '.devcontainer/Dockerfile': 'FROM no-such-image\n' }, /image 'no-such-image' not found/],
      ['failing-run', { '.devcontainer/devcontainer.json': '{ "build": { "dockerfile": "Dockerfile" } }', '.devcontainer/Dockerfile': 'FROM default\nRUN exit 3\n' }, /building \.devcontainer\/Dockerfile failed/],
    ];
    for (const [name, files, error] of cases) {
      const bare = (await createBareRepo({ root, name: `${name}.git`, files })).path;
      assert.equal((await t.cli(['project', 'create', name, '--repo', bare])).code, 0);
      const r = await t.cli(['project', 'check', name]);
      assert.equal(r.code, 1, `${name}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, error, name);
      assert.doesNotMatch(r.stderr, /\n\s+at /, `${name}: no stack trace`);
    }
    const images = (await t.api('GET', '/api/images')).body.items as { name: string }[];
    assert.deepEqual(images.filter((i) => /^build\/(no-dockerfile|escapes|unknown-feature|cycle|unknown-base|failing-run):/.test(i.name)), []);
  });
});
