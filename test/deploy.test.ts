// What deploy/ ships is checked the way an operator would meet it: systemd reads the units,
// buildah builds the Containerfile and the image runs `berth --version`, the Kubernetes
// manifests parse and ask for what they should, and every `berth` flag any of them uses is
// one `berth … --help` lists.
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { REPO } from './helpers.ts';
import { freePort } from './oidc-provider.ts';
import { freshDatabase, ON_POSTGRES } from './postgres.ts';

const BERTH = join(REPO, 'bin', 'berth');
const INSTALLED = '/usr/local/bin/berth';
const VERSION = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
const read = (path: string) => readFileSync(join(REPO, path), 'utf8');
const has = (tool: string) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;

// ---- flags: every `berth …` the deploy files run must be one the CLI takes ----

/** Options `berth <path> --help` lists, or null when there is no such command. */
function helpFlags(path: string[]): Set<string> | null {
  const r = spawnSync(BERTH, [...path, '--help'], { encoding: 'utf8' });
  const usage = /^Usage: berth (.*?) \[options\]/m.exec(r.stdout)?.[1] ?? '';
  // An unknown subcommand prints its parent's help: check the usage line names this one.
  const named = usage.split(' ').map((word) => word.split('|')[0]);
  if (r.status !== 0 || named.join(' ') !== path.join(' ')) return null;
  const options = r.stdout.split(/^Options:$/m)[1]?.split(/^Commands:$/m)[0] ?? '';
  return new Set([...options.matchAll(/(?:^|[\s,])(--[a-z][a-z0-9-]*)/gm)].map((m) => m[1]!));
}
const GLOBAL_FLAGS = helpFlags([])!;

/**
 * Issue #14 names these and they are being built alongside deploy/: until they land a
 * missing one is a todo, not a failure. Once the CLI has the command, its flags must match.
 */
const PENDING: { path: string[]; flag?: string }[] = [
  { path: ['up'], flag: '--no-runner' },
  { path: ['runner', 'join'] },
  { path: ['runner', 'token', 'create'] },
  { path: ['runner', 'drain'] },
];

interface Usage {
  where: string;
  argv: string[];
}

/** The subcommand path and the flags of one argv (after `berth`); values and `${VAR}`s are skipped. */
function splitArgv(argv: string[]): { path: string[]; flags: string[] } {
  const path: string[] = [];
  const flags: string[] = [];
  for (const [i, arg] of argv.entries()) {
    if (arg.startsWith('--')) flags.push(arg.split('=')[0]!);
    else if (flags.length === 0 && /^[a-z][a-z-]*$/.test(arg) && (i === 0 || path.length === i)) path.push(arg);
  }
  return { path, flags };
}

function checkUsage(u: Usage): void {
  const { path, flags } = splitArgv(u.argv);
  const known = helpFlags(path);
  const pending = PENDING.filter((p) => p.path.join(' ') === path.join(' '));
  const missing = known === null ? flags : flags.filter((f) => !known.has(f) && !GLOBAL_FLAGS.has(f));
  const notYet = missing.filter((f) => pending.some((p) => !p.flag || p.flag === f));
  test(`${u.where}: berth ${path.join(' ')} ${flags.join(' ')}`, { todo: notYet.length ? `issue #14 is building ${known === null ? `berth ${path.join(' ')}` : notYet.join(', ')}` : false }, () => {
    assert.notEqual(known, null, `${u.where} runs \`berth ${path.join(' ')}\`, which the CLI does not have`);
    assert.deepEqual(missing, [], `${u.where} uses flags \`berth ${path.join(' ')} --help\` does not list`);
  });
}

/** `KEY=value` lines of a unit file, by section. */
function parseUnit(text: string): Map<string, [string, string][]> {
  const sections = new Map<string, [string, string][]>();
  let current: [string, string][] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const section = /^\[(\w+)\]$/.exec(line);
    if (section) sections.set(section[1]!, (current = []));
    else current.push([line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]);
  }
  return sections;
}
const unitValue = (unit: Map<string, [string, string][]>, section: string, key: string) => unit.get(section)?.filter(([k]) => k === key).map(([, v]) => v) ?? [];

const UNITS = ['berth.service', 'berth-control-plane.service', 'berth-runner.service'];

describe('systemd units', () => {
  const analyze = has('systemd-analyze');
  for (const name of UNITS) {
    test(`${name}: systemd-analyze verify reads it without a complaint`, { skip: !analyze && 'systemd-analyze is missing (Debian package systemd; scripts/setup.sh --deps --test installs it)' }, () => {
      const dir = mkdtempSync(join(tmpdir(), 'berth-deploy-units-'));
      try {
        let text = read(`deploy/systemd/${name}`);
        // verify checks that ExecStart's program exists: a checkout without setup.sh's link uses its own.
        if (!existsSync(INSTALLED)) text = text.replaceAll(INSTALLED, BERTH);
        writeFileSync(join(dir, name), text);
        const r = spawnSync('systemd-analyze', ['verify', '--man=no', join(dir, name)], { encoding: 'utf8' });
        // verify exits 0 on unknown keys and bad values ("…, ignoring"): any output is a finding.
        const findings = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.includes(name));
        assert.deepEqual(findings, []);
        assert.equal(r.status, 0, r.stderr);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  test('runner units leave environments running and give crun the cgroup controllers', () => {
    for (const name of ['berth.service', 'berth-runner.service']) {
      const unit = parseUnit(read(`deploy/systemd/${name}`));
      assert.deepEqual(unitValue(unit, 'Service', 'KillMode'), ['process'], name);
      assert.deepEqual(unitValue(unit, 'Service', 'Delegate'), ['yes'], name);
      assert.deepEqual(unitValue(unit, 'Service', 'OOMPolicy'), ['continue'], name);
      assert.deepEqual(unitValue(unit, 'Service', 'User'), ['root'], name);
      // Each of these would make a private mount namespace or pass a restriction to every environment.
      for (const key of ['ProtectSystem', 'ProtectHome', 'PrivateTmp', 'PrivateDevices', 'PrivateNetwork', 'SystemCallFilter', 'RestrictNamespaces', 'NoNewPrivileges', 'CapabilityBoundingSet', 'RestrictSUIDSGID', 'ReadWritePaths']) {
        assert.deepEqual(unitValue(unit, 'Service', key), [], `${name} must not set ${key}`);
      }
    }
  });

  test('the control-plane unit runs without a runner, unprivileged and locked down', { skip: !has('systemd-analyze') && 'systemd-analyze is missing' }, () => {
    const unit = parseUnit(read('deploy/systemd/berth-control-plane.service'));
    assert.match(unitValue(unit, 'Service', 'ExecStart')[0]!, / up --no-runner /);
    assert.deepEqual(unitValue(unit, 'Service', 'DynamicUser'), ['yes']);
    // The runner's token comes from its environment file, never the command line (ps shows that).
    assert.doesNotMatch(unitValue(parseUnit(read('deploy/systemd/berth-runner.service')), 'Service', 'ExecStart')[0]!, /--token|TOKEN/);
    assert.deepEqual(unitValue(unit, 'Service', 'EnvironmentFile'), ['/etc/berth/control-plane.env']);
    // systemd's own score of the sandboxing (0 best, 10 worst); "OK" is below 4.
    const r = spawnSync('systemd-analyze', ['security', '--offline=true', join(REPO, 'deploy/systemd/berth-control-plane.service')], { encoding: 'utf8' });
    const score = Number(/Overall exposure level for \S+: ([\d.]+)/.exec(r.stdout)?.[1]);
    assert.ok(score <= 2, `exposure ${score}: ${r.stdout.slice(-300)}`);
  });

  describe('ExecStart flags', () => {
    for (const name of UNITS) {
      const unit = parseUnit(read(`deploy/systemd/${name}`));
      const [program, ...argv] = unitValue(unit, 'Service', 'ExecStart')[0]!.split(/\s+/);
      test(`${name}: ExecStart runs the installed berth`, () => assert.equal(program, INSTALLED));
      checkUsage({ where: name, argv: argv.map((a) => a.replace('%H', 'HOST')) });
    }
    // The extra flags runner.env.example shows for $BERTH_RUNNER_ARGS.
    const example = /^#?BERTH_RUNNER_ARGS=(.+)$/m.exec(read('deploy/systemd/runner.env.example'))![1]!;
    checkUsage({ where: 'runner.env.example', argv: ['runner', 'join', 'URL', ...example.split(/\s+/)] });
  });
});

// ---- Kubernetes ----

interface K8sObject {
  kind: string;
  metadata: { name: string };
  spec: any;
}
function manifests(file: string): K8sObject[] {
  const docs = parseAllDocuments(read(`deploy/k8s/${file}`));
  for (const d of docs) assert.deepEqual(d.errors, [], `${file} is not valid YAML`);
  return docs.map((d) => d.toJS() as K8sObject);
}

describe('Kubernetes manifests', () => {
  const controlPlane = manifests('control-plane.yaml');
  const runner = manifests('runner.yaml');
  const deployment = controlPlane.find((o) => o.kind === 'Deployment')!;
  const daemonSet = runner.find((o) => o.kind === 'DaemonSet')!;

  test('control plane: a Deployment of 2 behind a Service, configured from a ConfigMap and a Secret', () => {
    assert.deepEqual(controlPlane.map((o) => o.kind).sort(), ['ConfigMap', 'Deployment', 'PodDisruptionBudget', 'Service']);
    assert.equal(deployment.spec.replicas, 2);
    const pod = deployment.spec.template.spec;
    const [container] = pod.containers;
    assert.equal(container.image, `registry.example.com/berth/control-plane:${VERSION}`);
    assert.deepEqual(container.envFrom, [{ configMapRef: { name: 'berth-control-plane' } }, { secretRef: { name: 'berth-control-plane' } }]);
    assert.deepEqual(container.readinessProbe.httpGet, { path: '/readyz', port: 'http' });
    assert.deepEqual(container.livenessProbe.httpGet, { path: '/healthz', port: 'http' });
    assert.equal(container.ports[0].containerPort, 7070);
    // The user the image's control-plane target runs as, and nothing it could gain.
    assert.equal(pod.securityContext.runAsNonRoot, true);
    assert.equal(pod.securityContext.runAsUser, 10001);
    assert.equal(container.securityContext.allowPrivilegeEscalation, false);
    assert.deepEqual(container.securityContext.capabilities.drop, ['ALL']);
    const service = controlPlane.find((o) => o.kind === 'Service')!;
    assert.deepEqual(service.spec.selector, deployment.spec.selector.matchLabels);
    assert.equal(service.spec.ports[0].targetPort, 'http');
  });

  test('runner: a privileged DaemonSet with its data dir on the node', () => {
    assert.deepEqual(runner.map((o) => o.kind), ['DaemonSet']);
    const pod = daemonSet.spec.template.spec;
    const [container] = pod.containers;
    assert.equal(container.image, `registry.example.com/berth/runner:${VERSION}`);
    assert.equal(container.securityContext.privileged, true);
    assert.equal(pod.hostNetwork, false);
    const data = pod.volumes.find((v: any) => v.name === 'data');
    assert.equal(data.hostPath.path, '/var/lib/berth-runner');
    assert.equal(container.volumeMounts.find((m: any) => m.name === 'data').mountPath, '/var/lib/berth');
    assert.equal(container.resources.limits, undefined, 'a pod limit would cap every environment on the node together');
    // The token comes from a Secret, never written into the manifest.
    assert.ok(container.env.some((e: any) => e.name === 'BERTH_RUNNER_TOKEN' && e.valueFrom.secretKeyRef.name === 'berth-runner'));
    assert.ok(!container.args.some((a: string) => a.includes('TOKEN') || a === '--token'), 'the token stays out of the process list');
  });

  test('every object is commented with why where it asks for a privilege', () => {
    const text = read('deploy/k8s/runner.yaml');
    for (const key of ['privileged: true', 'hostNetwork: false', 'hostPID: false', 'hostPath:', '/sys/fs/cgroup']) {
      const at = text.indexOf(key);
      assert.ok(at >= 0, key);
      const before = text.slice(0, at).split('\n').slice(-4, -1).join('\n');
      assert.match(before, /#/, `a comment above or near ${key}`);
    }
  });

  describe('container args', () => {
    checkUsage({ where: 'control-plane.yaml', argv: deployment.spec.template.spec.containers[0].args });
    checkUsage({ where: 'runner.yaml', argv: daemonSet.spec.template.spec.containers[0].args });
  });
});

// ---- the OCI image ----

const CONTAINERFILE = read('deploy/Containerfile');

describe('Containerfile', () => {
  test('the runner image installs what scripts/setup.sh installs on a runner host', () => {
    const setup = /^packages=\((.*)\)$/m.exec(read('scripts/setup.sh'))![1]!.split(/\s+/);
    const image = /apt-get install [^\n]*\\\n\s*(.*?) \\?\n/.exec(CONTAINERFILE)![1]!.split(/\s+/);
    assert.deepEqual(setup.filter((p) => !image.includes(p)), []);
  });

  describe('CMD flags', () => {
    for (const [, json] of CONTAINERFILE.matchAll(/^CMD (\[.*\])$/gm)) checkUsage({ where: 'Containerfile CMD', argv: JSON.parse(json!) as string[] });
  });

  const buildah = has('buildah');
  test('buildah builds the control-plane image offline; it runs berth --version and serves berth up --no-runner', { skip: !buildah && 'buildah is missing (scripts/setup.sh --deps installs it)', timeout: 300_000 }, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'berth-deploy-image-'));
    const b = new Buildah(dir);
    try {
      const started = Date.now();
      const base = await b.assembleBase();
      t.diagnostic(`base assembled in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      const npmCache = process.env.npm_config_cache ?? join(homedir(), '.npm');
      await b.run([
        'build', '--signature-policy', b.policy, '--isolation', 'chroot',
        // RUN steps reach npm (as CI does) for what the cache below does not hold.
        '--network', 'host',
        '-f', join(REPO, 'deploy/Containerfile'), '--target', 'control-plane',
        '--build-arg', `BASE=${base}`, '--build-arg', 'NPM_CONFIG_PREFER_OFFLINE=true',
        // The host's npm cache, as an overlay: read from, never written to.
        ...(existsSync(npmCache) ? ['-v', `${npmCache}:/root/.npm:O`] : []),
        '-t', 'localhost/berth-deploy-test:control-plane', REPO,
      ]);
      t.diagnostic(`image built in ${((Date.now() - started) / 1000).toFixed(1)} s (with the base)`);
      const config = JSON.parse(await b.run(['inspect', '--type', 'image', 'localhost/berth-deploy-test:control-plane'])) as { OCIv1: { config: { User: string; Entrypoint: string[]; Cmd: string[] } } };
      assert.equal(config.OCIv1.config.User, '10001:10001');
      assert.deepEqual(config.OCIv1.config.Entrypoint, ['/usr/local/bin/berth']);
      assert.ok(config.OCIv1.config.Cmd.includes('--no-runner'));
      const container = (await b.run(['from', '--signature-policy', b.policy, '--pull-never', 'localhost/berth-deploy-test:control-plane'])).trim();
      // As the image's own user, through its entrypoint's path.
      const version = await b.run(['run', '--isolation', 'chroot', container, '--', '/usr/local/bin/berth', '--version']);
      assert.equal(version.trim(), VERSION);
      const whoami = await b.run(['run', '--isolation', 'chroot', container, '--', '/usr/local/bin/node', '-p', 'process.getuid()']);
      assert.equal(whoami.trim(), '10001');

      // The image's command, on this run's database: production packages only must be enough to
      // serve. A script in the container starts it, probes it as a load balancer would, stops it.
      const database = ON_POSTGRES ? await freshDatabase() : undefined;
      try {
        const port = await freePort();
        const probe = `
          const { spawn } = require('node:child_process');
          const up = spawn('/usr/local/bin/berth', ['up', '--no-runner', '--host', '127.0.0.1', '--port', '${port}'], { stdio: ['ignore', 'ignore', 'pipe'] });
          let log = ''; up.stderr.on('data', (d) => (log += d));
          const get = async (path) => { const r = await fetch('http://127.0.0.1:${port}' + path); return { status: r.status, body: await r.text() }; };
          (async () => {
            for (let i = 0; i < 900; i++) {
              try {
                const out = { healthz: await get('/healthz'), readyz: await get('/readyz'), web: await get('/') };
                up.kill('SIGTERM');
                const code = await new Promise((r) => up.on('exit', r));
                console.log(JSON.stringify({ ...out, code, log }));
                return;
              } catch { await new Promise((r) => setTimeout(r, 100)); }
            }
            up.kill('SIGKILL'); console.log(JSON.stringify({ log })); process.exit(1);
          })();`;
        const env = database ? ['--env', `DATABASE_URL=${database.url}`] : [];
        const out = JSON.parse(await b.run(['run', '--isolation', 'chroot', ...env, container, '--', '/usr/local/bin/node', '-e', probe])) as Record<string, any>;
        assert.equal(out.healthz.status, 200, out.log);
        assert.equal(JSON.parse(out.healthz.body).version, VERSION);
        // No runner has joined yet: ready all the same (runners join through it), and it says there are none.
        assert.equal(out.readyz.status, 200, out.readyz.body);
        assert.deepEqual(JSON.parse(out.readyz.body), { status: 'ready', runnersOnline: 0 });
        assert.match(out.web.body, /<div id="root"/, 'the web UI is built into the image');
        assert.equal(out.code, 0, 'stops cleanly on SIGTERM');
        assert.match(out.log, new RegExp(`${database ? 'postgres' : 'pglite'} database, no local runner`));
      } finally {
        await database?.drop();
      }
    } finally {
      // Containers first (they hold mounts in the storage), then the storage as plain files.
      await b.run(['rm', '--all']).catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * buildah on storage of its own in a temp dir (nothing of the host's /var/lib/containers is
 * read or left behind), reading only the configuration written here.
 */
class Buildah {
  readonly policy: string;
  readonly #dir: string;
  readonly #env: NodeJS.ProcessEnv;

  constructor(dir: string) {
    this.#dir = dir;
    this.policy = join(dir, 'policy.json');
    writeFileSync(this.policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
    writeFileSync(join(dir, 'registries.conf'), 'unqualified-search-registries = []\nshort-name-mode = "disabled"\n');
    // chroot isolation: RUN steps need no OCI runtime and no cgroups (this host may have neither in a form crun takes).
    writeFileSync(join(dir, 'containers.conf'), '[containers]\ncgroups = "disabled"\n[engine]\ncgroup_manager = "cgroupfs"\n');
    mkdirSync(join(dir, 'tmp'));
    this.#env = { PATH: process.env.PATH, HOME: dir, TMPDIR: join(dir, 'tmp'), CONTAINERS_CONF: join(dir, 'containers.conf'), CONTAINERS_REGISTRIES_CONF: join(dir, 'registries.conf'), BUILDAH_ISOLATION: 'chroot' };
  }

  run(args: string[]): Promise<string> {
    const global = ['--root', join(this.#dir, 'storage'), '--runroot', join(this.#dir, 'run'), '--storage-driver', 'overlay'];
    return new Promise((resolve, reject) => {
      execFile('buildah', [...global, ...args], { env: this.#env, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`buildah ${args[0]} failed: ${err.message}\n${stderr.slice(-4000)}\n${stdout.slice(-4000)}`));
        else resolve(stdout);
      });
    });
  }

  /**
   * What the Containerfile's BASE must be (Debian's layout with Node.js 24 and npm in
   * /usr/local, as docker.io/library/node:24-bookworm-slim has), made from this host's own
   * files, since no image registry is reachable: glibc, a shell and the few tools the RUN
   * steps use, Node.js from setup.sh's /opt/berth/node (or node on PATH) and npm.
   */
  async assembleBase(): Promise<string> {
    const name = 'localhost/berth-deploy-test:base';
    const container = (await this.run(['from', '--signature-policy', this.policy, 'scratch'])).trim();
    const root = (await this.run(['mount', container])).trim();
    for (const d of ['usr/bin', 'usr/lib/x86_64-linux-gnu', 'usr/lib64', 'usr/local/bin', 'usr/local/lib/node_modules', 'etc', 'root']) mkdirSync(join(root, d), { recursive: true });
    mkdirSync(join(root, 'tmp'), { mode: 0o1777 });
    for (const [link, target] of [['bin', 'usr/bin'], ['lib', 'usr/lib'], ['lib64', 'usr/lib64'], ['sbin', 'usr/bin'], ['usr/sbin', 'bin']]) symlinkSync(target!, join(root, link!));
    const tools = ['sh', 'ln', 'mkdir', 'chown', 'chmod', 'rm', 'readlink', 'env', 'cat'].map((t) => spawnSync('sh', ['-c', `command -v ${t}`], { encoding: 'utf8' }).stdout.trim());
    for (const tool of tools) copyFileSync(tool, join(root, 'usr/bin', tool.split('/').pop()!));
    // The C and C++ runtimes (rolldown's native part needs librt, node libstdc++), and what the tools link.
    const libs = spawnSync('sh', ['-c', 'dpkg -L libc6 libstdc++6 libgcc-s1 | grep -E "^(/usr)?/lib/x86_64-linux-gnu/[^/]+\\.so[.0-9]*$"'], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
    const linked = spawnSync('ldd', tools, { encoding: 'utf8' }).stdout.match(/=> (\/\S+)/g)?.map((m) => m.slice(3)) ?? [];
    for (const lib of new Set([...libs, ...linked])) if (existsSync(lib) && statSync(lib).isFile()) copyFileSync(lib, join(root, 'usr/lib/x86_64-linux-gnu', lib.split('/').pop()!));
    copyFileSync('/lib64/ld-linux-x86-64.so.2', join(root, 'usr/lib64/ld-linux-x86-64.so.2'));
    const node = spawnSync('sh', ['-c', 'command -v node'], { encoding: 'utf8', env: { PATH: `/opt/berth/node/bin:${process.env.PATH}` } }).stdout.trim();
    copyFileSync(node, join(root, 'usr/local/bin/node'));
    // npm as published (its dependencies bundled), the version this host runs, from the npm cache or registry.
    const npmVersion = spawnSync('npm', ['--version'], { encoding: 'utf8' }).stdout.trim();
    const packed = spawnSync('npm', ['pack', '--silent', '--prefer-offline', `npm@${npmVersion}`], { cwd: this.#dir, encoding: 'utf8' });
    assert.equal(packed.status, 0, `npm pack npm@${npmVersion}: ${packed.stderr}`);
    mkdirSync(join(root, 'usr/local/lib/node_modules/npm'));
    const untar = spawnSync('tar', ['xzf', join(this.#dir, packed.stdout.trim()), '--strip-components=1', '-C', join(root, 'usr/local/lib/node_modules/npm')]);
    assert.equal(untar.status, 0, 'unpacking npm');
    symlinkSync('../lib/node_modules/npm/bin/npm-cli.js', join(root, 'usr/local/bin/npm'));
    writeFileSync(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    writeFileSync(join(root, 'etc/group'), 'root:x:0:\n');
    await this.run(['config', '--env', 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', container]);
    await this.run(['unmount', container]);
    await this.run(['commit', '--signature-policy', this.policy, '-q', container, name]);
    await this.run(['rm', container]);
    return name;
  }
}
