// How a task learns to work on a repository: berth.yaml, devcontainer.json, project settings.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fromBerthYaml, fromDevContainer, mergeSpec } from '../src/server/tasks/index.ts';
import { slugOf } from '../src/server/tasks/change-text.ts';

test('devcontainer.json: comments, trailing commas, every lifecycle command form, in order', () => {
  const spec = fromDevContainer(`{
    // a comment
    "name": "web",
    "image": "mcr.example/node:22",
    "containerEnv": { "A": "1" },
    "remoteEnv": { "B": "2", "GONE": null },
    "onCreateCommand": "npm ci",
    "updateContentCommand": ["npm", "run", "build it"],
    "postCreateCommand": { "db": "echo db", "seed": ["echo", "it's seeded"] },
    "postStartCommand": "echo started",
    "hostRequirements": { "cpus": 2, "memory": "4gb" },
    "customizations": { "vscode": {} },
  }`);
  assert.equal(spec.image, 'mcr.example/node:22');
  assert.deepEqual(spec.env, { A: '1', B: '2' });
  assert.deepEqual(spec.setup, ['npm ci', "'npm' 'run' 'build it'", 'echo db', `'echo' 'it'\\''s seeded'`, 'echo started']);
  assert.deepEqual(spec.limits, { cpus: 2, memory: '4gb' });
  assert.deepEqual(spec.notes, []);
});

test('devcontainer.json: what Berth cannot honour is noted, not dropped in silence', () => {
  const spec = fromDevContainer('{ "build": { "dockerfile": "Dockerfile", "args": { "V": "1" } }, "features": { "./go": {} }, "runArgs": ["--privileged"], "somethingNew": 1 }');
  assert.equal(spec.image, null);
  // The Dockerfile and features are built (devcontainer-build.test.ts), so they are no note.
  assert.deepEqual(spec.build, { configDir: '.devcontainer', dockerfile: 'Dockerfile', context: undefined, args: { V: '1' }, target: undefined, image: undefined, features: { './go': {} }, overrideFeatureInstallOrder: undefined, remoteUser: undefined, containerUser: undefined });
  assert.equal(spec.notes.length, 2);
  assert.match(spec.notes.join('\n'), /sandbox decides[\s\S]*not used by Berth: somethingNew/);
  assert.throws(() => fromDevContainer('{ "build": { "context": ".." } }'), /build has no dockerfile/);
  assert.throws(() => fromDevContainer('{ "image": "x", "build": { "dockerfile": "D" } }'), /both an image and a Dockerfile/);
});

test('malformed files are clear errors that name the file', () => {
  assert.throws(() => fromDevContainer('{ "image": '), /devcontainer\.json: .* at offset/);
  assert.throws(() => fromDevContainer('{ "image": 3 }'), /devcontainer\.json: image/);
  assert.throws(() => fromDevContainer('{ "containerEnv": { "NOT OK": "x" } }'), /'NOT OK' is not valid/);
  assert.throws(() => fromBerthYaml('check: [unclosed'), /berth\.yaml: /);
  assert.throws(() => fromBerthYaml('checks: npm test'), /berth\.yaml: .*checks/);
  assert.throws(() => fromBerthYaml('limits: { memory: lots }'), /berth\.yaml: limits\.memory: like 4gb/);
  assert.throws(() => fromBerthYaml('env: { "1BAD": x }'), /berth\.yaml: env/);
});

test('berth.yaml, then the project settings on top', () => {
  const repo = fromBerthYaml('image: default\nenv: { A: "1", B: "2" }\nsetup: npm ci\ncheck: npm test\nallowDomains: [registry.npmjs.org]\n');
  assert.deepEqual(repo.setup, ['npm ci']);
  const merged = mergeSpec(repo, { env: { B: 'project' }, check: 'npm run ci', allowDomains: ['github.com'], limits: { cpus: 4 } });
  assert.deepEqual(merged.env, { A: '1', B: 'project' });
  assert.equal(merged.check, 'npm run ci');
  assert.deepEqual(merged.setup, ['npm ci']);
  assert.deepEqual(merged.allowDomains, ['registry.npmjs.org', 'github.com']);
  assert.equal(merged.limits.cpus, 4);
  assert.equal(merged.source, 'berth.yaml');
  assert.deepEqual(mergeSpec(null, {}).setup, []);
  assert.equal(mergeSpec(null, {}).source, 'project');
});

test('branch slugs are short, lower-case and never empty', () => {
  assert.equal(slugOf('Fix the Sum function, please!'), 'fix-the-sum-function-please');
  assert.equal(slugOf('日本語だけ'), 'change');
  assert.ok(slugOf('a'.repeat(100)).length <= 40);
  assert.ok(!slugOf(`${'word '.repeat(20)}`).endsWith('-'));
});
