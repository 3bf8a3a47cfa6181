/**
 * The stage budget rule, paper Eq. 6.1 (§6.2):
 *
 *   B*_i = the smallest B >= B0 such that J(π_i; D_i, 2B) <= κ · J(π_i; D_i, B)
 *
 * J(B) is pass@1 with responses cut at B tokens. The paper restricts B to a fixed set of
 * candidates (4k, 8k, 16k for math; its Fig. 9c shows where J plateaus on Countdown); each
 * candidate B is tested against J(2B), so a select-budget node samples at every candidate and
 * at its double (`measuredBudgets`), the largest candidate included.
 *
 * When no candidate qualifies, `budget` is null and `reason` says why. `fallback` is then the
 * largest candidate >= B0 (null if none): every measured doubling still paid more than κ. The
 * caller decides whether that is an error (the data or the grid is wrong for this policy) or a
 * choice the config accepts. J(B) = J(2B) = 0 does qualify (doubling gains nothing); `reason`
 * then warns that the data may be too hard for the policy.
 */
import { InvalidArgumentError } from './errors';
import { quantile } from './bootstrap';
import { Rng } from './rng';
import type { EvalCounts } from './evaluation';

export type PassAt1Curve = ReadonlyMap<number, number> | ReadonlyArray<{ budget: number; passAt1: number }>;

/** One candidate B of Eq. 6.1 as the report shows it (the paper's Fig. 9c): J(B), J(2B) and their ratio. */
export interface Candidate {
  budget: number;
  J: number;
  /** J(2B); null when 2B was not measured. */
  J2: number | null;
  /** J(2B) / J(B); null when 2B was not measured or J(B) = 0. */
  ratio: number | null;
  /** J(2B) <= κ J(B) and B >= B0. */
  qualifies: boolean;
}

export interface BudgetChoice {
  budget: number | null;
  reason: string;
  /** When budget is null: the largest candidate >= b0, or null. Equals budget otherwise. */
  fallback: number | null;
  /** Every candidate in increasing order (B < B0 included, never qualifying). */
  candidates: Candidate[];
}

/** The budgets a select-budget node samples for a grid of candidates: each B and 2B, sorted. */
export function measuredBudgets(grid: readonly number[]): number[] {
  return [...new Set(grid.flatMap((b) => [b, 2 * b]))].sort((a, b) => a - b);
}

/**
 * Eq. 6.1 over the measured curve J. `candidates` restricts B to a grid (default: every
 * measured budget); a candidate whose 2B was not measured cannot qualify.
 */
export function selectBudget(J: PassAt1Curve, opts: { kappa?: number; b0: number; candidates?: readonly number[] }): BudgetChoice {
  const kappa = opts.kappa ?? 1.2;
  const { b0 } = opts;
  if (!Number.isFinite(kappa) || kappa < 1)
    throw new InvalidArgumentError(`selectBudget: kappa must be a finite number >= 1 (got ${kappa})`);
  if (!Number.isFinite(b0) || b0 < 0) throw new InvalidArgumentError(`selectBudget: b0 must be a finite number >= 0 (got ${b0})`);
  const pairs: Array<[number, number]> =
    J instanceof Map ? [...J.entries()] : (J as ReadonlyArray<{ budget: number; passAt1: number }>).map((p) => [p.budget, p.passAt1]);
  const curve = new Map<number, number>();
  for (const [b, j] of pairs) {
    if (typeof b !== 'number' || !Number.isFinite(b) || b <= 0)
      throw new InvalidArgumentError(`selectBudget: budget must be a finite number > 0 (got ${b})`);
    if (typeof j !== 'number' || !(j >= 0 && j <= 1))
      throw new InvalidArgumentError(`selectBudget: passAt1 at budget ${b} must be in [0, 1] (got ${j})`);
    if (curve.has(b)) throw new InvalidArgumentError(`selectBudget: budget ${b} appears twice`);
    curve.set(b, j);
  }
  if (curve.size === 0) throw new InvalidArgumentError('selectBudget: J is empty (no budget measured)');

  for (const b of opts.candidates ?? []) {
    if (!curve.has(b)) throw new InvalidArgumentError(`selectBudget: candidate budget ${b} was not measured`);
  }
  const all = [...(opts.candidates ?? curve.keys())].sort((a, b) => a - b);
  const candidates: Candidate[] = all.map((b) => {
    const j = curve.get(b)!;
    const j2 = curve.get(2 * b) ?? null;
    return { budget: b, J: j, J2: j2, ratio: j2 === null || j === 0 ? null : j2 / j, qualifies: b >= b0 && j2 !== null && j2 <= kappa * j };
  });
  const grid = all.filter((b) => b >= b0);
  const fallback = grid.length ? grid[grid.length - 1] : null;
  const f = (x: number) => String(+x.toPrecision(6));
  const tried: string[] = [];
  for (const c of candidates) {
    if (c.budget < b0 || c.J2 === null) continue;
    const b = c.budget,
      j = c.J,
      j2 = c.J2;
    if (c.qualifies) {
      const zero = j === 0 ? '; J is 0 at both, so the data may be too hard for this policy' : '';
      return { budget: b, fallback: b, candidates, reason: `J(${2 * b})=${f(j2)} <= ${kappa}*J(${b})=${f(kappa * j)}${zero}` };
    }
    tried.push(`J(${2 * b})=${f(j2)} > ${kappa}*J(${b})=${f(kappa * j)}`);
  }
  const reason = tried.length
    ? `no budget >= ${f(b0)} qualifies: ${tried.join('; ')}; doubling still helps at the largest measured pair`
    : `no budget >= ${f(b0)} has its double measured (grid: ${[...curve.keys()].sort((a, b) => a - b).join(', ')})`;
  return { budget: null, fallback, candidates, reason };
}

/** One problem of a select-budget measurement: successes by measured budget out of `n` samples, and the lengths of its responses that ended within the largest budget (B0's sample). */
export interface ProblemCurve {
  n: number;
  c: ReadonlyMap<number, number>;
  lens: readonly number[];
}

/** The problems of a select-budget evaluation (chunks in order, `samples` rows per problem) as ProblemCurves. */
export function problemCurves(counts: readonly EvalCounts[], budgets: readonly number[], samples: number): ProblemCurve[] {
  const top = Math.max(...budgets);
  return counts.flatMap((c) =>
    c[top].problems.map((p, i) => ({
      n: p.n,
      c: new Map(budgets.map((b) => [b, c[b].problems[i].c])),
      lens: c[top].records
        .slice(i * samples, (i + 1) * samples)
        .filter((r) => !r.truncated)
        .map((r) => r.length),
    })),
  );
}

/** How stable Eq. 6.1's choice is under resampling the problems it was measured on. */
export interface ChoiceStability {
  resamples: number;
  /** Share of resamples choosing each candidate; `none`: no candidate qualified. */
  chosen: Map<number | 'none', number>;
  /** Per candidate with its double measured: J(2B)/J(B) percentile interval over resamples (level 0.95). */
  ratio: Map<number, { lo: number; hi: number }>;
}

/**
 * Eq. 6.1's choice under a percentile bootstrap over problems: each resample draws the
 * problems with replacement (a problem keeps its successes at every budget, so J(B) and J(2B)
 * stay paired), recomputes J, B0 (the mean length of the drawn responses that ended, unless
 * `b0` is fixed) and the choice. A choice made in nearly every resample does not hinge on
 * which problems were drawn; a ratio interval that straddles κ says the choice could flip.
 */
export function choiceStability(
  problems: readonly ProblemCurve[],
  opts: { kappa: number; b0?: number; candidates: readonly number[]; seed: number; resamples?: number },
): ChoiceStability {
  const resamples = opts.resamples ?? 1000;
  if (problems.length === 0) throw new InvalidArgumentError('choiceStability: no problems');
  if (!Number.isInteger(resamples) || resamples < 2)
    throw new InvalidArgumentError(`choiceStability: resamples must be an integer >= 2 (got ${resamples})`);
  const budgets = [...problems[0].c.keys()].sort((a, b) => a - b);
  const rng = new Rng(opts.seed);
  const chosen = new Map<number | 'none', number>();
  const ratios = new Map<number, number[]>(opts.candidates.filter((b) => budgets.includes(2 * b)).map((b) => [b, []]));
  const n = problems.length;
  for (let r = 0; r < resamples; r++) {
    const succ = new Map<number, number>(budgets.map((b) => [b, 0]));
    let samples = 0;
    let lenSum = 0;
    let lenCount = 0;
    for (let k = 0; k < n; k++) {
      const p = problems[rng.int(0, n - 1)];
      samples += p.n;
      for (const b of budgets) succ.set(b, succ.get(b)! + (p.c.get(b) ?? 0));
      for (const l of p.lens) lenSum += l;
      lenCount += p.lens.length;
    }
    const J = new Map(budgets.map((b) => [b, succ.get(b)! / samples]));
    const b0 = opts.b0 !== undefined && opts.b0 > 0 ? opts.b0 : lenCount ? lenSum / lenCount : 0;
    const choice = selectBudget(J, { kappa: opts.kappa, b0, candidates: opts.candidates });
    const key = choice.budget ?? 'none';
    chosen.set(key, (chosen.get(key) ?? 0) + 1);
    for (const [b, xs] of ratios) if (J.get(b)! > 0) xs.push(J.get(2 * b)! / J.get(b)!);
  }
  for (const [k, v] of chosen) chosen.set(k, v / resamples);
  const ratio = new Map<number, { lo: number; hi: number }>();
  for (const [b, xs] of ratios) {
    if (!xs.length) continue;
    const s = Float64Array.from(xs).sort();
    ratio.set(b, { lo: quantile(s, 0.025), hi: quantile(s, 0.975) });
  }
  return { resamples, chosen, ratio };
}
