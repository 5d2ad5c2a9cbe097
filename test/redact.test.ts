// Redaction of secret values from output, whole and streamed in chunks split anywhere.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { detectSecrets, MIN_ENCODED_LENGTH, Redactor, type RedactSecret } from '../src/shared/redact.ts';

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

describe('the encodings redaction and detection know', () => {
  const KEY: RedactSecret = { name: 'API_KEY', value: 'sk-live-4f9a8b7c/6d5e+4f3a2b1c' };
  const bytes = Buffer.from(KEY.value);
  const redactor = new Redactor([KEY]);
  const base64 = bytes.toString('base64');
  /** A base64 stream with the value `offset` bytes into a 3-byte group, between other bytes. */
  const within = (before: string, after: string) => Buffer.from(`${before}${KEY.value}${after}`).toString('base64');
  const wrap = (s: string, width: number, eol = '\n') => s.replace(new RegExp(`.{${width}}`, 'g'), `$&${eol}`);
  const colour = (s: string) => [...s].map((c, i) => `\x1b[3${i % 8}m${c}`).join('') + '\x1b[0m';

  const FORMS: Record<string, string> = {
    'the value': KEY.value,
    'upper case': KEY.value.toUpperCase(),
    'mixed case': [...KEY.value].map((c, i) => (i % 2 ? c.toUpperCase() : c)).join(''),
    reversed: [...KEY.value].reverse().join(''),
    hex: bytes.toString('hex'),
    'upper-case hex': bytes.toString('hex').toUpperCase(),
    'hex wrapped at 60 (xxd -p)': wrap(bytes.toString('hex'), 60),
    base64,
    'base64 unpadded': base64.replace(/=+$/, ''),
    'base64, URL-safe': bytes.toString('base64url'),
    'base64 of the value and a newline (echo | base64)': Buffer.from(`${KEY.value}\n`).toString('base64'),
    'base64 at offset 1': within('x', 'tail'),
    'base64 at offset 2': within('user:', 'and more'),
    'base64 at offset 0, after 3 bytes': within('abc', '!'),
    'URL-safe base64 at offset 2': Buffer.from(`ab${KEY.value}`).toString('base64url'),
    'base64 wrapped at 76 (base64)': wrap(Buffer.from(`${'x'.repeat(50)}${KEY.value}${'y'.repeat(60)}`).toString('base64'), 76),
    'base64 wrapped at 64 with CRLF (PEM, MIME)': wrap(Buffer.from(`${'x'.repeat(41)}${KEY.value}${'y'.repeat(60)}`).toString('base64'), 64, '\r\n'),
    'ANSI colours between the characters': colour(KEY.value),
    'an OSC hyperlink around it': `\x1b]8;;https://example.com/\x07${KEY.value}\x1b]8;;\x07`,
    'URL-encoded': encodeURIComponent(KEY.value),
    'URL-encoded, lower-case hex': encodeURIComponent(KEY.value).toLowerCase(),
    'every byte percent-encoded': [...bytes].map((b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join(''),
    'every character \\u-escaped': [...KEY.value].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join(''),
  };

  for (const [form, text] of Object.entries(FORMS)) {
    test(`${form}: redacted, whole and in two chunks split anywhere, and detected`, () => {
      const line = `before ${text} after\n`;
      const out = redactor.redact(line);
      assert.match(out, /^before .*\[secret:API_KEY\].* after\n$/s, JSON.stringify(out));
      assert.ok(!out.includes(text), JSON.stringify(out));
      for (let i = 1; i < line.length; i++) assert.equal(streamed(redactor, [line.slice(0, i), line.slice(i)]).out, out, `split at ${i}`);
      assert.deepEqual(redactor.detect(line), ['API_KEY']);
      assert.deepEqual(redactor.detect(Buffer.from(line)), ['API_KEY']);
    });
  }

  test('what only a few bits of the value show through is all that is left of a base64 stream', () => {
    // The characters at the edges mix the value's bits with its neighbours'.
    const stream = within('user:', 'and more');
    const out = redactor.redact(stream);
    const left = out.replace('[secret:API_KEY]', '');
    assert.equal(out.length - left.length, '[secret:API_KEY]'.length);
    // 38 characters carry the value's 29 bytes; two at its edges also carry neighbours' bits.
    assert.ok(stream.length - left.length >= Math.floor((bytes.length * 8) / 6) - 2, out);
  });

  test('JSON escaping, of a value with quotes, backslashes, newlines and non-ASCII', () => {
    const r = new Redactor([{ name: 'PEM', value: '-----BEGIN KEY-----\nMIIBOgIBAAJ"BAK\\dé😀\n-----END KEY-----' }]);
    const value = '-----BEGIN KEY-----\nMIIBOgIBAAJ"BAK\\dé😀\n-----END KEY-----';
    for (const text of [JSON.stringify({ key: value }), `{"key": ${JSON.stringify(value).replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)}}`, value.replace(/\n/g, '\r\n')]) {
      const out = r.redact(text);
      assert.ok(out.includes('[secret:PEM]') && !out.includes('MIIBOgIBAAJ'), `${text} → ${out}`);
    }
  });

  test('short values are found only as themselves and their plain encodings', () => {
    const r = new Redactor([{ name: 'PIN', value: 'Test' }, { name: 'SEVEN', value: 'abc1234' }]);
    assert.equal(r.redact('Test VGVzdA== abc1234 YWJjMTIzNA'), '[secret:PIN] [secret:PIN] [secret:SEVEN] [secret:SEVEN]');
    // Other case, reversed, hex: common by chance in short strings, so left alone.
    const ordinary = 'TEST test tseT 54657374 4321cba ABC1234 6162633132333334';
    assert.equal(r.redact(ordinary), ordinary);
    assert.deepEqual(r.detect(ordinary), []);
    assert.equal(MIN_ENCODED_LENGTH, 8);
  });

  test('escapes and line breaks outside a secret are kept as they were', () => {
    const text = '\x1b[1;31mERROR\x1b[0m: build failed\r\n\x1b]0;title\x07done\n';
    assert.equal(redactor.redact(text), text);
    assert.equal(redactor.redact(`\x1b[32m${KEY.value}\x1b[0m\n`), '\x1b[32m[secret:API_KEY]\x1b[0m\n');
    assert.equal(streamed(redactor, [...text]).out, text);
  });

  test('an ordinary line is not held back; a line of base64 waits for the next', () => {
    const s = redactor.stream();
    assert.equal(s.push('tests: 42 passed\n'), 'tests: 42 passed\n');
    assert.equal(s.push('deadbeef\n'), 'deadbeef\n', 'a short line of hex ends where it ends');
    const first = base64.slice(0, 20);
    const held = s.push(`${'QUJD'.repeat(4)}${first}\n`);
    assert.equal(held, 'QUJD'.repeat(4), 'the start of the base64 form is held with its line break');
    assert.equal(s.push(`${base64.slice(20)}\n`) + s.flush(), '[secret:API_KEY]\n');
  });

  test('a stream never holds more than a bounded tail, even of unseen escapes', () => {
    const s = redactor.stream();
    const pushed = s.push(`${KEY.value.slice(0, 6)}${'\x1b[0m'.repeat(200)}`);
    assert.ok(pushed.startsWith(KEY.value.slice(0, 6)), 'a run of escapes longer than a gap ends the chance of a match');
    const partial = s.push('x \x1b[3');
    assert.ok(!partial.includes('\x1b[3'), 'an escape sequence cut off at the end waits for its end');
    assert.equal(s.push('1mok') + s.flush(), '\x1b[31mok');
  });

  test('detect: names found, first seen first, once each; never a label that was already in the text', () => {
    const r = new Redactor([KEY, { name: 'DB_PASSWORD', value: 'hunter2hunter2' }]);
    assert.deepEqual(r.detect(`x ${bytes.toString('hex')} y ${Buffer.from('hunter2hunter2').toString('base64')} ${KEY.value}`), ['API_KEY', 'DB_PASSWORD']);
    assert.deepEqual(r.detect('[secret:API_KEY] already redacted, nothing here'), []);
    assert.deepEqual(detectSecrets(Buffer.from(`..${[...KEY.value].reverse().join('')}..`), [KEY]), ['API_KEY']);
    assert.deepEqual(detectSecrets('anything', []), []);
  });

  test('detect on a large buffer finds a value across the pieces it is read in', () => {
    for (const at of [(1 << 20) - 5, (1 << 20) - 1, 1 << 20, 3 * (1 << 20) - 17]) {
      const buf = Buffer.alloc(4 * (1 << 20), 'a');
      const hex = Buffer.from(bytes.toString('hex'));
      hex.copy(buf, at);
      assert.deepEqual(redactor.detect(buf), ['API_KEY'], `at ${at}`);
    }
    assert.deepEqual(redactor.detect(Buffer.alloc(3 << 20, 'a')), []);
  });

  test('detector: a value split across pushes, found once', () => {
    const d = redactor.detector();
    const text = `a ${base64} b ${KEY.value.toUpperCase()}`;
    for (const c of text) d.push(c);
    assert.deepEqual(d.end(), ['API_KEY']);
  });

  test('redactValue: every string in a structure, keys too, whatever JSON would escape', () => {
    const r = new Redactor([{ name: 'Q', value: 'quote"and\\slash' }]);
    const v = { a: ['x quote"and\\slash y', 3, null, { 'quote"and\\slash': true }], b: 'none' };
    assert.deepEqual(r.redactValue(v), { a: ['x [secret:Q] y', 3, null, { '[secret:Q]': true }], b: 'none' });
    assert.equal(r.redactValue(7), 7);
    assert.deepEqual(r.redactValue({ at: new Date(0), err: Object.assign(new Error('x'), { detail: 'quote"and\\slash' }) }), { at: '1970-01-01T00:00:00.000Z', err: { detail: '[secret:Q]' } });
  });

  test('property: any split of text with encodings, escapes and line breaks gives redact(text)', () => {
    const secrets: RedactSecret[] = [
      { name: 'A', value: 'abab' },
      { name: 'L', value: 'Long-Secret/Value+42' },
      { name: 'M', value: 'ab€😀cdefgh' },
      { name: 'N', value: 'babbabba' },
    ];
    const r = new Redactor(secrets);
    const pieces = ['a', 'b', 'A', 'B', ' ', '\n', '\r\n', '\x1b[31m', '\x1b[0m', '\x1b]8;;x\x07', '\x1b', '€', '😀', '=', 'QUJD'.repeat(4)];
    for (const { value } of secrets) {
      const b = Buffer.from(value);
      pieces.push(value, value.toUpperCase(), [...value].reverse().join(''), b.toString('hex'), b.toString('base64'), Buffer.from(`x${value}`).toString('base64'));
      pieces.push(encodeURIComponent(value), colour(value), wrap(Buffer.from(`${'z'.repeat(20)}${value}`).toString('base64'), 16));
    }
    for (let seed = 1; seed <= 300; seed++) {
      const random = prng(seed);
      const pick = <T>(list: T[]): T => list[Math.floor(random() * list.length)]!;
      const text = Array.from({ length: 1 + Math.floor(random() * 20) }, () => pick(pieces)).join('');
      const expected = r.redact(text);
      const whole: Buffer | string = random() < 0.5 ? Buffer.from(text) : text;
      const chunks: (Buffer | string)[] = [];
      for (let at = 0; at < whole.length; ) {
        const size = random() < 0.3 ? 1 : 1 + Math.floor(random() * 12);
        chunks.push(whole.slice(at, at + size));
        at += size;
      }
      const { out } = streamed(r, chunks);
      assert.equal(out, expected, `seed ${seed}: ${JSON.stringify(text)} in ${chunks.length} chunks`);
      for (const { value } of secrets) assert.ok(!out.includes(value), `seed ${seed}: ${value} leaked in ${JSON.stringify(out)}`);
      const d = r.detector();
      for (const c of chunks) d.push(c);
      assert.deepEqual(d.end().sort(), r.detect(text).sort(), `seed ${seed}: detection over chunks`);
    }
  });
});
