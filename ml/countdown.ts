/**
 * Countdown (paper §3-6): reach a target with + - * / over given numbers. Verifying an
 * attempt is easy (recompute a few steps, compare with the target), finding one is hard:
 * the asymmetry e3 chains into in-context search.
 *
 * Prompt:   `3 5 7>22:`                       numbers, '>', target, ':'
 * Response: attempt { attempt } then <eos>, where
 *   attempt := step {',' step} ['>' target] ' ' ('ok' | 'no') ';'
 *   step    := a op b '=' c        a, b, c non-negative integers written in digits
 *   e.g. `3+5=8,8*7=56>22 no;3*5=15,15+7=22>22 ok;`
 * The answer is the LAST attempt, which must be marked `ok`. The grader recomputes every
 * step with exact integer arithmetic and never trusts the written c. The optional `>target`
 * is the policy's own copy of the target, written next to the attempt's last result so
 * that the check (the mark) compares two adjacent numbers instead of a result with a
 * target far back in the prompt; the mark stays the policy's decision.
 *
 * Data (paper §3-6 use 3 to 7 numbers): a problem's identity is its content (sorted
 * numbers + target) and its split (train / select / eval) is a hash of that identity, so
 * evaluation data is disjoint from training data by construction. Difficulty is measured
 * by the solver: `minSteps` is the fewest steps any solution needs (a difficulty's
 * `minSteps` / `useAll` keep only problems that need at least that many, `maxSteps` only
 * those some solution solves in at most that many).
 *
 * Tool-computed mode (`countdownTool`): after `a op b=` the environment writes the exact
 * result, and after a result's `>` it writes the target (so in this mode the check
 * compares two numbers the environment wrote; deciding `ok` or `no` stays the policy's).
 * It writes no result when the result is not a non-negative integer (inexact division,
 * division by zero, negative difference) or an operand is huge; the policy then
 * writes its own c and the grader rejects the step ('non-integer', 'div-zero',
 * 'wrong-result'), so the tool never produces text the grammar cannot hold.
 */
import { Rng, deriveSeed } from './rng';
import type { Difficulty, Explore, Grade, Problem, Split, StopReason, Task } from './task';
import { InvalidArgumentError } from './errors';

export type Op = '+' | '-' | '*' | '/';
export interface Step {
  a: number;
  op: Op;
  b: number;
  /** The result as written (in a parsed response) or as computed (solver, generator). */
  c: number;
}

/** What grading needs of a problem. */
export interface ProblemCore {
  numbers: readonly number[];
  target: number;
  ops: string;
}

export interface CountdownProblem extends Problem {
  /** Allowed operations, a subset of '+-*\/'. */
  ops: string;
  /** One known solution (the generator's construction); reaches `target`. */
  solution: Step[];
  /** Fewest steps any solution needs (solver-measured; from 6 numbers, where the search is capped, a lower bound). */
  minSteps: number;
  split: Split;
}

/** Difficulty presets (paper: 3 to 7 numbers, difficulty grows with the count). */
export const EASY: Difficulty = { count: 3, min: 1, max: 9, ops: '+-*' };
export const MEDIUM: Difficulty = { count: 4, min: 1, max: 20, ops: '+-*/' };
export const HARD: Difficulty = { count: 5, min: 1, max: 30, ops: '+-*/' };
export const EXTREME: Difficulty = { count: 7, min: 1, max: 50, ops: '+-*/' };
export const PRESETS: Readonly<Record<string, Difficulty>> = { easy: EASY, medium: MEDIUM, hard: HARD, extreme: EXTREME };

/** Largest target the generator makes. */
export const TARGET_CAP = 1000;
/** Largest intermediate the generator and the solver consider (keeps digit strings short). */
export const INTERMEDIATE_CAP = 1_000_000;
/** Digit strings longer than this, or results above 10^this, are graded 'huge'. */
export const MAX_DIGITS = 12;
const HUGE = 10n ** BigInt(MAX_DIGITS);
/** The solver is exhaustive up to 5 numbers; from 6 on it stops after this many nodes. */
export const SOLVER_NODE_CAP = 200_000;

const ALL_OPS: readonly Op[] = ['+', '-', '*', '/'];

function checkDifficulty(d: Difficulty): void {
  const ok =
    Number.isInteger(d.count) &&
    d.count >= 2 &&
    d.count <= 9 &&
    Number.isInteger(d.min) &&
    Number.isInteger(d.max) &&
    d.min >= 1 &&
    d.min <= d.max &&
    d.max <= INTERMEDIATE_CAP &&
    d.ops.length > 0 &&
    [...d.ops].every((c) => (ALL_OPS as readonly string[]).includes(c)) &&
    new Set(d.ops).size === d.ops.length;
  const steps = d.minSteps ?? 1;
  const stepsOk =
    Number.isInteger(steps) &&
    steps >= 1 &&
    steps <= d.count - 1 &&
    (d.maxSteps === undefined || (Number.isInteger(d.maxSteps) && d.maxSteps >= requiredSteps(d)));
  if (!ok || !stepsOk)
    throw new InvalidArgumentError(
      `countdown: bad difficulty ${JSON.stringify(d)} (count 2..9, 1 <= min <= max, ops a subset of '+-*/', 1 <= minSteps <= count - 1, maxSteps >= minSteps)`,
    );
}

/** Fewest steps a generated problem of difficulty d must need (useAll: every number, so count − 1). */
export const requiredSteps = (d: Difficulty): number => (d.useAll ? d.count - 1 : (d.minSteps ?? 1));

/** A problem's identity: the sorted multiset of its numbers and its target (content, not index). */
export const problemIdentity = (p: { numbers: readonly number[]; target: number }): string =>
  `${[...p.numbers].sort((a, b) => a - b).join(' ')}>${p.target}`;

/**
 * The content-defined split of a problem: identities hashing to 0 mod 10 are `eval`, to 1
 * are `select` (budget selection, Eq. 6.1), the rest `train` (RL stages and warm-start
 * traces). Fixed forever: changing it would mix evaluation problems into training.
 */
export function splitOf(p: { numbers: readonly number[]; target: number }): Split {
  const h = deriveSeed('countdown-split', problemIdentity(p)) % 10;
  return h === 0 ? 'eval' : h === 1 ? 'select' : 'train';
}

/**
 * Exact result of `a op b` as a non-negative integer, or why not. Works in BigInt so no
 * product or quotient ever rounds; results above 10^MAX_DIGITS are 'huge'.
 */
export function apply(a: number, op: Op, b: number): { value: number } | { error: 'div-zero' | 'non-integer' | 'negative' | 'huge' } {
  const x = BigInt(a),
    y = BigInt(b);
  let r: bigint;
  if (op === '+') r = x + y;
  else if (op === '-') r = x - y;
  else if (op === '*') r = x * y;
  else {
    if (y === 0n) return { error: 'div-zero' };
    if (x % y !== 0n) return { error: 'non-integer' };
    r = x / y;
  }
  if (r < 0n) return { error: 'negative' };
  if (r > HUGE) return { error: 'huge' };
  return { value: Number(r) };
}

/** The value a step yields under the generator's rules (positive, exact, bounded), else null. */
function usefulResult(a: number, op: Op, b: number): number | null {
  const r = apply(a, op, b);
  if (!('value' in r) || r.value <= 0 || r.value > INTERMEDIATE_CAP) return null;
  // x+0, x-0, x*1, x/1 give back an operand: never needed, since numbers may go unused.
  if ((op === '*' || op === '/') && b === 1) return null;
  if (op === '*' && a === 1) return null;
  return r.value;
}

export const formatStep = (s: Step): string => `${s.a}${s.op}${s.b}=${s.c}`;
/** One attempt as text; with `target`, the policy's copy of it goes before the mark (see header). */
export const formatAttempt = (steps: readonly Step[], mark: 'ok' | 'no', target?: number): string =>
  `${steps.map(formatStep).join(',')}${target === undefined ? '' : `>${target}`} ${mark};`;

export interface SolveResult {
  /** A solution (steps whose last result is the target), or null. */
  steps: Step[] | null;
  nodes: number;
  /** True when the search stopped at the node cap, so null does not mean unsolvable. */
  capped: boolean;
}

/**
 * Exhaustive search: repeatedly combine two remaining values with an allowed op (positive
 * exact integer results up to INTERMEDIATE_CAP). Dead multisets are memoised. With `rng`
 * the pair and op order is shuffled so repeated calls give varied solutions (traces).
 */
export function solve(numbers: readonly number[], target: number, ops: string, opts: { rng?: Rng; maxNodes?: number } = {}): SolveResult {
  const rng = opts.rng;
  const maxNodes = opts.maxNodes ?? Infinity;
  const allowed = ALL_OPS.filter((o) => ops.includes(o));
  const dead = new Set<string>();
  const path: Step[] = [];
  let nodes = 0;
  let capped = false;

  const dfs = (pool: number[]): boolean => {
    if (++nodes > maxNodes) {
      capped = true;
      return false;
    }
    const key = [...pool].sort((x, y) => x - y).join(' ');
    if (dead.has(key)) return false;
    const pairs: Array<[number, number]> = [];
    for (let i = 0; i < pool.length; i++) for (let j = i + 1; j < pool.length; j++) pairs.push([i, j]);
    if (rng) rng.shuffle(pairs);
    const opOrder = rng ? rng.shuffle([...allowed]) : allowed;
    for (const [i, j] of pairs) {
      const rest = pool.filter((_, k) => k !== i && k !== j);
      for (const op of opOrder) {
        let orders: Array<[number, number]> = [
          [pool[i], pool[j]],
          [pool[j], pool[i]],
        ];
        if (op === '+' || op === '*') orders = [rng && rng.next() < 0.5 ? orders[1] : orders[0]];
        for (const [a, b] of orders) {
          const c = usefulResult(a, op, b);
          if (c === null) continue;
          path.push({ a, op, b, c });
          if (c === target) return true;
          if (rest.length > 0 && dfs([...rest, c])) return true;
          path.pop();
          if (capped) return false;
        }
      }
    }
    dead.add(key);
    return false;
  };

  const found = dfs([...numbers]);
  return { steps: found ? dropUnusedSteps({ numbers, target, ops }, path) : null, nodes, capped };
}

/**
 * Fewest steps any solution needs (iterative deepening over the same moves as `solve`), or
 * null when there is none. `capped` when the search hit `maxNodes` (per depth): `steps` is
 * then null and `atLeast` the first depth that was not fully refuted (every shallower depth
 * was searched exhaustively, so any solution needs at least that many steps).
 */
export function minSolutionSteps(
  numbers: readonly number[],
  target: number,
  ops: string,
  opts: { maxNodes?: number } = {},
): { steps: number | null; capped: boolean; atLeast: number } {
  const allowed = ALL_OPS.filter((o) => ops.includes(o));
  const maxNodes = opts.maxNodes ?? Infinity;
  let capped = false;
  for (let depth = 1; depth < numbers.length; depth++) {
    const dead = new Set<string>();
    let nodes = 0;
    const reach = (pool: number[], left: number): boolean => {
      if (++nodes > maxNodes) {
        capped = true;
        return false;
      }
      const key = `${left}|${[...pool].sort((x, y) => x - y).join(' ')}`;
      if (dead.has(key)) return false;
      for (let i = 0; i < pool.length; i++) {
        for (let j = 0; j < pool.length; j++) {
          if (i === j) continue;
          for (const op of allowed) {
            if ((op === '+' || op === '*') && j < i) continue;
            const c = usefulResult(pool[i], op, pool[j]);
            if (c === null) continue;
            if (c === target) return true;
            if (left > 1 && pool.length > 2 && reach([...pool.filter((_, k) => k !== i && k !== j), c], left - 1)) return true;
            if (capped) return false;
          }
        }
      }
      dead.add(key);
      return false;
    };
    if (reach([...numbers], depth)) return { steps: depth, capped, atLeast: depth };
    if (capped) return { steps: null, capped, atLeast: depth };
  }
  return { steps: null, capped, atLeast: numbers.length };
}

/**
 * Remove steps the answer does not need (depth-first search can combine two numbers and
 * then never use the result): each step whose removal leaves a correct attempt goes.
 */
export function dropUnusedSteps(p: ProblemCore, steps: readonly Step[]): Step[] {
  let cur = [...steps];
  // Rescan after each removal: dropping a later step can free an earlier one.
  for (let i = 0; i < cur.length - 1;) {
    const trial = cur.filter((_, k) => k !== i);
    if (gradeAttempt(p, trial).correct) {
      cur = trial;
      i = 0;
    } else i++;
  }
  return cur;
}

/** Node cap for confirming a generated problem: exhaustive up to 5 numbers (see header). */
const confirmCap = (count: number): number => (count >= 6 ? SOLVER_NODE_CAP : Infinity);

/**
 * Problem `index` of difficulty `d` in split `split`, a pure function of (seed, index, d,
 * split). The target is the value of a random expression over all numbers (half the time)
 * or a random subset (of at least minSteps + 1), with positive integer intermediates;
 * candidates whose target is above TARGET_CAP or equal to an input number, whose identity
 * hashes to another split (`splitOf`), or that a shorter solution than `requiredSteps(d)`
 * solves are redrawn. The fewest steps are measured exhaustively up to 5 numbers; from 6
 * numbers the search is capped at SOLVER_NODE_CAP nodes and, if it hits the cap, the
 * construction itself is the proof of solvability (and minSteps > 1 cannot be confirmed).
 */
export function generateCountdown(seed: number, index: number, d: Difficulty, split: Split): CountdownProblem {
  checkDifficulty(d);
  const need = requiredSteps(d);
  // maxSteps joins the seed only when set, so adding the field left the draws of every difficulty without it unchanged.
  const rng = new Rng(
    d.maxSteps === undefined
      ? deriveSeed(seed, 'countdown', split, index, d.count, d.min, d.max, d.ops, need)
      : deriveSeed(seed, 'countdown', split, index, d.count, d.min, d.max, d.ops, need, 'max', d.maxSteps),
  );
  const allowed = ALL_OPS.filter((o) => d.ops.includes(o));
  for (let tries = 0; tries < 100_000; tries++) {
    const numbers = Array.from({ length: d.count }, () => rng.int(d.min, d.max));
    const k = rng.next() < 0.5 ? d.count : rng.int(Math.max(2, need + 1), d.count);
    let pool = rng.shuffle([...numbers]).slice(0, k);
    const steps: Step[] = [];
    while (pool.length > 1) {
      const i = rng.int(0, pool.length - 1);
      let j = rng.int(0, pool.length - 2);
      if (j >= i) j++;
      let step: Step | null = null;
      for (const op of rng.shuffle([...allowed])) {
        const c = usefulResult(pool[i], op, pool[j]);
        if (c !== null) {
          step = { a: pool[i], op, b: pool[j], c };
          break;
        }
      }
      if (!step) break;
      steps.push(step);
      pool = [...pool.filter((_, t) => t !== i && t !== j), step.c];
    }
    if (pool.length !== 1) continue;
    const target = pool[0];
    if (target > TARGET_CAP || numbers.includes(target)) continue;
    if (splitOf({ numbers, target }) !== split) continue;
    const fewest = minSolutionSteps(numbers, target, d.ops, { maxNodes: confirmCap(d.count) });
    if (fewest.steps === null && !fewest.capped)
      throw new Error(`countdown: construction ${steps.map(formatStep).join(',')} not confirmed by the solver`);
    // Capped (6+ numbers): every depth below `atLeast` was refuted exhaustively and the
    // construction proves a solution exists, so `atLeast` is a sound lower bound to filter on.
    const minSteps = fewest.steps ?? fewest.atLeast;
    if (minSteps < need) continue;
    // An easy set needs the exact count: a capped search (6+ numbers) cannot confirm it.
    if (d.maxSteps !== undefined && (fewest.steps === null || minSteps > d.maxSteps)) continue;
    const id = `cd${d.count}-${d.min}..${d.max}-${d.ops}${need > 1 ? `-s${need}` : ''}${d.maxSteps !== undefined ? `-m${d.maxSteps}` : ''}-${split}-${String(index).padStart(6, '0')}`;
    return { id, numbers, target, ops: d.ops, solution: steps, minSteps, split };
  }
  throw new InvalidArgumentError(
    `countdown: no ${split} problem found for ${JSON.stringify(d)} (seed ${seed}, index ${index}): is minSteps reachable with these numbers?`,
  );
}

/** What a set of problems is made of: share needing 1, 2, 3… steps at least, and needing every number. */
export function difficultyProfile(ps: readonly CountdownProblem[]): {
  problems: number;
  minSteps: Record<number, number>;
  needsAll: number;
  meanMinSteps: number;
} {
  const minSteps: Record<number, number> = {};
  for (const p of ps) minSteps[p.minSteps] = (minSteps[p.minSteps] ?? 0) + 1 / ps.length;
  const needsAll = ps.filter((p) => p.minSteps === p.numbers.length - 1).length / (ps.length || 1);
  const meanMinSteps = ps.reduce((a, p) => a + p.minSteps, 0) / (ps.length || 1);
  return { problems: ps.length, minSteps, needsAll, meanMinSteps };
}

// ---------------------------------------------------------------------------------------
// Parsing and grading

export interface ParsedAttempt {
  steps: Step[];
  mark: 'ok' | 'no';
  /** The attempt's steps as written, without the target copy and the mark (`3*5=15,15+7=22`). */
  text: string;
  /** The target the policy copied before its mark (`>22`), if it wrote one. */
  copied?: number;
}

export interface ParseResult {
  /** Complete attempts (each with its mark and ';'). */
  attempts: ParsedAttempt[];
  /** Whether text remains after the last complete attempt (a started attempt). */
  partial: boolean;
  /** null when the whole text parses; else 'malformed' or 'huge' (a digit string too long). */
  error: 'malformed' | 'huge' | null;
}

/** Parse a response under the grammar in the header. Never throws. */
export function parseResponse(text: string): ParseResult {
  const attempts: ParsedAttempt[] = [];
  let pos = 0;
  let error: ParseResult['error'] = null;
  const isDigit = (ch: string | undefined): boolean => ch !== undefined && ch >= '0' && ch <= '9';
  const num = (): number | null => {
    const start = pos;
    while (isDigit(text[pos])) pos++;
    const len = pos - start;
    if (len === 0) return null;
    if (len > MAX_DIGITS) {
      error = 'huge';
      return null;
    }
    return Number(text.slice(start, pos));
  };
  while (pos < text.length) {
    const start = pos;
    const steps: Step[] = [];
    let mark: 'ok' | 'no' | null = null;
    let stepsEnd = pos;
    let copied: number | undefined;
    for (;;) {
      const a = num();
      if (a === null) break;
      const op = text[pos];
      if (op !== '+' && op !== '-' && op !== '*' && op !== '/') break;
      pos++;
      const b = num();
      if (b === null || text[pos] !== '=') break;
      pos++;
      const c = num();
      if (c === null) break;
      steps.push({ a, op, b, c });
      if (text[pos] === ',') {
        pos++;
        continue;
      }
      stepsEnd = pos;
      if (text[pos] === '>') {
        pos++;
        const t = num();
        if (t === null) break;
        copied = t;
      }
      if (text[pos] === ' ' && (text.startsWith('ok;', pos + 1) || text.startsWith('no;', pos + 1))) {
        mark = text.slice(pos + 1, pos + 3) as 'ok' | 'no';
        pos += 4;
      }
      break;
    }
    if (mark === null) {
      return { attempts, partial: true, error: error ?? 'malformed' };
    }
    attempts.push({ steps, mark, text: text.slice(start, stepsEnd), ...(copied === undefined ? {} : { copied }) });
  }
  return { attempts, partial: false, error: null };
}

/**
 * Grade one attempt's steps against the problem, ignoring its mark. Operands must come
 * from the multiset of unused given numbers and unused earlier results (the two are
 * interchangeable: a value used from either leaves the same multiset). Every result is
 * recomputed exactly and must equal the written c; the last must equal the target.
 * Reasons: 'ok', 'bad-op', 'foreign-number' (never available), 'reused-number' (a given
 * number used more often than it is given), 'reused-result' (an earlier result used
 * twice), 'div-zero', 'non-integer', 'huge', 'wrong-result', 'wrong-target'.
 */
export function gradeAttempt(p: ProblemCore, steps: readonly Step[]): { correct: boolean; reason: string; value: number | null } {
  const avail = new Map<number, number>();
  const add = (v: number): void => void avail.set(v, (avail.get(v) ?? 0) + 1);
  for (const n of p.numbers) add(n);
  const results = new Set<number>();
  let value: number | null = null;
  if (steps.length === 0) return { correct: false, reason: 'empty', value };
  for (const s of steps) {
    if (!p.ops.includes(s.op)) return { correct: false, reason: 'bad-op', value };
    for (const v of [s.a, s.b]) {
      const left = avail.get(v) ?? 0;
      if (left === 0) {
        const reason = p.numbers.includes(v) ? 'reused-number' : results.has(v) ? 'reused-result' : 'foreign-number';
        return { correct: false, reason, value };
      }
      avail.set(v, left - 1);
    }
    const r = apply(s.a, s.op, s.b);
    if ('error' in r) {
      // A negative difference is not a writable c: the written c is wrong.
      return { correct: false, reason: r.error === 'negative' ? 'wrong-result' : r.error, value };
    }
    if (r.value !== s.c) return { correct: false, reason: 'wrong-result', value };
    value = r.value;
    results.add(value);
    add(value);
  }
  if (value !== p.target) return { correct: false, reason: 'wrong-target', value };
  return { correct: true, reason: 'ok', value };
}

/** An attempt as a normalised expression: operands of + and * in order, so `3+5` and `5+3` are one attempt. */
export const normalizeAttempt = (steps: readonly Step[]): string =>
  steps
    .map((s) => ((s.op === '+' || s.op === '*') && s.a > s.b ? { ...s, a: s.b, b: s.a } : s))
    .map(formatStep)
    .join(',');

/**
 * Exact exploration diagnostics of one response (see Explore): each mark against the truth,
 * distinct and repeated attempts, target copies, and why the response stopped.
 */
export function exploreResponse(p: ProblemCore, parsed: ParseResult, responseLength: number, truncated: boolean): Explore {
  const e: Explore = {
    marks: 0,
    marksTrue: 0,
    wrong: 0,
    falseOk: 0,
    right: 0,
    falseNo: 0,
    unique: 0,
    repeats: 0,
    copies: 0,
    copiesTrue: 0,
    stop: 'other',
  };
  const seen = new Set<string>();
  let lastCorrect = false;
  for (const a of parsed.attempts) {
    const correct = gradeAttempt(p, a.steps).correct;
    lastCorrect = correct;
    e.marks++;
    if ((a.mark === 'ok') === correct) e.marksTrue++;
    if (correct) {
      e.right++;
      if (a.mark === 'no') e.falseNo++;
    } else {
      e.wrong++;
      if (a.mark === 'ok') e.falseOk++;
    }
    const key = normalizeAttempt(a.steps);
    if (seen.has(key)) e.repeats++;
    else seen.add(key);
    if (a.copied !== undefined) {
      e.copies++;
      if (a.copied === p.target) e.copiesTrue++;
    }
  }
  e.unique = seen.size;
  const last = parsed.attempts[parsed.attempts.length - 1];
  let stop: StopReason;
  if (truncated) stop = 'truncated';
  else if (parsed.error !== null || !last || responseLength === 0) stop = 'other';
  else if (last.mark === 'no') stop = 'gave_up';
  else stop = lastCorrect ? 'correct' : 'false_ok';
  e.stop = stop;
  return e;
}

/** The countdown grade (see Task.verify). Reward 1 only for a well-formed, untruncated response whose last attempt is marked ok and is correct. */
export function verifyCountdown(p: CountdownProblem, response: string, truncated: boolean): Grade {
  try {
    const parsed = parseResponse(response);
    const attempts = parsed.attempts.length + (parsed.partial ? 1 : 0);
    const checks = parsed.attempts.length;
    const last = parsed.attempts.length > 0 ? parsed.attempts[parsed.attempts.length - 1] : null;
    const explore = exploreResponse(p, parsed, response.length, truncated);
    const base = {
      wellFormed: parsed.error === null && response.length > 0,
      truncated,
      attempts,
      checks,
      answer: last ? last.text : null,
      explore,
    };
    const fail = (reason: string): Grade => ({ ...base, reward: 0, reason });
    if (truncated) return fail('truncated');
    if (response.length === 0) return fail('empty');
    if (parsed.error !== null) return fail(parsed.error);
    if (!last) return fail('empty');
    if (last.mark !== 'ok') return fail('no-ok');
    const g = gradeAttempt(p, last.steps);
    return g.correct ? { ...base, reward: 1, reason: 'ok' } : fail(g.reason);
  } catch {
    return { reward: 0, wellFormed: false, truncated, attempts: 0, checks: 0, answer: null, reason: 'grader-error' };
  }
}

export const countdownPrompt = (p: Problem): string => `${p.numbers.join(' ')}>${p.target}:`;

/**
 * Tool-computed mode: the exact result after `a op b=` (see header for when it is ''), and
 * the target after a result's `>` (the policy asks to check; the environment shows the
 * target next to the result; the mark that follows is the policy's own).
 */
export function forcedCountdown(p: CountdownProblem, soFar: string): string {
  if (/=\d+>$/.test(soFar)) return String(p.target);
  const m = /(?:^|[,;])(\d+)([-+*/])(\d+)=$/.exec(soFar);
  if (!m || m[1].length > MAX_DIGITS || m[3].length > MAX_DIGITS) return '';
  const r = apply(Number(m[1]), m[2] as Op, Number(m[3]));
  return 'value' in r ? String(r.value) : '';
}

export function makeCountdown(opts: { toolArithmetic: boolean }): Task<CountdownProblem> {
  const task: Task<CountdownProblem> = {
    name: opts.toolArithmetic ? 'countdown-tool' : 'countdown',
    generate: generateCountdown,
    prompt: countdownPrompt,
    verify: verifyCountdown,
  };
  if (opts.toolArithmetic) task.forced = forcedCountdown;
  return task;
}

export const countdown = makeCountdown({ toolArithmetic: false });
export const countdownTool = makeCountdown({ toolArithmetic: true });
