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
