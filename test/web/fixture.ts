// What the web UI's end-to-end tests work against: a real berth (real runner, real
// environments) with a project on a real git remote, the scripted model over the OpenAI
// protocol, whose one script makes a task that fixes a failing test, and a real browser.
import assert from 'node:assert/strict';
import { createBareRepo, startGitServer, type GitServer } from '../fakes/git-server.ts';
import { startModelServer, type ModelServer, type ScriptRequest, type Step } from '../fakes/model-server.ts';
import { startTestBerth, type TestBerth } from '../helpers.ts';
import { ensureWebBuilt, launchBrowser, type BrowserName, type TestBrowser } from './browser.ts';

const MODEL_KEY = 'sk-model-key-never-inside-0123456789';
const FORGE_TOKEN = 'forge-token-never-inside-9876543210';
const FIXTURE = {
  'package.json': '{ "name": "fixture", "type": "module", "scripts": { "test": "node --test" } }\n',
  'sum.js': 'export function sum(a, b) {\n  return a - b;\n}\n',
  'sum.test.js': "import { test } from 'node:test';\nimport assert from 'node:assert/strict';\nimport { sum } from './sum.js';\n\ntest('sum adds', () => assert.equal(sum(2, 3), 5));\n",
  'berth.yaml': 'check: node --test\n',
};

/**
 * The model tries the network first (the environment's egress proxy refuses it: no policy
 * allows anything), then reads the failure, fixes sum.js and finishes (as in test/tasks.test.ts).
 * One task's worth: a second task finds no steps left, and fails.
 */
const SCRIPT: Step[] = [
  { text: 'Is the network reachable from here?', toolCalls: [{ name: 'run_command', args: { command: 'curl -sS -m 10 https://example.com/' } }] },
  { text: 'Let me run the tests first.', toolCalls: [{ name: 'run_command', args: { command: 'node --test' } }] },
  (_req: ScriptRequest) => ({ toolCalls: [{ name: 'read_file', args: { path: 'sum.js' } }] }),
  { toolCalls: [{ name: 'edit_file', args: { path: 'sum.js', old_text: 'return a - b;', new_text: 'return a + b;' } }] },
  { toolCalls: [{ name: 'run_command', args: { command: 'node --test' } }] },
  { toolCalls: [{ name: 'finish', args: { summary: 'sum() subtracted its arguments; it now adds them, and the test passes.' } }] },
];

/** The goal the script answers, and the project it works on. */
export const GOAL = 'Fix the sum function so the tests pass';
export const PROJECT = 'fixture';

export interface WebFixture {
  t: TestBerth;
  b: TestBrowser;
  close(): Promise<void>;
}

export async function startWebFixture(browser: BrowserName): Promise<WebFixture> {
  ensureWebBuilt();
  const model: ModelServer = await startModelServer(SCRIPT, { apiKey: MODEL_KEY });
  let git: GitServer | undefined;
  let t: TestBerth | undefined;
  let b: TestBrowser | undefined;
  const close = async () => {
    await b?.close();
    await t?.destroy();
    await model.close();
    await git?.close();
  };
  try {
    git = await startGitServer({ authorize: `Basic ${Buffer.from(`git:${FORGE_TOKEN}`).toString('base64')}` });
    await createBareRepo({ root: git.root, name: 'acme/fixture.git', files: FIXTURE });
    t = await startTestBerth({ modelEnv: { OPENAI_BASE_URL: model.url, OPENAI_API_KEY: MODEL_KEY, BERTH_MODEL: 'gpt-4o-mini' } });
    assert.equal((await t.api('PUT', '/api/orgs/default/secrets/GIT_TOKEN', { value: FORGE_TOKEN })).status, 200);
    const project = await t.api('POST', '/api/orgs/default/projects', { name: PROJECT, repoUrl: `${git.url}/acme/fixture.git`, forge: { kind: 'git', tokenSecret: 'GIT_TOKEN' } });
    assert.equal(project.status, 201, JSON.stringify(project.body));
    b = await launchBrowser(t.client.url, browser);
    return { t, b, close };
  } catch (err) {
    await close();
    throw err;
  }
}
