// sandbox: none (test/fakes/fake-runner.ts; scripts/test.ts runs these more at once)
// `berth campaign …` (issue #17): a campaign made from a list with comments, blanks and bad
// lines (reported, not fatal), followed to its end, listed, shown, steered, exported and its
// diffs read in bulk, over local bare repositories with a command agent.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createBareRepos, runGit } from './fakes/git-server.ts';
import { startTestBerth, waitFor, type TestBerth } from './helpers.ts';

let t: TestBerth;
let root: string;
const repos: string[] = [];

const campaign = async (name: string) => (await t.api('GET', `/api/orgs/default/campaigns/${name}`)).body as { state: string; counts: Record<string, number>; total: number };
const over = (name: string) => waitFor(`campaign ${name} to end`, async () => ((await campaign(name)).state === 'done' ? campaign(name) : undefined), 45_000);
const json = (s: string) => JSON.parse(s) as never;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'berth-cli-campaigns-'));
  t = await startTestBerth({ fake: true });
  repos.push(...(await createBareRepos({ root, names: ['alpha.git', 'beta.git', 'gamma.git'], files: { 'a.txt': 'a\n' } })));
});
after(async () => {
  await t?.destroy();
  await rm(root, { recursive: true, force: true });
});

describe('berth campaign', () => {
  test('create from a file: good lines taken, a comment and a blank skipped, bad lines reported with exit 0; then show, list, targets, export, diff', async () => {
    const list = join(root, 'repos.txt');
    await writeFile(list, ['# the shop services', repos[0], '', repos[1], 'not a repository', `${repos[2]}   # trailing comment`, repos[0], ''].join('\n'));
    const made = await t.cli(['campaign', 'create', '--name', 'add-line', '--goal', 'add a line to a.txt', '--repos', list, '--agent', 'command', '--command', 'echo x >> a.txt', '--concurrency', '2']);
    assert.equal(made.code, 0, made.stderr);
    const [id, summary] = made.stdout.split('\n');
    assert.match(id!, /^cmp_/);
    assert.match(summary!, /^add-line: 3 repositories taken, branch berth\/campaign\/add-line/);
    assert.match(made.stderr, /warning: 2 lines left out/);
    assert.match(made.stderr, /line 5: not a repository — not a repository URL/);
    assert.match(made.stderr, /line 7: .*alpha\.git — the same repository as line 2/);
    assert.match(made.stderr, /berth campaign show add-line -f/);

    await over('add-line');
    const shown = json((await t.cli(['campaign', 'show', 'add-line', '--json'])).stdout) as { id: string; state: string; total: number; counts: Record<string, number>; changeRequests: { repo: string }[]; failures: unknown[] };
    assert.equal(shown.id, id);
    assert.equal(shown.state, 'done');
    assert.equal(shown.total, 3);
    assert.deepEqual(shown.counts, { pending: 0, starting: 0, running: 0, succeeded: 3, failed: 0, cancelled: 0 });
    assert.equal(shown.changeRequests.length, 3);
    assert.deepEqual(shown.failures, []);

    const text = await t.cli(['campaign', 'show', 'add-line']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^state\s+done/m);
    assert.match(text.stdout, /^repos\s+3\/3 done: 3 succeeded$/m);
    assert.match(text.stdout, /^peak\s+[12] running at once \(concurrency 2\)$/m);
    assert.match(text.stdout, /CHANGES \(3\)\nREPO\s+STATE\s+CHECKS\s+REVIEW\s+URL/);

    // -f through a pipe on an ended campaign: its line and its changes, once, then it returns.
    const followed = await t.cli(['campaign', 'show', 'add-line', '-f']);
    assert.equal(followed.code, 0, followed.stderr);
    assert.match(followed.stdout, /done 3\/3 done: 3 succeeded/);
    assert.equal(followed.stdout.match(/ change /g)?.length, 3);

    const listed = await t.cli(['campaign', 'list']);
    assert.match(listed.stdout, /^NAME\s+STATE\s+DONE\s+FAILED\s+RUNNING\s+CREATED$/m);
    assert.match(listed.stdout, /^add-line\s+done\s+3\/3\s+0\s+0\s+\d+s ago$/m);
    assert.deepEqual((json((await t.cli(['campaign', 'list', '--json'])).stdout) as { name: string }[]).map((c) => c.name), ['add-line']);

    const succeeded = json((await t.cli(['campaign', 'targets', 'add-line', '--state', 'succeeded', '--json'])).stdout) as { repo: string; taskId: string }[];
    assert.deepEqual(succeeded.map((x) => x.repo), repos);
    assert.ok(succeeded.every((x) => x.taskId));
    assert.deepEqual(json((await t.cli(['campaign', 'targets', 'add-line', '--state', 'failed', '--json'])).stdout), []);
    const badState = await t.cli(['campaign', 'targets', 'add-line', '--state', 'sideways']);
    assert.equal(badState.code, 2);
    assert.match(badState.stderr, /--state/);

    const csv = await t.cli(['campaign', 'export', 'add-line', '--format', 'csv']);
    assert.equal(csv.code, 0, csv.stderr);
    const rows = csv.stdout.trim().split('\n');
    assert.match(rows[0]!, /^repo,project,state,attempts,task,/);
    assert.equal(rows.length, 4);
    for (const r of repos) assert.ok(rows.some((row) => row.startsWith(`${r},,succeeded,1,task_`)), r);
    const file = join(root, 'export.json');
    const toFile = await t.cli(['campaign', 'export', 'add-line', '--format', 'json', '-o', file]);
    assert.equal(toFile.code, 0, toFile.stderr);
    assert.match(toFile.stderr, /wrote 3 repositories to /);
    const exported = JSON.parse(await readFile(file, 'utf8')) as { campaign: { name: string }; targets: { repo: string }[] };
    assert.equal(exported.campaign.name, 'add-line');
    assert.deepEqual(exported.targets.map((x) => x.repo), repos);

    const diffs = await t.cli(['campaign', 'diff', 'add-line']);
    assert.equal(diffs.code, 0, diffs.stderr);
    assert.equal(diffs.stdout.match(/^### /gm)?.length, 3);
    for (const r of repos) assert.match(diffs.stdout, new RegExp(`^### ${r} \\(task task_`, 'm'));
    assert.equal(diffs.stdout.match(/^\+x$/gm)?.length, 3);
    const beta = json((await t.cli(['campaign', 'diff', 'add-line', '--repo', 'beta', '--json'])).stdout) as { repo: string; diff: string }[];
    assert.deepEqual(beta.map((d) => d.repo), [repos[1]]);
    assert.match(beta[0]!.diff, /^\+x$/m);
    const none = await t.cli(['campaign', 'diff', 'add-line', '--repo', 'delta']);
    assert.equal(none.code, 3);

    // No --check ran: only green ones (--only-green, the default) are none of them; --all merges each branch.
    const green = json((await t.cli(['campaign', 'approve', 'add-line', '--only-green', '--json'])).stdout) as { approved: unknown[]; skipped: { repo: string; reason: string }[] };
    assert.deepEqual(green.approved, []);
    assert.deepEqual(green.skipped.map((s) => s.repo), repos);
    assert.match(green.skipped[0]!.reason, /not green/);
    assert.deepEqual((json((await t.cli(['campaign', 'approve', 'add-line', '--json'])).stdout) as { approved: unknown[] }).approved, []);
    const approved = await t.cli(['campaign', 'approve', 'add-line', '--all']);
    assert.equal(approved.code, 0, approved.stderr);
    for (const r of repos) assert.match(approved.stdout, new RegExp(`^${r}\\s+merged$`, 'm'));
    assert.match(approved.stderr, /3 approved, 0 skipped/);
    for (const r of repos) assert.equal(await runGit(['--git-dir', r, 'show', 'main:a.txt']), 'a\nx\n');
  });

  test('pause and resume, from a list on standard input; cancel and retry-failed', async () => {
    // Its tasks wait for a file of the test's (the fake runner runs them on this host): nothing ends before the pause.
    const gate = join(root, 'go');
    const made = await t.cli(['campaign', 'create', '--name', 'steer', '--goal', 'add a line', '--repos', '-', '--concurrency', '1', '--command', `while [ ! -f ${gate} ]; do sleep 0.2; done; echo y >> a.txt`, '--json'], { input: `# two, one at a time\n${repos[0]}\n${repos[1]}\n` });
    assert.equal(made.code, 0, made.stderr);
    const body = json(made.stdout) as { campaign: { name: string; total: number; settings: { agent: string; concurrency: number } }; invalid: unknown[] };
    assert.equal(body.campaign.total, 2);
    assert.equal(body.campaign.settings.agent, 'command');
    assert.equal(body.campaign.settings.concurrency, 1);
    assert.deepEqual(body.invalid, []);

    const paused = await t.cli(['campaign', 'pause', 'steer']);
    assert.equal(paused.code, 0, paused.stderr);
    assert.match(paused.stdout, /^steer paused: paused, 0\/2 done/);
    const again = await t.cli(['campaign', 'pause', 'steer']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /campaign 'steer' is paused: only a running one can be paused/);
    // The task under way finishes; the other does not start while it is paused.
    await writeFile(gate, '');
    const held = await waitFor('the first repository to finish', async () => {
      const c = await campaign('steer');
      return c.counts.succeeded === 1 ? c : undefined;
    });
    assert.equal(held.state, 'paused');
    assert.equal(held.counts.pending, 1);

    const resumed = json((await t.cli(['campaign', 'resume', 'steer', '--json'])).stdout) as { state: string };
    assert.equal(resumed.state, 'running');
    assert.equal((await over('steer')).counts.succeeded, 2);

    const retry = await t.cli(['campaign', 'retry-failed', 'steer']);
    assert.equal(retry.code, 1);
    assert.match(retry.stderr, /has no failed repository to retry/);
    const cancelled = json((await t.cli(['campaign', 'cancel', 'steer', '--json'])).stdout) as { state: string };
    assert.equal(cancelled.state, 'cancelled');
  });

  test('errors name the flag to fix', async () => {
    const base = ['campaign', 'create', '--name', 'bad', '--goal', 'g'];
    const cases: [string[], number, RegExp][] = [
      [['campaign', 'create', '--name', 'bad', '--repos', 'x'], 2, /--goal/],
      [['campaign', 'create', '--goal', 'g', '--repos', 'x'], 2, /--name/],
      [base, 2, /say which repositories: --repos FILE .*, --repo URL .* or --org-query/],
      [[...base, '--repos', join(root, 'missing.txt')], 2, /--repos .*missing\.txt: no such file/],
      [[...base, '--repo', repos[0]!, '--forge-rate', 'fast'], 2, /--forge-rate.*1\/s, 30\/m or 100\/h/],
      [[...base, '--repo', repos[0]!, '--concurrency', 'lots'], 2, /--concurrency/],
      [[...base, '--repo', repos[0]!, '--agent', 'command'], 2, /--agent command needs --command/],
      [['campaign', 'create', '--name', 'Bad Name', '--goal', 'g', '--repo', repos[0]!], 2, /--name/],
      [['campaign', 'show', 'no-such-campaign'], 3, /no campaign 'no-such-campaign'/],
    ];
    for (const [args, code, message] of cases) {
      const r = await t.cli(args);
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message, args.join(' '));
    }
    // A list with no usable line: refused, nothing made.
    const empty = join(root, 'bad.txt');
    await writeFile(empty, 'not a repository\n');
    const refused = await t.cli([...base, '--repos', empty]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /no repository of the list can be used: line 1:/);
    assert.equal((await t.api('GET', '/api/orgs/default/campaigns/bad')).status, 404);
  });
});
