import { test } from 'node:test';
import assert from 'node:assert/strict';
import { measuredBudgets, selectBudget } from '../../ml/budget';

// A countdown-like curve: pass@1 rises fast, then saturates.
const curve = new Map([
  [256, 0.2],
  [512, 0.4],
  [1024, 0.45],
  [2048, 0.46],
]);

test('Eq. 6.1 picks the smallest B >= B0 with J(2B) <= kappa J(B)', () => {
  // B=256: J(512)=0.40 > 1.2*0.20; B=512: J(1024)=0.45 <= 1.2*0.40 = 0.48
  const r = selectBudget(curve, { b0: 0 });
  assert.equal(r.budget, 512);
  assert.equal(r.fallback, 512);
  assert.match(r.reason, /J\(1024\)=0.45 <= 1.2\*J\(512\)/);
  // the array form is the same input
  assert.equal(
    selectBudget(
      [...curve].map(([budget, passAt1]) => ({ budget, passAt1 })),
      { b0: 0 },
    ).budget,
    512,
  );
  // a stricter kappa walks further up: 0.45 > 1.1*0.4 = 0.44; 0.46 <= 1.1*0.45
  assert.equal(selectBudget(curve, { b0: 0, kappa: 1.1 }).budget, 1024);
});

test('B0 filters the grid (B0 ~ the mean response length)', () => {
  assert.equal(selectBudget(curve, { b0: 300 }).budget, 512);
  assert.equal(selectBudget(curve, { b0: 513 }).budget, 1024); // 0.46 <= 1.2*0.45
  assert.equal(selectBudget(curve, { b0: 512 }).budget, 512); // B >= B0 is inclusive
});

test('no budget qualifies: null, a reason, and the largest measured budget >= B0 as fallback', () => {
  const rising = new Map([
    [256, 0.1],
    [512, 0.2],
    [1024, 0.4],
  ]);
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
  assert.equal(
    selectBudget(
      new Map([
        [300, 0.3],
        [512, 0.3],
        [1024, 0.3],
      ]),
      { b0: 0 },
    ).budget,
    512,
  );
});

test('J = 0 at B and 2B qualifies (doubling gains nothing) but the reason warns', () => {
  const r = selectBudget(
    new Map([
      [256, 0],
      [512, 0],
      [1024, 0.1],
    ]),
    { b0: 0 },
  );
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
  assert.throws(
    () =>
      selectBudget(
        [
          { budget: 256, passAt1: 0.1 },
          { budget: 256, passAt1: 0.2 },
        ],
        { b0: 0 },
      ),
    /appears twice/,
  );
  assert.throws(() => selectBudget(new Map(), { b0: 0 }), /empty/);
  assert.throws(() => selectBudget(curve, { b0: 0, kappa: 0.9 }), /kappa/);
  assert.throws(() => selectBudget(curve, { b0: -1 }), /b0/);
});

test('a select node measures every candidate and its double, the largest candidate included', () => {
  assert.deepEqual(measuredBudgets([32, 64, 128]), [32, 64, 128, 256]);
  assert.deepEqual(measuredBudgets([100, 150]), [100, 150, 200, 300]);
  assert.deepEqual(measuredBudgets([128]), [128, 256]);
});

test('candidates restrict B to the grid and each one reports J(B), J(2B) and their ratio (Fig. 9c)', () => {
  // The search base on 3-number problems (select split, 64 x 4): J rises to 256, then plateaus.
  const J = new Map([
    [32, 0.16],
    [64, 0.332],
    [128, 0.496],
    [256, 0.598],
    [512, 0.613],
  ]);
  const r = selectBudget(J, { b0: 0, candidates: [32, 64, 128, 256] });
  assert.equal(r.budget, 256); // 0.598 > 1.2 * 0.496 = 0.5952; 0.613 <= 1.2 * 0.598
  assert.deepEqual(
    r.candidates.map((c) => c.budget),
    [32, 64, 128, 256],
  );
  const c128 = r.candidates[2];
  assert.equal(c128.J2, 0.598);
  assert.ok(Math.abs(c128.ratio! - 0.598 / 0.496) < 1e-12);
  assert.equal(c128.qualifies, false);
  assert.equal(r.candidates[3].qualifies, true);
  // With the grid stopping at 128, no candidate qualifies: null, and the largest candidate as fallback.
  const capped = selectBudget(J, { b0: 0, candidates: [32, 64, 128] });
  assert.deepEqual([capped.budget, capped.fallback], [null, 128]);
  assert.match(capped.reason, /J\(256\)=0.598 > 1.2\*J\(128\)=0.5952/);
  // A non-candidate is never chosen even when it and its double were measured (64 is not a candidate).
  const sparse = selectBudget(
    new Map([
      [32, 0.1],
      [64, 0.3],
      [128, 0.31],
      [256, 0.32],
    ]),
    { b0: 0, candidates: [32, 128] },
  );
  assert.equal(sparse.budget, 128);
  // Below B0 a candidate never qualifies; a candidate whose double is missing has no ratio.
  const high = selectBudget(J, { b0: 300, candidates: [256, 512] });
  assert.deepEqual([high.budget, high.fallback], [null, 512]);
  assert.equal(high.candidates[0].qualifies, false);
  assert.deepEqual([high.candidates[1].J2, high.candidates[1].ratio], [null, null]);
  // J(B) = 0: no ratio, and it qualifies when J(2B) = 0 too.
  const zero = selectBudget(
    new Map([
      [16, 0],
      [32, 0],
    ]),
    { b0: 0, candidates: [16] },
  );
  assert.deepEqual([zero.budget, zero.candidates[0].ratio], [16, null]);
  assert.throws(() => selectBudget(J, { b0: 0, candidates: [48] }), /candidate budget 48 was not measured/);
});
