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
}

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
}

export interface Problem {
  /** Stable id, e.g. `cd3-1..9-000042`. */
  id: string;
  numbers: number[];
  target: number;
}

export interface Task<P extends Problem = Problem> {
  readonly name: string;
  /** Problem `index` of a difficulty, as a pure function of the seed. */
  generate(seed: number, index: number, d: Difficulty): P;
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
