// Environment as code (issue #13): a devcontainer.json's remoteUser/containerUser, forwardPorts,
// volume mounts and initializeCommand, docker-compose devcontainers, and `berth project show`
// printing the resolved spec with where each field came from.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fromDevContainer, mergeSpec, readRepoSpec } from '../src/server/tasks/index.ts';
import { resolveUser } from '../src/runner/users.ts';
import { createBareRepo, runGit } from './fakes/git-server.ts';
import { sh, startTestBerth, waitFor, type TestBerth } from './helpers.ts';

const ENVS = '/api/orgs/default/environments';

async function checkout(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-dcf-'));
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(dir, path)), { recursive: true });
    await writeFile(join(dir, path), content);
  }
  return dir;
}

/** The primary service runs from an image; db and redis are sidecars Berth does not start. */
const COMPOSE = `services:
  app:
    image: default
    user: www-data
    environment:
      - FROM_COMPOSE=1
      - SHARED=compose
    volumes: [..:/workspaces/shop:cached]
    depends_on: [db]
  db:
    image: postgres:16
  redis:
    image: redis:7
`;

describe('parsing, with where each field came from', () => {
  test('remoteUser, forwardPorts, named volumes and workspaceFolder are read; bind mounts and initializeCommand are refused with a note', () => {
    const spec = fromDevContainer(`{
      // JSONC: comments and trailing commas
      "image": "default",
      "remoteUser": "www-data",
      "containerUser": "root",
      "forwardPorts": [3000, "db:5432",],
      "workspaceFolder": "/workspaces/shop/",
      "mounts": [
        "source=shop-cache,target=/cache,type=volume",
        { "source": "node-modules", "target": "/workspaces/shop/node_modules", "type": "volume" },
        "source=/home/me/.ssh,target=/root/.ssh,type=bind",
        "source=\${localWorkspaceFolderBasename}-x,target=/x,type=volume",
      ],
      "initializeCommand": "docker login",
    }`);
    assert.equal(spec.user, 'www-data');
    assert.deepEqual(spec.forwardPorts, [3000, 'db:5432']);
    assert.equal(spec.workspaceFolder, '/workspaces/shop');
    assert.deepEqual(spec.volumes, [{ name: 'shop-cache', target: '/cache' }, { name: 'node-modules', target: '/workspaces/shop/node_modules' }]);
    const notes = spec.notes.join('\n');
    assert.match(notes, /initializeCommand is refused: it runs on the host/);
    assert.match(notes, /mount \/home\/me\/\.ssh → \/root\/\.ssh is refused: a bind mount names a path on the host/);
    assert.match(notes, /does not expand \$\{…\} variables/);
    assert.match(notes, /containerUser 'root' is not used: commands run as remoteUser 'www-data'/);
    assert.doesNotMatch(notes, /not used by Berth: .*(remoteUser|forwardPorts|mounts|workspaceFolder)/);

    const file = '.devcontainer/devcontainer.json';
    assert.equal(spec.sources.user, `${file} (remoteUser)`);
    assert.equal(spec.sources.forwardPorts, file);
    assert.equal(spec.sources.volumes, file);

    const merged = mergeSpec(spec, { check: 'npm test', env: { A: '1' } });
    assert.equal(merged.sources.image, file);
    assert.equal(merged.sources.check, 'project setting');
    assert.equal(merged.sources.env, 'project setting');
    assert.equal(merged.sources.allowDomains, 'Berth default');
    assert.equal(mergeSpec(spec, { user: '1000' }).sources.user, 'project setting');
    assert.equal(mergeSpec(spec, { user: '1000' }).user, '1000');
    assert.equal(mergeSpec(null, {}).sources.image, 'Berth default');
  });

  test('bad values are clear errors that name the property', () => {
    assert.throws(() => fromDevContainer('{ "remoteUser": "no such user!" }'), /remoteUser: 'no such user!' is not a user name or a uid/);
    assert.throws(() => fromDevContainer('{ "remoteUser": "70000" }'), /remoteUser: .* uid \(0-65535\)/);
    assert.throws(() => fromDevContainer('{ "forwardPorts": [0] }'), /forwardPorts: 0 is not a port/);
    assert.throws(() => fromDevContainer('{ "mounts": ["source=v,target=/proc/x,type=volume"] }'), /the target of volume 'v' may not be under \/proc/);
    assert.throws(() => fromDevContainer('{ "mounts": ["source=v,target=relative,type=volume"] }'), /must be an absolute path/);
    assert.throws(() => fromDevContainer('{ "mounts": ["source=../up,target=/x,type=volume"] }'), /volume name '\.\.\/up'/);
    assert.throws(() => fromDevContainer('{ "workspaceFolder": "/a/../../etc" }'), /workspaceFolder may not contain '\.\.'/);
  });

  test('compose: the primary service runs, the others are listed as not started, fields name the compose service', async () => {
    const dir = await checkout({
      '.devcontainer/devcontainer.json': '{ "dockerComposeFile": ["../docker-compose.yml", "compose.extra.yml"], "service": "app", "workspaceFolder": "/workspaces/shop", "containerEnv": { "SHARED": "devcontainer" } }',
      'docker-compose.yml': COMPOSE,
      '.devcontainer/compose.build.yml': 'services:\n  app:\n    image: shop-dev\n    build:\n      context: ..\n      dockerfile: .devcontainer/Dockerfile\n      args: { NODE: "22" }\n      target: dev\n  db:\n    image: postgres\n',
      '.devcontainer/compose.extra.yml': 'services:\n  app:\n    working_dir: /ignored\n  mail:\n    image: mailhog\n',
    });
    try {
      const spec = (await readRepoSpec(dir))!;
      assert.equal(spec.image, 'default');
      assert.equal(spec.user, 'www-data');
      assert.equal(spec.workspaceFolder, '/workspaces/shop', "the devcontainer's workspaceFolder wins over working_dir");
      assert.deepEqual(spec.env, { FROM_COMPOSE: '1', SHARED: 'devcontainer' });
      const from = 'docker-compose.yml + .devcontainer/compose.extra.yml service app';
      assert.equal(spec.sources.image, from);
      assert.equal(spec.sources.user, `${from} (user)`);
      assert.equal(spec.sources.env, `${from}, .devcontainer/devcontainer.json`);
      assert.equal(spec.sources.workspaceFolder, '.devcontainer/devcontainer.json');
      const notes = spec.notes.join('\n');
      assert.match(notes, /only service 'app' runs; 'db', 'mail', 'redis' are not started/);
      assert.match(notes, /volumes, depends_on are not honoured/);

      // A service with a build: built by the runner's builder (paths relative to the compose file's folder), its "image" only naming the result.
      await writeFile(join(dir, '.devcontainer/devcontainer.json'), '{ "dockerComposeFile": "compose.build.yml", "service": "app", "features": { "ghcr.io/devcontainers/features/go:1": {} } }');
      const built = (await readRepoSpec(dir))!;
      assert.equal(built.image, null);
      const { configDir, dockerfile, context, args, target, image, features } = built.build!;
      assert.deepEqual({ configDir, dockerfile, context, args, target, image }, { configDir: '.devcontainer', dockerfile: '../.devcontainer/Dockerfile', context: '..', args: { NODE: '22' }, target: 'dev', image: undefined });
      assert.deepEqual(features, { 'ghcr.io/devcontainers/features/go:1': {} }, "the devcontainer's features go on top");
      assert.equal(built.sources.image, '.devcontainer/compose.build.yml service app (build .devcontainer/Dockerfile)');
      assert.match(built.notes.join('\n'), /only service 'app' runs; 'db' is not started/);

      await writeFile(join(dir, '.devcontainer/devcontainer.json'), '{ "dockerComposeFile": "../docker-compose.yml", "service": "web" }');
      await assert.rejects(readRepoSpec(dir), /service 'web' is not in docker-compose\.yml \(it has app, db, redis\)/);
      await writeFile(join(dir, '.devcontainer/devcontainer.json'), '{ "dockerComposeFile": "../docker-compose.yml" }');
      await assert.rejects(readRepoSpec(dir), /"service" must name the compose service/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('compose files outside the repository are refused, through .. or a symbolic link', async () => {
    const outside = await checkout({ 'secret.yml': 'services:\n  app:\n    image: stolen\n' });
    const dir = await checkout({ '.devcontainer/devcontainer.json': '{ "dockerComposeFile": "../../secret.yml", "service": "app" }' });
    try {
      await assert.rejects(readRepoSpec(dir), /\.\.\/secret\.yml is outside the repository/);
      await symlink(join(outside, 'secret.yml'), join(dir, 'docker-compose.yml'));
      await writeFile(join(dir, '.devcontainer/devcontainer.json'), '{ "dockerComposeFile": "../docker-compose.yml", "service": "app" }');
      await assert.rejects(readRepoSpec(dir), /docker-compose\.yml leads outside the repository \(a symbolic link\)/);
    } finally {
      await rm(dir, { recursive: true, force: true });
      await rm(outside, { recursive: true, force: true });
    }
  });

  test("users resolve from the environment's own files, which are hostile text", () => {
    const passwd = 'root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\nhuge:x:4294967295:1:x:/h:/bin/sh\nbroken line\n';
    const group = 'www-data:x:33:\ndocker:x:999:www-data,other\nbig:x:99999999:www-data\n';
    assert.deepEqual(resolveUser('www-data', passwd, group), { name: 'www-data', uid: 33, gid: 33, groups: [33, 999], home: '/var/www' });
    assert.deepEqual(resolveUser('1234', passwd, group), { name: '1234', uid: 1234, gid: 0, groups: [], home: '/' });
    assert.throws(() => resolveUser('huge', passwd, group), /environments map ids 0-65535/);
    assert.throws(() => resolveUser('nobody', passwd, group), /user 'nobody' is not in the environment's \/etc\/passwd/);
  });
});

describe('real environments and tasks', () => {
  let t: TestBerth;
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'berth-dcf-repos-'));
    t = await startTestBerth();
  });
  after(async () => {
    await t?.destroy();
    await rm(root, { recursive: true, force: true });
  });

  test('commands run as the environment user, with its home; an unknown user is refused with what to do', async () => {
    const res = await t.api('POST', ENVS, { name: 'as-www', user: 'www-data', forwardPorts: [3000, 'db:5432'] });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.equal(res.body.user, 'www-data');
    assert.deepEqual(res.body.forwardPorts, [3000, 'db:5432'], 'recorded on the environment');
    const r = await sh(t, 'as-www', 'id -u; id -g; id -un; echo "$HOME $USER"; touch /root/x 2>&1 || echo denied');
    assert.equal(r.exitCode, 0, r.stderr);
    const lines = r.stdout.split('\n');
    assert.deepEqual(lines.slice(0, 4), ['33', '33', 'www-data', '/var/www www-data']);
    assert.match(lines[4]!, /Permission denied/, "root's home is not the user's to write");
    assert.equal(lines[5], 'denied');

    // The CLI: --user and --volume, and `env show` says both.
    let c = await t.cli(['env', 'create', '--name', 'cli-www', '--user', 'www-data', '--volume', 'cache:/cache']);
    assert.equal(c.code, 0, c.stderr);
    c = await t.cli(['env', 'show', 'cli-www']);
    assert.match(c.stdout, /^user\s+www-data \(its commands run as this user\)$/m);
    assert.match(c.stdout, /^volumes\s+cache at \/cache$/m);
    c = await t.cli(['env', 'exec', 'cli-www', '--', 'id', '-un']);
    assert.equal(c.stdout, 'www-data\n', c.stderr);
    c = await t.cli(['env', 'create', '--name', 'cli-bad', '--volume', 'cache']);
    assert.notEqual(c.code, 0);
    assert.match(c.stderr, /--volume takes NAME:\/path/);

    const bad = await t.api('POST', ENVS, { name: 'as-ghost', user: 'ghost' });
    assert.equal(bad.status, 201, 'the image is only known once it runs');
    const refused = await t.api('POST', `${ENVS}/as-ghost/exec`, { cmd: ['id'] });
    assert.equal(refused.status, 400);
    assert.match(refused.body.error.message, /environment 'as-ghost' cannot run commands as its user: user 'ghost' is not in the environment's \/etc\/passwd: use an image that has it .* or give a uid instead/);
    assert.equal((await t.api('POST', ENVS, { name: 'as-bad', user: 'x y' })).status, 400, 'not a user name: refused, nothing made');
    assert.equal((await t.api('GET', `${ENVS}/as-bad`)).status, 404);
    const uid = await t.api('POST', ENVS, { name: 'as-uid', user: '4321' });
    assert.equal(uid.status, 201, JSON.stringify(uid.body));
    assert.equal((await sh(t, 'as-uid', 'id -u; id -g')).stdout, '4321\n0\n', 'a uid not in passwd runs with gid 0, as docker run --user does');
  });

  test("without the agent as PID 1, the runtime's exec runs commands as the user too", async () => {
    process.env.BERTH_AGENT = 'off';
    let b: TestBerth;
    try {
      b = await startTestBerth();
    } finally {
      delete process.env.BERTH_AGENT;
    }
    try {
      const res = await b.api('POST', ENVS, { name: 'no-agent', user: 'www-data' });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      const r = await sh(b, 'no-agent', 'id -u; id -g; echo "$HOME"; tr "\\0" " " < /proc/1/cmdline');
      assert.equal(r.stdout, '33\n33\n/var/www\n/.berth/init -P ', r.stderr);
    } finally {
      await b.destroy();
    }
  });

  test("a named volume is kept across restarts and shared by the project's environments, not by others", async () => {
    const bare = (await createBareRepo({ root, name: 'vol.git', files: { 'README.md': 'x\n' } })).path;
    assert.equal((await t.cli(['project', 'create', 'vols', '--repo', bare])).code, 0);
    const volumes = [{ name: 'cache', target: '/cache' }];
    assert.equal((await t.api('POST', ENVS, { name: 'vol-a', project: 'vols', volumes })).status, 201);
    assert.equal((await sh(t, 'vol-a', 'echo kept > /cache/file && ls -ld /cache | cut -c1-10')).stdout, 'drwxrwxrwt\n');
    assert.equal((await t.api('POST', `${ENVS}/vol-a/stop`)).body.state, 'stopped');
    assert.equal((await t.api('POST', `${ENVS}/vol-a/start`)).body.state, 'running');
    assert.equal((await sh(t, 'vol-a', 'cat /cache/file')).stdout, 'kept\n', 'after a restart');
    assert.equal((await t.api('DELETE', `${ENVS}/vol-a`)).status, 200);

    const b = await t.api('POST', ENVS, { name: 'vol-b', project: 'vols', volumes, user: 'www-data' });
    assert.equal(b.status, 201, JSON.stringify(b.body));
    assert.deepEqual(b.body.volumes, volumes);
    assert.equal((await sh(t, 'vol-b', 'cat /cache/file && echo mine > /cache/www && stat -c %u /cache/www')).stdout, 'kept\n33\n', "another environment of the project, as its user, after the first was removed");
    assert.equal((await t.api('POST', ENVS, { name: 'vol-c', volumes })).status, 201);
    assert.equal((await sh(t, 'vol-c', 'ls -A /cache')).stdout, '', 'an environment without the project has its own');
    assert.equal((await t.api('POST', ENVS, { name: 'vol-d', volumes: [{ name: 'x', target: '/proc/x' }] })).status, 400);

    // The project's volumes go with the project.
    const projectId = (await t.api('GET', '/api/orgs/default/projects/vols')).body.id as string;
    assert.ok(existsSync(join(t.dataDir, 'volumes', projectId, 'cache', 'file')));
    assert.equal((await t.api('DELETE', `${ENVS}/vol-b`)).status, 200);
    assert.equal((await t.cli(['project', 'rm', 'vols'])).code, 0);
    assert.equal(existsSync(join(t.dataDir, 'volumes', projectId)), false);
  });

  test('a task from a compose devcontainer: the primary service, commands as remoteUser, the notes in the transcript', async () => {
    const bare = (
      await createBareRepo({
        root,
        name: 'shop.git',
        files: {
          'README.md': 'shop\n',
          '.devcontainer/devcontainer.json': `{
            // the primary service of the compose file runs; db and redis do not
            "dockerComposeFile": "../docker-compose.yml",
            "service": "app",
            "workspaceFolder": "/workspaces/shop",
            "remoteUser": "www-data",
            "forwardPorts": [3000],
            "mounts": ["source=shop-cache,target=/cache,type=volume", "source=/var/run/docker.sock,target=/var/run/docker.sock,type=bind"],
            "initializeCommand": "echo runs on the host",
            "postCreateCommand": "id -un > /cache/setup-user",
          }`,
          'docker-compose.yml': COMPOSE,
        },
      })
    ).path;
    assert.equal((await t.cli(['project', 'create', 'shop', '--repo', bare])).code, 0);
    const r = await t.cli(['run', 'Say who runs', '--project', 'shop', '--agent', 'command', '--command', 'printf "%s %s %s %s\\n" "$(id -un)" "$HOME" "$PWD" "$FROM_COMPOSE" > who.txt && cat /cache/setup-user >> who.txt', '--json', '-d']);
    assert.equal(r.code, 0, `stdout: ${r.stdout}\nstderr: ${r.stderr}`);
    const id = JSON.parse(r.stdout).id as string;
    const done = await waitFor(`task ${id} to end`, async () => {
      const body = (await t.api('GET', `/api/orgs/default/tasks/${id}`)).body;
      return ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(body.state) ? body : null;
    }, 300_000);
    assert.equal(done.state, 'succeeded', done.stateReason);
    assert.equal(await runGit(['show', `${done.branch}:who.txt`], { cwd: bare }), 'www-data /var/www /workspaces/shop 1\nwww-data\n');

    const logs = (await t.cli(['task', 'logs', id])).stdout;
    assert.match(logs, /environment from devcontainer\.json: image default, 1 setup command\(s\), check none, commands run as www-data, volumes shop-cache at \/cache/);
    assert.match(logs, /! initializeCommand is refused: it runs on the host/);
    assert.match(logs, /! docker-compose\.yml: only service 'app' runs; 'db', 'redis' are not started/);
    assert.match(logs, /! mount \/var\/run\/docker\.sock → \/var\/run\/docker\.sock is refused/);
    const env = (await t.api('GET', `${ENVS}/${done.environmentId}`)).body;
    assert.equal(env.user, 'www-data');
    assert.deepEqual(env.forwardPorts, [3000]);
    assert.deepEqual(env.volumes, [{ name: 'shop-cache', target: '/cache' }]);
  });

  test('berth project show prints the resolved spec, each field with its source; --json too', async () => {
    const bare = (
      await createBareRepo({
        root,
        name: 'shown.git',
        files: {
          '.devcontainer/devcontainer.json': '{ "dockerComposeFile": "../docker-compose.yml", "service": "app", "remoteUser": "www-data", "forwardPorts": [8080], "initializeCommand": "x", "mounts": ["source=data,target=/data,type=volume"] }',
          'docker-compose.yml': COMPOSE.replace('    image: default\n', '    build: { context: ., dockerfile: docker/dev.Dockerfile }\n'),
        },
      })
    ).path;
    assert.equal((await t.cli(['project', 'create', 'shown', '--repo', bare, '--check', 'make test', '--cpus', '2'])).code, 0);
    let r = await t.cli(['project', 'show', 'shown']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Environment spec \(main at [0-9a-f]{12}, from the repository's devcontainer\.json\):/);
    assert.match(r.stdout, /^\s+image\s+built from docker\/dev\.Dockerfile\s+← docker-compose\.yml service app \(build docker\/dev\.Dockerfile\)$/m);
    assert.match(r.stdout, /^\s+user\s+www-data\s+← \.devcontainer\/devcontainer\.json \(remoteUser\)$/m);
    assert.match(r.stdout, /^\s+check\s+make test\s+← project setting$/m);
    assert.match(r.stdout, /^\s+limits\s+cpus=2\s+← project setting$/m);
    assert.match(r.stdout, /^\s+allowDomains\s+-\s+← Berth default$/m);
    assert.match(r.stdout, /^\s+forwardPorts\s+8080\s+← \.devcontainer\/devcontainer\.json$/m);
    assert.match(r.stdout, /^\s+volumes\s+data at \/data\s+← \.devcontainer\/devcontainer\.json$/m);
    assert.match(r.stdout, /Not honoured:\n[^]*'db', 'redis' are not started/);
    assert.match(r.stdout, /Not honoured:\n[^]*initializeCommand is refused: it runs on the host/);

    r = await t.cli(['project', 'show', 'shown', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const shown = JSON.parse(r.stdout);
    assert.equal(shown.name, 'shown');
    assert.equal(shown.environment.file, 'devcontainer.json');
    assert.equal(shown.environment.spec.user, 'www-data');
    assert.equal(shown.environment.sources.image, 'docker-compose.yml service app (build docker/dev.Dockerfile)');
    assert.equal(shown.environment.spec.build.dockerfile, 'docker/dev.Dockerfile');
    assert.equal(shown.environment.sources.setup, 'Berth default');

    const doc = (await (await fetch(`${t.client.url}/openapi.json`)).json()) as { paths: Record<string, { get?: { summary?: string } }> };
    assert.match(doc.paths['/api/orgs/{org}/projects/{name}/spec']?.get?.summary ?? '', /each field with where it came from/, 'documented');

    // A repository that cannot be read: the settings still show, with why the spec does not.
    await rm(bare, { recursive: true, force: true });
    r = await t.cli(['project', 'show', 'shown']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /check\s+make test/);
    assert.match(r.stdout, /The environment spec could not be resolved: /);
  });
});
