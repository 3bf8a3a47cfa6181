import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  evalKey,
  evalPrefix,
  meanPassAtK,
  passAtK,
  passAtKMetrics,
  summarizeResponses,
  trainKey,
  type ResponseRecord,
} from '../../ml/metrics';

/** Exact binomial with BigInt, for the closed form 1 − C(n−c, k)/C(n, k). */
function choose(n: number, k: number): bigint {
  if (k < 0 || k > n) return 0n;
  let r = 1n;
  for (let i = 1; i <= k; i++) r = (r * BigInt(n - k + i)) / BigInt(i);
  return r;
}
function closedForm(n: number, c: number, k: number): number {
  return 1 - Number((choose(n - c, k) * 10n ** 15n) / choose(n, k)) / 1e15;
}

test('pass@k: hand cases', () => {
  assert.ok(Math.abs(passAtK(5, 2, 2) - 0.7) < 1e-12); // 1 − C(3,2)/C(5,2) = 1 − 3/10
  assert.ok(Math.abs(passAtK(10, 3, 1) - 0.3) < 1e-12); // pass@1 = c/n
  assert.equal(passAtK(8, 0, 8), 0); // c = 0
  assert.equal(passAtK(8, 1, 8), 1); // n = k, one correct
  assert.equal(passAtK(8, 8, 3), 1); // c = n
  assert.equal(passAtK(4, 2, 3), 1); // n − c < k: every k-subset holds a correct one
  assert.ok(Math.abs(passAtK(20, 5, 4) - (1 - 1365 / 4845)) < 1e-12);
});

test('pass@k equals the closed form for every (c, k) at n = 16 and n = 64, and is monotone in k', () => {
  for (const n of [16, 64]) {
    for (let c = 0; c <= n; c++) {
      let prev = -1;
      for (let k = 1; k <= n; k++) {
        const p = passAtK(n, c, k);
        assert.ok(Math.abs(p - closedForm(n, c, k)) < 1e-12, `n ${n} c ${c} k ${k}: ${p} vs ${closedForm(n, c, k)}`);
        assert.ok(p >= prev - 1e-15);
        prev = p;
      }
    }
  }
  // large n stays finite (a naive C(1000, 500) would overflow)
  const big = passAtK(1000, 10, 500);
  assert.ok(Math.abs(big - closedForm(1000, 10, 500)) < 1e-12);
});

test('pass@k rejects bad arguments with the field named', () => {
  assert.throws(() => passAtK(4, 5, 1), /c must be/);
  assert.throws(() => passAtK(4, 1, 5), /k must be/);
  assert.throws(() => passAtK(0, 0, 1), /n must be/);
  assert.throws(() => passAtK(4, 1.5, 1), /c must be/);
  assert.throws(() => meanPassAtK([], 1), /no problems/);
});

test('mean pass@k over problems and eval keys carry the budget', () => {
  const problems = [
    { n: 8, c: 0 },
    { n: 8, c: 8 },
    { n: 8, c: 2 },
  ];
  assert.ok(Math.abs(meanPassAtK(problems, 1) - (0 + 1 + 0.25) / 3) < 1e-12);
  const m = passAtKMetrics(evalPrefix(512), problems, [1, 2, 8, 16]);
  assert.deepEqual(Object.keys(m), ['eval/b512/pass@1', 'eval/b512/pass@2', 'eval/b512/pass@8']); // 16 > n: left out
  assert.ok(Math.abs(m['eval/b512/pass@8'] - 2 / 3) < 1e-12);
  assert.equal(evalKey(1024, 'truncated_frac'), 'eval/b1024/truncated_frac');
  assert.equal(trainKey('reward_mean'), 'train/reward_mean');
});

test('summarizeResponses: flat record of the paper metrics on a hand case', () => {
  const rs: ResponseRecord[] = [
    { reward: 1, length: 10, truncated: false, attempts: 2, checks: 2, entropySum: 5, entropyTokens: 10 },
    { reward: 0, length: 30, truncated: true, attempts: 4, checks: 3, entropySum: 15, entropyTokens: 30 },
    { reward: 0, length: 20, truncated: false, attempts: 3, checks: 3, entropySum: 4, entropyTokens: 20 },
    { reward: 0, length: 12, truncated: false, attempts: 1, checks: 0, entropySum: 0, entropyTokens: 0 },
  ];
  const m = summarizeResponses('train', rs, 2);
  assert.deepEqual(m, {
    'train/responses': 4,
    'train/reward_mean': 0.25,
    'train/truncated_frac': 0.25,
    'train/response_len': 18,
    'train/response_len_correct': 10,
    'train/response_len_incorrect': 62 / 3,
    'train/attempts': 2.5,
    'train/checks': 2,
    'train/entropy': 24 / 60,
    'train/zero_std_frac': 0.5, // group 2 is all 0
  });
  // nothing correct: the correct-length key is left out, not NaN
  const none = summarizeResponses(evalPrefix(256), rs.slice(1));
  assert.equal('eval/b256/response_len_correct' in none, false);
  assert.equal(none['eval/b256/reward_mean'], 0);
  assert.equal('eval/b256/zero_std_frac' in none, false);
  assert.throws(() => summarizeResponses('train', rs, 3), /does not divide/);
});
