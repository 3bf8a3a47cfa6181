/**
 * Evaluation of J(pi; D, B) (paper Eq. 6.1's J; the extrapolation curve of §6): the held-out
 * rows with seeds that depend on the problem, not the node (so every policy meets the same
 * problems and seeds), counts at several budgets from one sampling pass, and pass@k metrics.
 */
import type { CountdownProblem } from './countdown';
import { passAtKMetrics, summarizeResponses } from './metrics';
import type { ResponseRecord } from './metrics';
import { deriveSeed } from './rng';
import type { Difficulty, Split } from './task';
import { EOS, decode } from './tokenizer';
import type { Rollout, SampleRow } from './rollouts';
import { heldOutProblem, taskFor } from './rollouts';
import { InvalidArgumentError } from './errors';

export interface EvalSpec {
  seed: number;
  split: Exclude<Split, 'train'>;
  difficulty: Difficulty;
  budgets: number[];
  prompts: number;
  samples: number;
  temperature: number;
  ks: number[];
  offset: number;
  /** Evaluate problems [from, to) only (resumable chunks); default all. */
  range?: [number, number];
  /** The run's task (ml/tasks.ts); absent: countdown. */
  task?: string;
}

/**
 * The rows of an evaluation of J(pi; D, B). Sampling seeds derive from (run seed, split,
 * problem index, sample index), not from the node, so every policy evaluated on a set meets
 * the same problems with the same seeds.
 */
export function evalRows(o: EvalSpec): SampleRow[] {
  const [from, to] = o.range ?? [0, o.prompts];
  const rows: SampleRow[] = [];
  for (let i = from; i < to; i++) {
    const p = heldOutProblem(o.seed, o.split, o.difficulty, o.offset + i, o.task);
    for (let j = 0; j < o.samples; j++) rows.push({ i, j, p, seed: deriveSeed(o.seed, 'eval', o.split, o.offset + i, j) });
  }
  return rows;
}

/**
 * Counts at several budgets from one sampling pass at the largest: with a per-row seeded PRNG,
 * the first B tokens of a response do not depend on the budget, so a response cut at B is
 * exactly what sampling at budget B would have produced.
 */
export function countEval(rows: SampleRow[], rollouts: Rollout[], budgets: number[], tool: boolean, taskName?: string): EvalCounts {
  const task = taskFor(tool, taskName);
  const counts: EvalCounts = {};
  for (const b of budgets) {
    const per = new Map<number, { n: number; c: number }>();
    const recs: ResponseRecord[] = [];
    rollouts.forEach((r, k) => {
      const cut = r.response.slice(0, b);
      const ended = cut.length > 0 && cut[cut.length - 1] === EOS;
      const g = task.verify(rows[k].p, decode(cut), !ended);
      const e = per.get(r.i) ?? { n: 0, c: 0 };
      e.n++;
      e.c += g.reward;
      per.set(r.i, e);
      recs.push({
        reward: g.reward,
        length: cut.length,
        truncated: g.truncated,
        attempts: g.attempts,
        checks: g.checks,
        explore: g.explore,
      });
    });
    counts[b] = { problems: [...per.values()], records: recs };
  }
  return counts;
}

export type EvalCounts = Record<number, { problems: Array<{ n: number; c: number }>; records: ResponseRecord[] }>;

/** The held-out problems an evaluation of `prompts` problems from `offset` meets. */
export const heldOutSet = (
  seed: number,
  split: Exclude<Split, 'train'>,
  d: Difficulty,
  offset: number,
  prompts: number,
  task?: string,
): CountdownProblem[] => Array.from({ length: prompts }, (_, i) => heldOutProblem(seed, split, d, offset + i, task));

/** Merge partial evaluations (resumed chunks) into metric keys like eval/b64/pass@1. */
export function evalMetrics(counts: EvalCounts[], budgets: number[], ks: number[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const b of budgets) {
    const problems = counts.flatMap((c) => c[b]?.problems ?? []);
    const records = counts.flatMap((c) => c[b]?.records ?? []);
    Object.assign(out, passAtKMetrics(`eval/b${b}`, problems, ks), summarizeResponses(`eval/b${b}`, records));
  }
  return out;
}

/**
 * The problems of part `part` of `parts` of an evaluation of J(pi; D, B) over `prompts`
 * problems: i with i mod parts = part (as an RL iteration's parts, ml/rollouts.ts shardRows),
 * so a part's cost does not depend on where in the set the hard problems fall.
 */
export function evalPartProblems(prompts: number, part: number, parts: number): number[] {
  if (!Number.isInteger(parts) || parts < 1)
    throw new InvalidArgumentError(`evalPartProblems: parts must be a positive integer (got ${parts})`);
  if (!Number.isInteger(part) || part < 0 || part >= parts)
    throw new InvalidArgumentError(`evalPartProblems: part must be an integer in [0, ${parts}) (got ${part})`);
  const out: number[] = [];
  for (let i = part; i < prompts; i += parts) out.push(i);
  return out;
}

/** One problem's counts (countEval over its `samples` rows), as an evaluation part stores them. */
export interface ProblemCounts {
  i: number;
  counts: EvalCounts;
}

/**
 * Counts of problems i in [from, to) from per-problem counts in any order: per budget, the
 * problems' entries and then their records in problem order. countEval over a contiguous
 * range groups per problem in row order (problem i, then sample j), so this is exactly
 * countEval over the range's rows (test/unit/evaluation.test.ts), whatever the parts the
 * problems were sampled in. A problem of the range missing or given twice is an
 * InvalidArgument; problems outside the range are ignored.
 */
export function joinEvalCounts(pieces: readonly ProblemCounts[], from: number, to: number, budgets: readonly number[]): EvalCounts {
  const byProblem = new Map<number, EvalCounts>();
  for (const p of pieces) {
    if (p.i < from || p.i >= to) continue;
    if (byProblem.has(p.i)) throw new InvalidArgumentError(`joinEvalCounts: problem ${p.i} is counted twice`);
    byProblem.set(p.i, p.counts);
  }
  const out: EvalCounts = {};
  for (const b of budgets) {
    const problems: EvalCounts[number]['problems'] = [];
    const records: ResponseRecord[] = [];
    for (let i = from; i < to; i++) {
      const c = byProblem.get(i);
      if (!c) throw new InvalidArgumentError(`joinEvalCounts: problem ${i} of [${from}, ${to}) has no counts`);
      const at = c[b];
      if (!at) throw new InvalidArgumentError(`joinEvalCounts: problem ${i} has no counts at budget ${b}`);
      problems.push(...at.problems);
      records.push(...at.records);
    }
    out[b] = { problems, records };
  }
  return out;
}
