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
    const p = heldOutProblem(o.seed, o.split, o.difficulty, o.offset + i);
    for (let j = 0; j < o.samples; j++) rows.push({ i, j, p, seed: deriveSeed(o.seed, 'eval', o.split, o.offset + i, j) });
  }
  return rows;
}

/**
 * Counts at several budgets from one sampling pass at the largest: with a per-row seeded PRNG,
 * the first B tokens of a response do not depend on the budget, so a response cut at B is
 * exactly what sampling at budget B would have produced.
 */
export function countEval(rows: SampleRow[], rollouts: Rollout[], budgets: number[], tool: boolean): EvalCounts {
  const task = taskFor(tool);
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
): CountdownProblem[] => Array.from({ length: prompts }, (_, i) => heldOutProblem(seed, split, d, offset + i));

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
