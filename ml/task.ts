/**
 * The task interface every environment implements (countdown, multiplication, pk-toy's
 * text-free variant lives in pktoy.ts). Problems are a pure function of (seed, index,
 * difficulty); the verifier recomputes everything itself and never throws.
 */
export interface Difficulty {
  /** How many input numbers (countdown: 3 to 7; multiplication: digits per factor). */
  count: number;
  /** Smallest and largest input number. */
  min: number;
  max: number;
  /** Allowed operations, a subset of '+-*\/'. */
  ops: string;
  /**
   * Countdown: fewest steps any solution needs, as measured by the exact solver (1 = some
   * pair of given numbers already reaches the target). @default 1
   */
  minSteps?: number;
  /** Countdown: every solution must use every number (the same as minSteps = count − 1). @default false */
  useAll?: boolean;
  /** Countdown: some solution needs at most this many steps (solver-measured; an easy set). */
  maxSteps?: number;
}

/**
 * Content-defined data split: a problem's identity (its content, not its index) decides
 * which split it belongs to, so evaluation and budget-selection problems can never be drawn
 * by a training or warm-start generator, however many draws it makes.
 */
export type Split = 'train' | 'select' | 'eval';

export interface Grade {
  /** 1 when the final answer is verified correct, else 0 (truncated → 0). */
  reward: 0 | 1;
  /** The response parsed under the task's grammar. */
  wellFormed: boolean;
  truncated: boolean;
  /** Attempts (generate episodes) and checks (verify episodes) in the response. */
  attempts: number;
  checks: number;
  /** The extracted final answer as text, if any. */
  answer: string | null;
  /** Why the reward is 0, for debugging and metrics (e.g. 'reused-number'). */
  reason: string;
  /** Exact exploration diagnostics, where the task can compute them (countdown). */
  explore?: Explore;
}

/** Why a response stopped: on a true `ok`, on a false `ok`, after a `no` (gave up), cut at the budget, or malformed. */
export type StopReason = 'correct' | 'false_ok' | 'gave_up' | 'truncated' | 'other';

/**
 * Per-response exploration diagnostics from the exact grader (paper §4: the e3 policy
 * chains generate → verify → retry; here each verification is checked against the truth).
 */
export interface Explore {
  /** Complete attempts (each carries a mark), and the marks that match the truth. */
  marks: number;
  marksTrue: number;
  /** Attempts that miss the target, and those of them marked `ok` (false ok). */
  wrong: number;
  falseOk: number;
  /** Attempts that reach the target, and those of them marked `no` (false no). */
  right: number;
  falseNo: number;
  /** Distinct attempts (normalised expressions) and attempts equal to an earlier one. */
  unique: number;
  repeats: number;
  /** Target copies written before a mark, and those equal to the prompt's target. */
  copies: number;
  copiesTrue: number;
  stop: StopReason;
}

export interface Problem {
  /** Stable id, e.g. `cd3-1..9-000042`. */
  id: string;
  numbers: number[];
  target: number;
}

export interface Task<P extends Problem = Problem> {
  readonly name: string;
  /** Problem `index` of a difficulty in a split, as a pure function of the seed. */
  generate(seed: number, index: number, d: Difficulty, split: Split): P;
  /** Prompt text (encoded with ml/tokenizer). */
  prompt(p: P): string;
  /** Grade a response text (without the prompt). Never throws. */
  verify(p: P, response: string, truncated: boolean): Grade;
  /**
   * Tool-computed mode: given the response so far, the text the environment writes next
   * (e.g. the result after `a*b=`), or '' when the policy continues. Forced tokens are
   * excluded from the policy-gradient loss.
   */
  forced?(p: P, responseSoFar: string): string;
}
