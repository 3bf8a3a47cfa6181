/**
 * The paired bootstrap (ml/bootstrap.ts) against independent references: the exact bootstrap
 * distribution of a small sample (all n^n resamples enumerated in float64) and, for a large
 * sample, the normal approximation mean ± 1.96 sd / sqrt(n).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bootstrapMean, gainOverBase, quantile } from '../../ml/bootstrap';
import { Rng } from '../../ml/rng';

test('interval matches the exact bootstrap distribution of a 4-problem sample (all 256 resamples)', () => {
  const d = [0, 0.25, 0.5, 1];
  const n = d.length;
  const means: number[] = [];
  for (let code = 0; code < n ** n; code++) {
    let s = 0;
    for (let k = 0, c = code; k < n; k++, c = Math.floor(c / n)) s += d[c % n];
    means.push(s / n);
  }
  means.sort((a, b) => a - b);
  // The exact distribution is discrete: its q-quantile is the atom where the CDF crosses q.
  const atom = (q: number) => means[Math.ceil(q * means.length) - 1];
  const cdf = [...new Set(means)].map((v) => means.filter((m) => m <= v).length / means.length);
  const cdfGap = (q: number) => Math.min(...cdf.map((f) => Math.abs(f - q)));
  for (const q of [0.025, 0.975]) assert.ok(cdfGap(q) > 0.004, `q=${q} is not near a CDF step, so Monte Carlo settles on one atom`);
  const r = bootstrapMean(d, { seed: 11, resamples: 200_000 });
  assert.equal(r.mean, 0.4375);
  assert.equal(r.lo, atom(0.025));
  assert.equal(r.hi, atom(0.975));
});

test('large sample: close to the normal approximation (tolerance 0.004 on each end)', () => {
  const rng = new Rng(5);
  const d = Array.from({ length: 400 }, () => (rng.next() < 0.3 ? 1 : 0) - (rng.next() < 0.2 ? 1 : 0));
  const mean = d.reduce((a, b) => a + b, 0) / d.length;
  const sd = Math.sqrt(d.reduce((a, b) => a + (b - mean) ** 2, 0) / d.length);
  const r = bootstrapMean(d, { seed: 3, resamples: 20_000 });
  assert.ok(Math.abs(r.lo - (mean - (1.96 * sd) / Math.sqrt(d.length))) < 0.004, `lo ${r.lo}`);
  assert.ok(Math.abs(r.hi - (mean + (1.96 * sd) / Math.sqrt(d.length))) < 0.004, `hi ${r.hi}`);
});

test('deterministic in its seed; type-7 quantiles; bad input named', () => {
  const d = [0.1, 0.4, 0.2, 0.9, 0.5];
  assert.deepEqual(bootstrapMean(d, { seed: 1 }), bootstrapMean(d, { seed: 1 }));
  assert.notDeepEqual(bootstrapMean(d, { seed: 1 }), bootstrapMean(d, { seed: 2 }));
  assert.equal(quantile([1, 2, 3, 4], 0.5), 2.5);
  assert.equal(quantile([1, 2, 3, 4], 0), 1);
  assert.equal(quantile([1, 2, 3, 4], 1), 4);
  assert.throws(() => bootstrapMean([], { seed: 1 }), /no problems/);
  assert.throws(() => bootstrapMean([NaN], { seed: 1 }), /not finite/);
  assert.throws(() => bootstrapMean([1], { seed: 1, level: 1 }), /level/);
  assert.throws(() => bootstrapMean([1], { seed: 1, resamples: 1 }), /resamples/);
});

test('gain over the base is paired: a per-problem shift is a zero-width interval; 2x and 4x are compared with 1x', () => {
  const base = new Map([
    [128, [0, 0.5, 0.25, 1, 0]],
    [256, [0.25, 0.5, 0.5, 1, 0]],
    [512, [0.25, 0.75, 0.5, 1, 0.25]],
  ]);
  // +0.125 on every problem at 128, +0.25 at 256, varying at 512; the base varies a lot across problems.
  const policy = new Map([
    [128, base.get(128)!.map((x) => x + 0.125)],
    [256, base.get(256)!.map((x) => x + 0.25)],
    [512, [0.5, 1, 0.5, 1, 0.5]],
  ]);
  const g = gainOverBase(policy, base, 128, { seed: 4 });
  assert.deepEqual(g.gain.get(128), { mean: 0.125, lo: 0.125, hi: 0.125 });
  assert.deepEqual(g.gain.get(256), { mean: 0.25, lo: 0.25, hi: 0.25 });
  assert.deepEqual(g.beyond.get(2), { mean: 0.125, lo: 0.125, hi: 0.125 });
  const at4 = g.beyond.get(4)!;
  assert.ok(Math.abs(at4.mean - (0.15 - 0.125)) < 1e-12);
  assert.ok(at4.lo <= at4.mean && at4.mean <= at4.hi && at4.lo < at4.hi);
  // no training budget (the base itself, or an unknown one): no beyond-1x comparison
  assert.equal(gainOverBase(policy, base, null, { seed: 4 }).beyond.size, 0);
  assert.throws(
    () => gainOverBase(new Map([[128, [1]]]), base, 128, { seed: 1 }),
    /1 problems for the policy but 5 for the base at budget 128/,
  );
});
