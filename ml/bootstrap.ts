/**
 * Extrapolation measured as the paper claims it (§6, Fig. 9; §7 "gains past the training
 * budget"): the gain of a policy over the base at each test budget, and whether the gain at
 * 2× and 4× the training budget exceeds the gain at 1×, each with a paired percentile
 * bootstrap interval over problems.
 *
 * Paired: both policies are evaluated on the same problems with the same sampling seeds
 * (ml/trainer.ts evalRows derives seeds from the run seed, split and problem, never the
 * node), so problem i's pass rate under each policy is one pair, and a resample draws whole
 * problems, keeping each pair (and each problem's rates at every budget) together.
 */
import { InvalidArgumentError, ShapeMismatchError } from './errors';
import { Rng } from './rng';

/** A mean with its bootstrap interval. */
export interface Interval {
  mean: number;
  lo: number;
  hi: number;
}

export interface BootstrapOptions {
  /** Resamples. @default 4000 */
  resamples?: number;
  /** Two-sided coverage. @default 0.95 */
  level?: number;
  /** Seed of the resampling draws (from deriveSeed: results never depend on the clock). */
  seed: number;
}

/**
 * Percentile bootstrap of the mean of per-problem values `d` (e.g. pass rate of the policy
 * minus the base's on problem i): resample n problems with replacement, take the mean; the
 * interval is the (1 − level)/2 and (1 + level)/2 quantiles of those means (type 7, linear
 * interpolation between order statistics). `mean` is the plain sample mean.
 */
export function bootstrapMean(d: readonly number[], o: BootstrapOptions): Interval {
  const resamples = o.resamples ?? 4000;
  const level = o.level ?? 0.95;
  if (d.length === 0) throw new InvalidArgumentError('bootstrapMean: no problems');
  if (!d.every(Number.isFinite)) throw new InvalidArgumentError('bootstrapMean: a per-problem value is not finite');
  if (!Number.isInteger(resamples) || resamples < 2)
    throw new InvalidArgumentError(`bootstrapMean: resamples must be an integer >= 2 (got ${resamples})`);
  if (!(level > 0 && level < 1)) throw new InvalidArgumentError(`bootstrapMean: level must be in (0, 1) (got ${level})`);
  const n = d.length;
  const rng = new Rng(o.seed);
  const means = new Float64Array(resamples);
  for (let r = 0; r < resamples; r++) {
    let s = 0;
    for (let k = 0; k < n; k++) s += d[rng.int(0, n - 1)];
    means[r] = s / n;
  }
  means.sort();
  return { mean: d.reduce((a, b) => a + b, 0) / n, lo: quantile(means, (1 - level) / 2), hi: quantile(means, (1 + level) / 2) };
}

/** Quantile q of sorted values, linear between order statistics (R's type 7). */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  const h = (sorted.length - 1) * q;
  const lo = Math.floor(h);
  const hi = Math.min(sorted.length - 1, lo + 1);
  return sorted[lo] + (h - lo) * (sorted[hi] - sorted[lo]);
}

/** Per-problem pass rates at one budget: c / n of each problem, in problem order. */
export type Rates = readonly number[];

export interface GainReport {
  /** Test budget → gain of the policy over the base (pass@1), paired over problems. */
  gain: Map<number, Interval>;
  /** m → gain at m × the training budget minus the gain at 1× (m = 2, 4 where measured). */
  beyond: Map<number, Interval>;
}

/**
 * The gain of `policy` over `base` at every budget both measured, and, for `trainBudget`
 * B_tr, gain(m · B_tr) − gain(B_tr) for m = 2 and 4 when those budgets were measured. Each
 * interval is a paired bootstrap over problems; the same resampled problems serve every
 * budget of one comparison (one seed), so the intervals are of one joint resampling.
 */
export function gainOverBase(
  policy: ReadonlyMap<number, Rates>,
  base: ReadonlyMap<number, Rates>,
  trainBudget: number | null,
  o: BootstrapOptions,
): GainReport {
  const budgets = [...policy.keys()].filter((b) => base.has(b)).sort((a, b) => a - b);
  const delta = (b: number): number[] => {
    const p = policy.get(b)!,
      q = base.get(b)!;
    if (p.length !== q.length)
      throw new ShapeMismatchError(`gainOverBase: ${p.length} problems for the policy but ${q.length} for the base at budget ${b}`);
    return p.map((x, i) => x - q[i]);
  };
  const gain = new Map(budgets.map((b) => [b, bootstrapMean(delta(b), o)] as const));
  const beyond = new Map<number, Interval>();
  if (trainBudget !== null && gain.has(trainBudget)) {
    const at1 = delta(trainBudget);
    for (const m of [2, 4]) {
      if (!gain.has(m * trainBudget)) continue;
      const atM = delta(m * trainBudget);
      beyond.set(
        m,
        bootstrapMean(
          atM.map((x, i) => x - at1[i]),
          o,
        ),
      );
    }
  }
  return { gain, beyond };
}
