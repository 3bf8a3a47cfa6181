import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, deriveSeed } from '../../ml/rng';

test('deriveSeed is a pure function of the coordinates', () => {
  assert.equal(deriveSeed(7, 'sample', 1, 2, 3), deriveSeed(7, 'sample', 1, 2, 3));
  assert.notEqual(deriveSeed(7, 'sample', 1, 2, 3), deriveSeed(7, 'sample', 1, 2, 4));
  assert.notEqual(deriveSeed(7, 'sample', 12, 3), deriveSeed(7, 'sample', 1, 23));
});

test('Rng repeats for a seed, differs across seeds, and is roughly uniform', () => {
  const a = new Rng(42),
    b = new Rng(42),
    c = new Rng(43);
  const xa = Array.from({ length: 5 }, () => a.next());
  assert.deepEqual(
    xa,
    Array.from({ length: 5 }, () => b.next()),
  );
  assert.notDeepEqual(
    xa,
    Array.from({ length: 5 }, () => c.next()),
  );
  const r = new Rng(1);
  const n = 100000;
  let sum = 0;
  const bins = new Array(10).fill(0);
  for (let i = 0; i < n; i++) {
    const x = r.next();
    assert.ok(x >= 0 && x < 1);
    sum += x;
    bins[Math.floor(x * 10)]++;
  }
  // mean of U(0,1) has sd 0.289/sqrt(n) ~ 0.0009: 5 sd tolerance
  assert.ok(Math.abs(sum / n - 0.5) < 0.005, `mean ${sum / n}`);
  for (const b of bins) assert.ok(Math.abs(b - n / 10) < 600, `bin ${b}`);
});
