/**
 * Synthetic warm-start (SFT) traces for countdown: attempt → check → retry … → answer.
 * A warm-started model should carry the verification asymmetry the e3 recipe chains
 * (paper §3): checking an attempt (compare its last result with the target) is easy,
 * generating a correct one is hard. So a trace is a geometric number of wrong attempts,
 * each legal with correct arithmetic but ending off-target and marked `no`, then one
 * correct attempt from the solver marked `ok`. Every mark agrees with the truth: the
 * trace teaches checking, never a wrong check.
 */
import { Rng, deriveSeed } from './rng';
import { encode } from './tokenizer';
import type { Difficulty } from './task';
import { type CountdownProblem, type Op, type Step, INTERMEDIATE_CAP, apply, countdownPrompt, formatAttempt, generateCountdown, solve } from './countdown';

export interface TraceOptions {
  /** Mean number of wrong attempts before the answer (geometric). @default 1.5 */
  meanWrong: number;
  /** Most attempts in one trace, the correct one included. @default 8 */
  maxAttempts: number;
  /** Most response tokens, <eos> included; wrong attempts are dropped to fit. @default 256 */
  budget: number;
}

export const TRACE_DEFAULTS: TraceOptions = { meanWrong: 1.5, maxAttempts: 8, budget: 256 };

/** A random legal attempt (operands available, exact positive arithmetic) that misses the target, or null. */
export function wrongAttempt(p: CountdownProblem, rng: Rng): Step[] | null {
  const ops = (['+', '-', '*', '/'] as Op[]).filter((o) => p.ops.includes(o));
  for (let tries = 0; tries < 50; tries++) {
    let pool = [...p.numbers];
    const n = rng.int(1, p.numbers.length - 1);
    const steps: Step[] = [];
    while (steps.length < n) {
      const i = rng.int(0, pool.length - 1);
      let j = rng.int(0, pool.length - 2);
      if (j >= i) j++;
      let step: Step | null = null;
      for (const op of rng.shuffle([...ops])) {
        const r = apply(pool[i], op, pool[j]);
        if ('value' in r && r.value > 0 && r.value <= INTERMEDIATE_CAP && r.value !== p.target) {
          step = { a: pool[i], op, b: pool[j], c: r.value };
          break;
        }
      }
      if (!step) break;
      steps.push(step);
      pool = [...pool.filter((_, t) => t !== i && t !== j), step.c];
    }
    if (steps.length === n) return steps;
  }
  return null;
}

const tokens = (text: string): number => encode(text).length;

/**
 * One trace's response text (up to where <eos> goes). Wrong attempts are distinct; when
 * the trace would exceed `budget` tokens (+1 for <eos>), wrong attempts are dropped from
 * the end. The correct attempt alone is returned even if it exceeds the budget.
 */
export function makeTrace(p: CountdownProblem, rng: Rng, opts: Partial<TraceOptions> = {}): string {
  const o = { ...TRACE_DEFAULTS, ...opts };
  const q = o.meanWrong / (1 + o.meanWrong); // geometric on {0,1,...} with mean meanWrong
  let nWrong = 0;
  while (nWrong < o.maxAttempts - 1 && rng.next() < q) nWrong++;
  const wrong: string[] = [];
  for (let k = 0; k < nWrong * 3 && wrong.length < nWrong; k++) {
    const steps = wrongAttempt(p, rng);
    if (!steps) break;
    const text = formatAttempt(steps, 'no');
    if (!wrong.includes(text)) wrong.push(text);
  }
  const found = solve(p.numbers, p.target, p.ops, { rng, maxNodes: 20_000 }).steps;
  const right = formatAttempt(found ?? p.solution, 'ok');
  let total = tokens(right) + 1;
  const kept: string[] = [];
  for (const w of wrong) {
    const t = tokens(w);
    if (total + t > o.budget) break;
    total += t;
    kept.push(w);
  }
  return kept.join('') + right;
}

export interface SftExample {
  id: string;
  problem: CountdownProblem;
  prompt: string;
  response: string;
}

/**
 * Batch `step` of warm-start examples, a pure function of (seed, step). Problems come
 * from their own seed stream (`deriveSeed(seed, 'sft')`) so they do not coincide with
 * problems an RL or eval run draws from `seed`. With several difficulties, each example
 * picks one uniformly.
 */
export function sftBatch(seed: number, step: number, batchSize: number, difficulty: Difficulty | readonly Difficulty[], opts: Partial<TraceOptions> = {}): SftExample[] {
  const ds = Array.isArray(difficulty) ? (difficulty as readonly Difficulty[]) : [difficulty as Difficulty];
  const problemSeed = deriveSeed(seed, 'sft');
  const out: SftExample[] = [];
  for (let i = 0; i < batchSize; i++) {
    const rng = new Rng(deriveSeed(seed, 'sft-trace', step, i));
    const p = generateCountdown(problemSeed, step * batchSize + i, rng.pick(ds));
    out.push({ id: p.id, problem: p, prompt: countdownPrompt(p), response: makeTrace(p, rng, opts) });
  }
  return out;
}
