import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MUL3, MUL_MAX_DIGITS, generateMultiplication, multiplication } from '../../ml/multiplication';
import { encode } from '../../ml/tokenizer';

void test('multiplication: problems are pure, n-digit, exact', () => {
  assert.deepEqual(generateMultiplication(1, 7, MUL3), generateMultiplication(1, 7, MUL3));
  assert.notDeepEqual(generateMultiplication(1, 7, MUL3), generateMultiplication(1, 8, MUL3));
  for (let n = 1; n <= MUL_MAX_DIGITS; n++) {
    for (let i = 0; i < 20; i++) {
      const p = generateMultiplication(2, i, { ...MUL3, count: n });
      for (const x of p.numbers) assert.equal(String(x).length, n, p.id);
      assert.equal(BigInt(p.target), BigInt(p.numbers[0]) * BigInt(p.numbers[1]));
      encode(multiplication.prompt(p));
    }
  }
  assert.equal(generateMultiplication(1, 42, MUL3).id, 'mul3-000042');
  assert.throws(() => generateMultiplication(1, 0, { ...MUL3, count: 8 }), /digits/);
});

void test('multiplication: grading', () => {
  const p = { id: 't', numbers: [123, 456], target: 56088 };
  const cases: Array<[string, boolean, 0 | 1, string]> = [
    ['56088 ok;', false, 1, 'ok'],
    ['56078 no;56088 ok;', false, 1, 'ok'],
    ['56088 ok;', true, 0, 'truncated'],
    ['56078 ok;', false, 0, 'wrong-answer'],
    ['56088 no;', false, 0, 'no-ok'],
    ['56088 ok', false, 0, 'malformed'],
    ['56088ok;', false, 0, 'malformed'],
    ['', false, 0, 'empty'],
    ['9'.repeat(30) + ' ok;', false, 0, 'huge'],
  ];
  for (const [r, trunc, reward, reason] of cases) {
    const g = multiplication.verify(p, r, trunc);
    assert.deepEqual([g.reward, g.reason], [reward, reason], r);
  }
  const g = multiplication.verify(p, '56078 no;56088 ok;', false);
  assert.deepEqual([g.attempts, g.checks, g.answer, g.wellFormed], [2, 2, '56088', true]);
  assert.equal(multiplication.forced, undefined);
});
