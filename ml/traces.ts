/**
 * Synthetic warm-start (SFT) traces for countdown: attempt → check → retry … → answer.
 * A warm-started model should carry the verification asymmetry the e3 recipe chains
 * (paper §3): checking an attempt is easy, generating a correct one is hard. A trace is a
 * geometric number of wrong attempts, each legal with correct arithmetic but ending off
 * target and marked `no`, then one correct attempt from the solver marked `ok`. Every mark
 * agrees with the truth, and every attempt writes the target next to its last result
 * before the mark (`…,15+7=22>24 no;`), so the check is a comparison of two adjacent
 * numbers. Two choices keep a mark from being predictable without that comparison:
 * - the number of wrong attempts is geometric, so the chance that the next mark is `ok` is
 *   the same at every position (a constant hazard: position says nothing);
 * - a share of wrong attempts are near misses (last result close to the target, often
 *   sharing its length and leading digits), so a coarse look at the numbers is not enough.
 * Problems come only from the `train` split (ml/countdown.ts `splitOf`).
 */
import { Rng, deriveSeed } from './rng';
import { encode } from './tokenizer';
import type { Difficulty } from './task';
import {
  type CountdownProblem,
  type Op,
  type Step,
  INTERMEDIATE_CAP,
  apply,
  countdownPrompt,
  formatAttempt,
  generateCountdown,
  normalizeAttempt,
  solve,
} from './countdown';

export interface TraceOptions {
  /** Mean number of wrong attempts before the answer (geometric). @default 1.5 */
  meanWrong: number;
  /** Most attempts in one trace, the correct one included. @default 8 */
  maxAttempts: number;
  /** Most response tokens, <eos> included; wrong attempts are dropped to fit. @default 256 */
  budget: number;
  /** Share of wrong attempts chosen as the nearest miss among a few candidates. @default 0.5 */
  nearMiss: number;
  /**
   * Share of wrong attempts that are the trace's own solution with its last operation
   * changed (`perturbSolution`): they look exactly like the answer until the result, so only
   * comparing the result with the target tells the two apart. @default 0
   */
  perturbed: number;
  /**
   * Search traces: attempts are drawn as a blind search makes them, without steering clear
   * of the target, and the first one that reaches it is marked `ok` and ends the trace;
   * only when the geometric count of attempts runs out first does the solver's answer end
   * it. Without this (the historical traces) every wrong attempt is built to miss, so the
   * attempts a model learns to make after a `no` never reach the target, and its search
   * past the first guesses finds nothing (docs/results/base-search.md). @default false
   */
  search: boolean;
}

export const TRACE_DEFAULTS: TraceOptions = { meanWrong: 1.5, maxAttempts: 8, budget: 256, nearMiss: 0.5, perturbed: 0, search: false };

/**
 * A solution with its last step's operation (or operand order) changed so that it misses
 * the target: a legal attempt, true arithmetic, the same prefix as the answer. Null when no
 * change keeps the step legal and off target.
 */
export function perturbSolution(p: CountdownProblem, solution: readonly Step[], rng: Rng): Step[] | null {
  const last = solution[solution.length - 1];
  const ops = rng.shuffle((['+', '-', '*', '/'] as Op[]).filter((o) => p.ops.includes(o)));
  for (const op of ops) {
    for (const [a, b] of rng.next() < 0.5
      ? [
          [last.a, last.b],
          [last.b, last.a],
        ]
      : [
          [last.b, last.a],
          [last.a, last.b],
        ]) {
      if (op === last.op && a === last.a && b === last.b) continue;
      const r = apply(a, op, b);
      if (!('value' in r) || r.value <= 0 || r.value > INTERMEDIATE_CAP || r.value === p.target) continue;
      return [...solution.slice(0, -1), { a, op, b, c: r.value }];
    }
  }
  return null;
}

/** Candidates drawn when a near miss is wanted. */
const NEAR_CANDIDATES = 6;

/**
 * A random legal attempt (operands available, exact positive arithmetic) that misses the
 * target, or null. With `avoid` false it is a blind proposal instead: it combines every
 * number, except that a step may reach the target, and the attempt then ends at that step.
 */
export function wrongAttempt(p: CountdownProblem, rng: Rng, avoid = true): Step[] | null {
  const ops = (['+', '-', '*', '/'] as Op[]).filter((o) => p.ops.includes(o));
  for (let tries = 0; tries < 50; tries++) {
    let pool = [...p.numbers];
    // A blind proposal combines every number (a search over full expressions): fewer could
    // never solve a problem that needs them all.
    const n = avoid ? rng.int(1, p.numbers.length - 1) : p.numbers.length - 1;
    const steps: Step[] = [];
    while (steps.length < n) {
      const i = rng.int(0, pool.length - 1);
      let j = rng.int(0, pool.length - 2);
      if (j >= i) j++;
      let step: Step | null = null;
      for (const op of rng.shuffle([...ops])) {
        const r = apply(pool[i], op, pool[j]);
        if ('value' in r && r.value > 0 && r.value <= INTERMEDIATE_CAP && (!avoid || r.value !== p.target)) {
          step = { a: pool[i], op, b: pool[j], c: r.value };
          break;
        }
      }
      if (!step) break;
      steps.push(step);
      if (step.c === p.target) return steps; // only when !avoid
      pool = [...pool.filter((_, t) => t !== i && t !== j), step.c];
    }
    if (steps.length === n) return steps;
  }
  return null;
}

const tokens = (text: string): number => encode(text).length;

/** How many wrong attempts a trace holds: geometric on {0, 1, ...} with mean `meanWrong`, capped at maxAttempts − 1. */
function wrongCount(rng: Rng, o: TraceOptions): number {
  const q = o.meanWrong / (1 + o.meanWrong);
  let n = 0;
  while (n < o.maxAttempts - 1 && rng.next() < q) n++;
  return n;
}

/**
 * One trace's response text (up to where <eos> goes). Wrong attempts are distinct (as
 * normalised expressions: `3+5` and `5+3` are one attempt); when
 * the trace would exceed `budget` tokens (+1 for <eos>), wrong attempts are dropped from
 * the end. The correct attempt alone is returned even if it exceeds the budget.
 */
export function makeTrace(p: CountdownProblem, rng: Rng, opts: Partial<TraceOptions> = {}): string {
  const o = { ...TRACE_DEFAULTS, ...opts };
  if (o.search) return searchTrace(p, rng, o);
  const nWrong = wrongCount(rng, o);
  const wrong: string[] = [];
  const seen = new Set<string>();
  // With perturbed solutions the answer is found first (they are built from it); without,
  // the draws keep their historical order (committed checkpoints were trained on them).
  let found = o.perturbed > 0 ? (solve(p.numbers, p.target, p.ops, { rng, maxNodes: 20_000 }).steps ?? p.solution) : null;
  for (let k = 0; k < nWrong * 3 && wrong.length < nWrong; k++) {
    let steps = found && rng.next() < o.perturbed ? perturbSolution(p, found, rng) : null;
    const fromAnswer = steps !== null;
    if (!steps) steps = wrongAttempt(p, rng);
    if (!steps) break;
    if (!fromAnswer && rng.next() < o.nearMiss) {
      const miss = (s: Step[]) => Math.abs(s[s.length - 1].c - p.target);
      for (let c = 1; c < NEAR_CANDIDATES; c++) {
        const other = wrongAttempt(p, rng);
        if (other && miss(other) < miss(steps)) steps = other;
      }
    }
    const key = normalizeAttempt(steps);
    if (seen.has(key)) continue;
    seen.add(key);
    wrong.push(formatAttempt(steps, 'no', p.target));
  }
  found ??= solve(p.numbers, p.target, p.ops, { rng, maxNodes: 20_000 }).steps ?? p.solution;
  return fitBudget(wrong, formatAttempt(found, 'ok', p.target), o.budget);
}

/** Attempts kept from the front so that they and the closing attempt fit in `budget` tokens (+1 for <eos>); the closing one always stays. */
function fitBudget(attempts: readonly string[], closing: string, budget: number): string {
  let total = tokens(closing) + 1;
  const kept: string[] = [];
  for (const w of attempts) {
    const t = tokens(w);
    if (total + t > budget) break;
    total += t;
    kept.push(w);
  }
  return kept.join('') + closing;
}

/**
 * A search trace (TraceOptions.search): up to a geometric number of distinct attempts, each
 * a perturbed answer (share `perturbed`, always a miss) or a blind proposal (`wrongAttempt`
 * with the target allowed; a share `nearMiss` of them the closest of a few to the target, so
 * a proposal that reaches it is preferred). Attempt k given k − 1 misses is drawn the same
 * way at every k, so what follows a `no` reaches the target as often as a first attempt
 * does. Every mark is the truth.
 */
function searchTrace(p: CountdownProblem, rng: Rng, o: TraceOptions): string {
  const nWrong = wrongCount(rng, o);
  const answer = solve(p.numbers, p.target, p.ops, { rng, maxNodes: 20_000 }).steps ?? p.solution;
  const miss = (s: Step[]) => Math.abs(s[s.length - 1].c - p.target);
  const wrong: string[] = [];
  const seen = new Set<string>();
  for (let k = 0; k < nWrong * 3 && wrong.length < nWrong; k++) {
    let steps = o.perturbed > 0 && rng.next() < o.perturbed ? perturbSolution(p, answer, rng) : null;
    if (!steps) {
      steps = wrongAttempt(p, rng, false);
      if (steps && rng.next() < o.nearMiss) {
        for (let c = 1; c < NEAR_CANDIDATES; c++) {
          const other = wrongAttempt(p, rng, false);
          if (other && miss(other) < miss(steps)) steps = other;
        }
      }
    }
    if (!steps) break;
    const key = normalizeAttempt(steps);
    if (seen.has(key)) continue;
    seen.add(key);
    if (miss(steps) === 0) return fitBudget(wrong, formatAttempt(steps, 'ok', p.target), o.budget);
    wrong.push(formatAttempt(steps, 'no', p.target));
  }
  return fitBudget(wrong, formatAttempt(answer, 'ok', p.target), o.budget);
}

export interface SftExample {
  id: string;
  problem: CountdownProblem;
  prompt: string;
  response: string;
}

/**
 * Batch `step` of warm-start examples, a pure function of (seed, step). Problems come from
 * the `train` split only (evaluation and budget-selection problems are other identities,
 * whatever the seed). With several difficulties, each example picks one uniformly.
 */
export function sftBatch(
  seed: number,
  step: number,
  batchSize: number,
  difficulty: Difficulty | readonly Difficulty[],
  opts: Partial<TraceOptions> = {},
): SftExample[] {
  const out: SftExample[] = [];
  for (let i = 0; i < batchSize; i++) {
    const { problem: p, rng } = sftProblem(seed, step, i, batchSize, difficulty);
    out.push({ id: p.id, problem: p, prompt: countdownPrompt(p), response: makeTrace(p, rng, opts) });
  }
  return out;
}

/** The seed warm-start batches derive from: the run seed, or a named stream of it (a second warm-start node must not replay the first one's batches). */
export const sftSeed = (runSeed: number, stream?: string): number => (stream ? deriveSeed(runSeed, 'sft-stream', stream) : runSeed);

/** Problem i of warm-start batch `step` (and the trace's rng, already past the pick): what sftBatch draws. */
export function sftProblem(
  seed: number,
  step: number,
  i: number,
  batchSize: number,
  difficulty: Difficulty | readonly Difficulty[],
): { problem: CountdownProblem; rng: Rng } {
  const ds = Array.isArray(difficulty) ? (difficulty as readonly Difficulty[]) : [difficulty as Difficulty];
  const rng = new Rng(deriveSeed(seed, 'sft-trace', step, i));
  const problem = generateCountdown(deriveSeed(seed, 'sft'), step * batchSize + i, rng.pick(ds), 'train');
  return { problem, rng };
}
