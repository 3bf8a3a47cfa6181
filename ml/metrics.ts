/**
 * The paper's metrics (docs/RECIPE.md "What to measure") as flat `Record<string, number>` with
 * slash-separated keys that carry the budget where it matters (docs/ARCHITECTURE.md "Conventions"):
 * `train/reward_mean`, `train/truncated_frac`, `train/zero_std_frac`, `train/response_len`,
 * `train/response_len_correct`, `eval/b512/pass@8`. A key with no data (e.g. the length of
 * correct responses when none was correct) is left out rather than written as NaN.
 */
import { InvalidArgumentError, ShapeMismatchError } from './errors';
import type { Explore } from './task';

export const trainKey = (name: string): string => `train/${name}`;
export const evalPrefix = (budget: number): string => `eval/b${budget}`;
export const evalKey = (budget: number, name: string): string => `${evalPrefix(budget)}/${name}`;
export const passKey = (k: number): string => `pass@${k}`;

/**
 * Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, "Evaluating Large
 * Language Models Trained on Code", eq. 1): 1 − C(n−c, k)/C(n, k), computed as
 * 1 − Π_{i=n−c+1}^{n} (1 − k/i) so no binomial overflows.
 */
export function passAtK(n: number, c: number, k: number): number {
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`passAtK: n must be an integer >= 1 (got ${n})`);
  if (!Number.isInteger(c) || c < 0 || c > n) throw new InvalidArgumentError(`passAtK: c must be an integer in [0, n=${n}] (got ${c})`);
  if (!Number.isInteger(k) || k < 1 || k > n) throw new InvalidArgumentError(`passAtK: k must be an integer in [1, n=${n}] (got ${k})`);
  if (n - c < k) return 1;
  let fail = 1;
  for (let i = n - c + 1; i <= n; i++) fail *= 1 - k / i;
  return 1 - fail;
}

/** Mean pass@k over problems, each with its own n and c. */
export function meanPassAtK(problems: ReadonlyArray<{ n: number; c: number }>, k: number): number {
  if (problems.length === 0) throw new InvalidArgumentError('meanPassAtK: no problems');
  return problems.reduce((s, p) => s + passAtK(p.n, p.c, k), 0) / problems.length;
}

/** `${prefix}/pass@k` for each k that every problem has enough samples for (k ≤ min n). */
export function passAtKMetrics(
  prefix: string,
  problems: ReadonlyArray<{ n: number; c: number }>,
  ks: readonly number[],
): Record<string, number> {
  const out: Record<string, number> = {};
  if (problems.length === 0) return out;
  const nMin = Math.min(...problems.map((p) => p.n));
  for (const k of ks) if (k <= nMin) out[`${prefix}/${passKey(k)}`] = meanPassAtK(problems, k);
  return out;
}

/** What a summary needs from one graded response. */
export interface ResponseRecord {
  /** 1 if verified correct, else 0 (truncated → 0). */
  reward: number;
  /** Response tokens as cut at the budget. */
  length: number;
  truncated: boolean;
  /** Generate episodes (tries) and verify episodes in the response, if the task counts them. */
  attempts?: number;
  checks?: number;
  /** Sum of per-token entropies over the policy's tokens, and how many tokens. */
  entropySum?: number;
  entropyTokens?: number;
  /** Exact exploration diagnostics (countdown's grader). */
  explore?: Explore;
}

/** Stop reasons reported as `stop_<reason>` shares (see Explore). */
export const STOP_REASONS = ['correct', 'false_ok', 'gave_up', 'truncated', 'other'] as const;

const mean = (xs: readonly number[]): number | undefined => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : undefined);

/**
 * Means over responses under `prefix` (`train` or `evalPrefix(budget)`): reward_mean,
 * truncated_frac, response_len (all / _correct / _incorrect), attempts, checks, entropy
 * (token-weighted), responses; the exploration diagnostics where records carry them
 * (marks_true, false_ok, false_no, target_copy_true pooled over marks; unique_attempts,
 * repeats per response; stop_<reason> shares); and zero_std_frac (groups whose rewards are all equal) when
 * `groupSize` is given, responses laid out group after group as for groupAdvantages.
 */
export function summarizeResponses(prefix: string, rs: readonly ResponseRecord[], groupSize?: number): Record<string, number> {
  const out: Record<string, number> = {};
  const put = (name: string, x: number | undefined) => {
    if (x !== undefined) out[`${prefix}/${name}`] = x;
  };
  put('responses', rs.length);
  put('reward_mean', mean(rs.map((r) => r.reward)));
  put('truncated_frac', mean(rs.map((r) => (r.truncated ? 1 : 0))));
  put('response_len', mean(rs.map((r) => r.length)));
  put('response_len_correct', mean(rs.filter((r) => r.reward > 0).map((r) => r.length)));
  put('response_len_incorrect', mean(rs.filter((r) => !(r.reward > 0)).map((r) => r.length)));
  put('attempts', mean(rs.filter((r) => r.attempts !== undefined).map((r) => r.attempts!)));
  put('checks', mean(rs.filter((r) => r.checks !== undefined).map((r) => r.checks!)));
  const ex = rs.flatMap((r) => (r.explore ? [r.explore] : []));
  if (ex.length) {
    const sum = (f: (e: Explore) => number) => ex.reduce((a, e) => a + f(e), 0);
    const ratio = (num: number, den: number) => (den > 0 ? num / den : undefined);
    // Pooled over all marks of all responses (a response with more attempts weighs more).
    put(
      'marks_true',
      ratio(
        sum((e) => e.marksTrue),
        sum((e) => e.marks),
      ),
    );
    put(
      'false_ok',
      ratio(
        sum((e) => e.falseOk),
        sum((e) => e.wrong),
      ),
    );
    put(
      'false_no',
      ratio(
        sum((e) => e.falseNo),
        sum((e) => e.right),
      ),
    );
    put(
      'target_copy_true',
      ratio(
        sum((e) => e.copiesTrue),
        sum((e) => e.copies),
      ),
    );
    put('unique_attempts', sum((e) => e.unique) / ex.length);
    put('repeats', sum((e) => e.repeats) / ex.length);
    for (const why of STOP_REASONS) put(`stop_${why}`, ex.filter((e) => e.stop === why).length / ex.length);
  }
  const tokens = rs.reduce((s, r) => s + (r.entropyTokens ?? 0), 0);
  if (tokens > 0) put('entropy', rs.reduce((s, r) => s + (r.entropySum ?? 0), 0) / tokens);
  if (groupSize !== undefined) {
    if (!Number.isInteger(groupSize) || groupSize < 1 || rs.length % groupSize !== 0) {
      throw new ShapeMismatchError(`summarizeResponses: groupSize ${groupSize} does not divide ${rs.length} responses`);
    }
    let zero = 0;
    for (let g = 0; g < rs.length; g += groupSize) {
      const group = rs.slice(g, g + groupSize);
      if (group.every((r) => r.reward === group[0].reward)) zero++;
    }
    if (rs.length > 0) put('zero_std_frac', zero / (rs.length / groupSize));
  }
  return out;
}
