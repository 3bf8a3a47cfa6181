/**
 * Where a gain past the training budget comes from (§6.1, §7: "gains past the training
 * budget"). One sampling pass at the largest budget is counted at every smaller one
 * (ml/evaluation.ts countEval), so between budgets b1 < b2 a response can only gain if it was
 * still running at b1: unsolved and cut by the budget. pass@1(b2) − pass@1(b1) is the share of
 * such responses that the extra tokens rescue. Comparing a policy with the base therefore
 * splits into how many responses are still running at b1 and how often the window rescues one,
 * and the latter into attempts made in the window and how often an attempt there hits.
 *
 * A policy that solves more by b1 leaves a harder remainder running, so a lower rescue rate
 * may be selection, not a worse continuation. `matchedRescue` compares the rescue rates
 * problem by problem (the same problems and sampling seeds for both), which removes the
 * between-problem part of that selection.
 */
import { InvalidArgumentError, ShapeMismatchError } from './errors';
import { bootstrapMean } from './bootstrap';
import type { Interval } from './bootstrap';
import type { ResponseRecord } from './metrics';

/** One evaluation's records at two budgets, row for row (row k is the same problem and seed at both). */
export interface WindowInput {
  /** Problem index of each row (rows of one problem share it). */
  problem: readonly number[];
  at1: readonly ResponseRecord[];
  at2: readonly ResponseRecord[];
}

export interface WindowStats {
  rows: number;
  /** Share of rows unsolved and cut at b1. */
  running: number;
  /** Share of running rows solved by b2. */
  rescue: number;
  /** pass@1(b2) − pass@1(b1) = running × rescue. */
  gain: number;
  /** Complete attempts made in the window per running row. */
  attempts: number;
  /** Attempts in the window that reach the target, per attempt. */
  hitRate: number;
  /** Attempts in the window equal to an earlier one, per attempt. */
  repeatRate: number;
  /** How running rows end at b2 (stop reasons). */
  stop: Record<string, number>;
}

const running = (r: ResponseRecord): boolean => r.reward === 0 && r.truncated;

function check(w: WindowInput): void {
  if (w.at1.length !== w.at2.length || w.problem.length !== w.at1.length) {
    throw new ShapeMismatchError(`window: ${w.problem.length} problem ids, ${w.at1.length} and ${w.at2.length} records`);
  }
  if (w.at1.length === 0) throw new InvalidArgumentError('window: no rows');
}

/** The window b1 → b2 of one evaluation (see the module comment). */
export function windowStats(w: WindowInput): WindowStats {
  check(w);
  let run = 0;
  let rescued = 0;
  let attempts = 0;
  let hits = 0;
  let repeats = 0;
  const stop: Record<string, number> = {};
  w.at1.forEach((a, k) => {
    if (!running(a)) return;
    const b = w.at2[k];
    run++;
    rescued += b.reward;
    attempts += (b.explore?.marks ?? 0) - (a.explore?.marks ?? 0);
    hits += (b.explore?.right ?? 0) - (a.explore?.right ?? 0);
    repeats += (b.explore?.repeats ?? 0) - (a.explore?.repeats ?? 0);
    const s = b.explore?.stop ?? (b.truncated ? 'truncated' : 'other');
    stop[s] = (stop[s] ?? 0) + 1;
  });
  const n = w.at1.length;
  for (const s of Object.keys(stop)) stop[s] /= Math.max(1, run);
  return {
    rows: n,
    running: run / n,
    rescue: run ? rescued / run : NaN,
    gain: rescued / n,
    attempts: run ? attempts / run : NaN,
    hitRate: attempts ? hits / attempts : NaN,
    repeatRate: attempts ? repeats / attempts : NaN,
    stop,
  };
}

/** Per problem: running rows at b1 and how many of them b2 rescues. */
function perProblem(w: WindowInput): Map<number, { running: number; rescued: number }> {
  const m = new Map<number, { running: number; rescued: number }>();
  w.at1.forEach((a, k) => {
    const e = m.get(w.problem[k]) ?? { running: 0, rescued: 0 };
    if (running(a)) {
      e.running++;
      e.rescued += w.at2[k].reward;
    }
    m.set(w.problem[k], e);
  });
  return m;
}

export interface MatchedRescue {
  /** Problems where both have a running row at b1. */
  problems: number;
  base: number;
  policy: number;
  /** Policy minus base, mean over those problems with a paired bootstrap interval. */
  diff: Interval;
}

/**
 * Rescue rates of a policy and the base compared within problems: over the problems where
 * both have a response still running at b1, the mean of (policy's rescue rate on the problem
 * − the base's), with a percentile bootstrap interval over problems.
 */
export function matchedRescue(base: WindowInput, policy: WindowInput, seed: number): MatchedRescue {
  check(base);
  check(policy);
  const pb = perProblem(base);
  const pp = perProblem(policy);
  const rb: number[] = [];
  const rp: number[] = [];
  for (const [i, b] of pb) {
    const p = pp.get(i);
    if (!p || b.running === 0 || p.running === 0) continue;
    rb.push(b.rescued / b.running);
    rp.push(p.rescued / p.running);
  }
  if (!rb.length) throw new InvalidArgumentError('matchedRescue: no problem has a running row under both policies');
  const mean = (x: number[]) => x.reduce((a, b) => a + b, 0) / x.length;
  return {
    problems: rb.length,
    base: mean(rb),
    policy: mean(rp),
    diff: bootstrapMean(
      rp.map((x, k) => x - rb[k]),
      { seed },
    ),
  };
}
