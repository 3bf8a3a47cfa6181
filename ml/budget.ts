/**
 * The stage budget rule, paper Eq. 6.1 (docs/RECIPE.md "Three ingredients", 3):
 *
 *   B*_i = the smallest B >= B0 such that J(π_i; D_i, 2B) <= κ · J(π_i; D_i, B)
 *
 * J(B) is pass@1 with responses cut at B tokens, measured on a grid (the paper: 4k, 8k, 16k;
 * countdown: 256 … 1024). A budget B qualifies only when both B and 2B were measured.
 *
 * When no B qualifies, `budget` is null and `reason` says why. `fallback` is then the largest
 * measured budget ≥ B0 (null if none): every measured doubling still paid more than κ, so the
 * best-supported choice is the most we measured; the caller should log `reason` and, better,
 * extend the grid. Note J(B) = J(2B) = 0 does qualify (doubling gains nothing); `reason` then
 * warns that the data may be too hard for the policy.
 */
import { InvalidArgumentError } from './errors';

export type PassAt1Curve = ReadonlyMap<number, number> | ReadonlyArray<{ budget: number; passAt1: number }>;

export interface BudgetChoice {
  budget: number | null;
  reason: string;
  /** When budget is null: the largest measured budget >= b0, or null. Equals budget otherwise. */
  fallback: number | null;
}

export function selectBudget(J: PassAt1Curve, opts: { kappa?: number; b0: number }): BudgetChoice {
  const kappa = opts.kappa ?? 1.2;
  const { b0 } = opts;
  if (!Number.isFinite(kappa) || kappa < 1) throw new InvalidArgumentError(`selectBudget: kappa must be a finite number >= 1 (got ${kappa})`);
  if (!Number.isFinite(b0) || b0 < 0) throw new InvalidArgumentError(`selectBudget: b0 must be a finite number >= 0 (got ${b0})`);
  const pairs: Array<[number, number]> = J instanceof Map ? [...J.entries()] : (J as ReadonlyArray<{ budget: number; passAt1: number }>).map((p) => [p.budget, p.passAt1]);
  const curve = new Map<number, number>();
  for (const [b, j] of pairs) {
    if (typeof b !== 'number' || !Number.isFinite(b) || b <= 0) throw new InvalidArgumentError(`selectBudget: budget must be a finite number > 0 (got ${b})`);
    if (typeof j !== 'number' || !(j >= 0 && j <= 1)) throw new InvalidArgumentError(`selectBudget: passAt1 at budget ${b} must be in [0, 1] (got ${j})`);
    if (curve.has(b)) throw new InvalidArgumentError(`selectBudget: budget ${b} appears twice`);
    curve.set(b, j);
  }
  if (curve.size === 0) throw new InvalidArgumentError('selectBudget: J is empty (no budget measured)');

  const grid = [...curve.keys()].sort((a, b) => a - b).filter((b) => b >= b0);
  const fallback = grid.length ? grid[grid.length - 1] : null;
  const f = (x: number) => String(+x.toPrecision(6));
  const tried: string[] = [];
  for (const b of grid) {
    const j2 = curve.get(2 * b);
    if (j2 === undefined) continue;
    const j = curve.get(b)!;
    if (j2 <= kappa * j) {
      const zero = j === 0 ? '; J is 0 at both, so the data may be too hard for this policy' : '';
      return { budget: b, fallback: b, reason: `J(${2 * b})=${f(j2)} <= ${kappa}*J(${b})=${f(kappa * j)}${zero}` };
    }
    tried.push(`J(${2 * b})=${f(j2)} > ${kappa}*J(${b})=${f(kappa * j)}`);
  }
  const reason = tried.length
    ? `no budget >= ${f(b0)} qualifies: ${tried.join('; ')}; doubling still helps at the largest measured pair`
    : `no budget >= ${f(b0)} has its double measured (grid: ${[...curve.keys()].sort((a, b) => a - b).join(', ')})`;
  return { budget: null, fallback, reason };
}
