// Redaction of secret values from output, whole and streamed in chunks split anywhere.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Redactor, type RedactSecret } from '../src/shared/redact.ts';

const TOKEN: RedactSecret = { name: 'TOKEN', value: 'ghp_s3cr3t/Value+=x' };

/** Everything a stream emits for `chunks`, with what each push returned. */
function streamed(redactor: Redactor, chunks: (Buffer | string)[]): { out: string; pushes: string[] } {
  const stream = redactor.stream();
  const pushes = chunks.map((chunk) => stream.push(chunk));
  return { out: pushes.join('') + stream.flush(), pushes };
}

/** Seeded, so a failing case can be replayed from the seed in the message. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('Redactor.redact', () => {
  const redactor = new Redactor([TOKEN, { name: 'DB_PASSWORD', value: 'hunter22' }]);

  test('replaces every occurrence of every secret', () => {
    assert.equal(
      redactor.redact(`token=${TOKEN.value} pw=hunter22 again hunter22${TOKEN.value}`),
      'token=[secret:TOKEN] pw=[secret:DB_PASSWORD] again [secret:DB_PASSWORD][secret:TOKEN]',
    );
    assert.equal(redactor.redact(''), '');
    assert.equal(redactor.redact('nothing to see'), 'nothing to see');
  });

  test('treats values literally, not as patterns', () => {
    const r = new Redactor([{ name: 'RE', value: '.*(a|b)$' }]);
    assert.equal(r.redact('abc .*(a|b)$ xyz'), 'abc [secret:RE] xyz');
  });

  test('catches the base64 and URL-encoded forms', () => {
    const base64 = Buffer.from(TOKEN.value).toString('base64');
    assert.match(base64, /=$/, 'the test needs a padded form');
    assert.equal(redactor.redact(`echo -n | base64: ${base64}`), 'echo -n | base64: [secret:TOKEN]');
    assert.equal(redactor.redact(`unpadded ${base64.replace(/=+$/, '')}.`), 'unpadded [secret:TOKEN].');
    const url = encodeURIComponent(TOKEN.value);
    assert.notEqual(url, TOKEN.value);
    assert.equal(redactor.redact(`GET /cb?t=${url}&x=1`), 'GET /cb?t=[secret:TOKEN]&x=1');
    assert.equal(redactor.redact(Buffer.from('hunter22').toString('base64')), '[secret:DB_PASSWORD]');
  });

  test('ignores empty and short values, which would destroy output', () => {
    const r = new Redactor([
      { name: 'EMPTY', value: '' },
      { name: 'A', value: 'a' },
      { name: 'ABC', value: 'abc' },
      { name: 'ABCD', value: 'abcd' },
    ]);
    assert.equal(r.redact('a cab abc abcd'), 'a cab abc [secret:ABCD]');
    const none = new Redactor([{ name: 'EMPTY', value: '' }]);
    assert.equal(none.redact('anything'), 'anything');
    assert.equal(streamed(none, ['any', 'thing']).pushes.join(''), 'anything');
  });

  test('a secret that contains another wins over it', () => {
    const r = new Redactor([
      { name: 'INNER', value: 'pass' },
      { name: 'OUTER', value: 'my-password' },
      { name: 'PREFIXED', value: 'password123' },
    ]);
    assert.equal(r.redact('x my-password y'), 'x [secret:OUTER] y');
    assert.equal(r.redact('x password123 y'), 'x [secret:PREFIXED] y');
    assert.equal(r.redact('x pass y'), 'x [secret:INNER] y');
  });

  test('overlapping secrets are redacted together, leaving no fragment of either', () => {
    const r = new Redactor([
      { name: 'LEFT', value: 'abcdef' },
      { name: 'RIGHT', value: 'defghi' },
    ]);
    assert.equal(r.redact('<abcdefghi>'), '<[secret:LEFT]>');
    assert.equal(r.redact('<abcdef defghi>'), '<[secret:LEFT] [secret:RIGHT]>');
    const self = new Redactor([{ name: 'AS', value: 'aaaa' }]);
    assert.equal(self.redact('aaa aaaaaaaaaa aaaa'), 'aaa [secret:AS] [secret:AS]');
  });
});

describe('Redactor.stream', () => {
  const redactor = new Redactor([TOKEN, { name: 'DB_PASSWORD', value: 'hunter22' }]);

  test('a secret split across two chunks', () => {
    assert.equal(streamed(redactor, ['pw=hunt', 'er22 ok']).out, 'pw=[secret:DB_PASSWORD] ok');
    assert.equal(streamed(redactor, [Buffer.from('pw=hunt'), Buffer.from('er22 ok')]).out, 'pw=[secret:DB_PASSWORD] ok');
  });

  test('a secret split into single characters, and bytes', () => {
    const text = `a ${TOKEN.value} b`;
    assert.equal(streamed(redactor, [...text]).out, 'a [secret:TOKEN] b');
    const bytes = [...Buffer.from(text)].map((byte) => Buffer.from([byte]));
    assert.equal(streamed(redactor, bytes).out, 'a [secret:TOKEN] b');
  });

  test('a multi-byte character split across Buffers, inside and outside a secret', () => {
    const r = new Redactor([{ name: 'KEY', value: 'clé-€-😀' }]);
    const text = Buffer.from('→ clé-€-😀 ←');
    for (let i = 1; i < text.length; i++) {
      for (let j = i + 1; j < text.length; j++) {
        const { out } = streamed(r, [text.subarray(0, i), text.subarray(i, j), text.subarray(j)]);
        assert.equal(out, '→ [secret:KEY] ←', `split at ${i}, ${j}`);
      }
    }
    // Never a replacement character: the decoder holds a partial character, not the redactor.
    const s = r.stream();
    const euro = Buffer.from('€');
    assert.equal(s.push(euro.subarray(0, 1)), '');
    assert.equal(s.push(euro.subarray(1)), '€');
  });

  test('base64 and URL-encoded forms split across chunks', () => {
    for (const form of [Buffer.from(TOKEN.value).toString('base64'), encodeURIComponent(TOKEN.value)]) {
      const mid = form.length >> 1;
      assert.equal(streamed(redactor, [`[${form.slice(0, mid)}`, `${form.slice(mid)}]`]).out, '[[secret:TOKEN]]');
    }
  });

  test('output without secrets is not delayed', () => {
    const s = redactor.stream();
    assert.equal(s.push('build ok\n'), 'build ok\n');
    assert.equal(s.push(Buffer.from('tests: 42 passed\n')), 'tests: 42 passed\n');
    assert.equal(s.flush(), '');
    assert.equal(new Redactor([]).stream().push('anything at all'), 'anything at all');
  });

  test('holds back only a tail that could start a secret', () => {
    const s = redactor.stream();
    assert.equal(s.push('user hunt'), 'user ');
    assert.equal(s.push('ers.'), 'hunters.');
    assert.equal(s.push(' with hunter2'), ' with ');
    assert.equal(s.push('2!'), '[secret:DB_PASSWORD]!');
    assert.equal(s.push('hunter2'), '');
    assert.equal(s.flush(), 'hunter2');
  });

  test('a shorter secret at the end waits for a longer one it may be the start of', () => {
    const r = new Redactor([
      { name: 'SHORT', value: 'pass' },
      { name: 'LONG', value: 'password' },
    ]);
    const s = r.stream();
    assert.equal(s.push('x pass'), 'x ');
    assert.equal(s.push('word y'), '[secret:LONG] y');
    assert.equal(streamed(r, ['x pass', ' y']).out, 'x [secret:SHORT] y');
  });

  test('overlapping secrets across chunks, and a self-overlapping run held no longer than a secret', () => {
    const r = new Redactor([
      { name: 'LEFT', value: 'abcdef' },
      { name: 'RIGHT', value: 'defghi' },
    ]);
    assert.equal(streamed(r, ['<abcdef', 'ghi>']).out, '<[secret:LEFT]>');
    assert.equal(streamed(r, [...'<abcdefghi>']).out, '<[secret:LEFT]>');

    const self = new Redactor([{ name: 'AS', value: 'aaaa' }]);
    const s = self.stream();
    const pushes = [...'x'.concat('a'.repeat(1000), 'y')].map((c) => s.push(c));
    assert.equal(pushes.slice(0, 5).join(''), 'x[secret:AS]', 'the label is out as soon as the first match is');
    assert.equal(pushes.slice(5).join('') + s.flush(), 'y');
  });

  test('property: any split of any text gives redact(text)', () => {
    const secrets: RedactSecret[] = [
      { name: 'A', value: 'abab' },
      { name: 'B', value: 'babba' },
      { name: 'C', value: 'ab€b' },
      { name: 'D', value: 'b😀ab' },
      { name: 'E', value: 'aaaa' },
      { name: 'F', value: 'ab/b+a=' },
      { name: 'G', value: 'ba' },
    ];
    const r = new Redactor(secrets);
    const pieces = ['a', 'b', 'a', 'b', ' ', '€', '😀', '/', '+', '=', ...secrets.map((s) => s.value)];
    pieces.push(...secrets.flatMap((s) => [Buffer.from(s.value).toString('base64'), encodeURIComponent(s.value)]));
    for (let seed = 1; seed <= 400; seed++) {
      const random = prng(seed);
      const pick = <T>(list: T[]): T => list[Math.floor(random() * list.length)]!;
      const text = Array.from({ length: 1 + Math.floor(random() * 30) }, () => pick(pieces)).join('');
      const expected = r.redact(text);
      // Split the bytes, so multi-byte characters are cut too, or the string, by UTF-16 unit.
      const whole: Buffer | string = random() < 0.5 ? Buffer.from(text) : text;
      const chunks: (Buffer | string)[] = [];
      for (let at = 0; at < whole.length; ) {
        const size = random() < 0.3 ? 1 : 1 + Math.floor(random() * 12);
        chunks.push(whole.slice(at, at + size));
        at += size;
      }
      const { out } = streamed(r, chunks);
      assert.equal(out, expected, `seed ${seed}: ${JSON.stringify(text)} in ${chunks.length} chunks`);
      for (const { value } of secrets.filter((s) => s.value.length >= 4)) {
        assert.ok(!out.includes(value), `seed ${seed}: ${value} leaked in ${JSON.stringify(out)}`);
      }
    }
  });
});
