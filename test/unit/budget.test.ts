import { test } from 'node:test';
import assert from 'node:assert/strict';
import { selectBudget } from '../../ml/budget';

// A countdown-like curve: pass@1 rises fast, then saturates.
const curve = new Map([[256, 0.2], [512, 0.4], [1024, 0.45], [2048, 0.46]]);

test('Eq. 6.1 picks the smallest B >= B0 with J(2B) <= kappa J(B)', () => {
  // B=256: J(512)=0.40 > 1.2*0.20; B=512: J(1024)=0.45 <= 1.2*0.40 = 0.48
  const r = selectBudget(curve, { b0: 0 });
  assert.equal(r.budget, 512);
  assert.equal(r.fallback, 512);
  assert.match(r.reason, /J\(1024\)=0.45 <= 1.2\*J\(512\)/);
  // the array form is the same input
  assert.equal(selectBudget([...curve].map(([budget, passAt1]) => ({ budget, passAt1 })), { b0: 0 }).budget, 512);
  // a stricter kappa walks further up: 0.45 > 1.1*0.4 = 0.44; 0.46 <= 1.1*0.45
  assert.equal(selectBudget(curve, { b0: 0, kappa: 1.1 }).budget, 1024);
});

test('B0 filters the grid (B0 ~ the mean response length)', () => {
  assert.equal(selectBudget(curve, { b0: 300 }).budget, 512);
  assert.equal(selectBudget(curve, { b0: 513 }).budget, 1024); // 0.46 <= 1.2*0.45
  assert.equal(selectBudget(curve, { b0: 512 }).budget, 512); // B >= B0 is inclusive
});

test('no budget qualifies: null, a reason, and the largest measured budget >= B0 as fallback', () => {
  const rising = new Map([[256, 0.1], [512, 0.2], [1024, 0.4]]);
  const r = selectBudget(rising, { b0: 0 });
  assert.equal(r.budget, null);
  assert.equal(r.fallback, 1024);
  assert.match(r.reason, /no budget >= 0 qualifies: J\(512\)=0.2 > 1.2\*J\(256\)=0.12.*J\(1024\)=0.4 > 1.2\*J\(512\)/);
  // B0 leaves no B whose 2B was measured
  const high = selectBudget(curve, { b0: 1500 });
  assert.deepEqual([high.budget, high.fallback], [null, 2048]);
  assert.match(high.reason, /has its double measured/);
  // B0 above the whole grid: nothing to fall back on
  assert.deepEqual([selectBudget(curve, { b0: 3000 }).budget, selectBudget(curve, { b0: 3000 }).fallback], [null, null]);
  // a grid without doublings (300 has no 600)
  assert.equal(selectBudget(new Map([[300, 0.3], [512, 0.3], [1024, 0.3]]), { b0: 0 }).budget, 512);
});

test('J = 0 at B and 2B qualifies (doubling gains nothing) but the reason warns', () => {
  const r = selectBudget(new Map([[256, 0], [512, 0], [1024, 0.1]]), { b0: 0 });
  assert.equal(r.budget, 256);
  assert.match(r.reason, /too hard/);
});

test('bad input gets one clear error naming the field', () => {
  assert.throws(() => selectBudget(new Map([[0, 0.5]]), { b0: 0 }), /budget must be a finite number > 0 \(got 0\)/);
  assert.throws(() => selectBudget(new Map([[-256, 0.5]]), { b0: 0 }), /budget must be/);
  assert.throws(() => selectBudget([{ budget: NaN, passAt1: 0.5 }], { b0: 0 }), /budget must be/);
  assert.throws(() => selectBudget(new Map([[256, 1.2]]), { b0: 0 }), /passAt1 at budget 256 must be in \[0, 1\] \(got 1.2\)/);
  assert.throws(() => selectBudget(new Map([[256, -0.1]]), { b0: 0 }), /passAt1/);
  assert.throws(() => selectBudget([{ budget: 256, passAt1: NaN }], { b0: 0 }), /passAt1/);
  assert.throws(() => selectBudget([{ budget: 256, passAt1: 0.1 }, { budget: 256, passAt1: 0.2 }], { b0: 0 }), /appears twice/);
  assert.throws(() => selectBudget(new Map(), { b0: 0 }), /empty/);
  assert.throws(() => selectBudget(curve, { b0: 0, kappa: 0.9 }), /kappa/);
  assert.throws(() => selectBudget(curve, { b0: -1 }), /b0/);
});
