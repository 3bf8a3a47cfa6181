/**
 * n-digit × n-digit multiplication, the paper's contrast task (§3): no chain asymmetry,
 * because checking a product is as hard as computing it, so e3's in-context search should
 * not help here the way it does on countdown.
 *
 * Prompt:   `123*456:`
 * Response: attempt { attempt } then <eos>, attempt := digits ' ' ('ok' | 'no') ';'
 *   e.g. `56078 no;56088 ok;` — answers only, the same attempt/check shape as countdown so
 *   the two tasks share a sampler and metrics. The last attempt, marked ok, is the answer.
 * Factors have at most 7 digits so every product (< 10^14) is an exact double; the
 * grader still compares in BigInt and flags digit strings over 15 characters as 'huge'.
 */
import { Rng, deriveSeed } from './rng';
import type { Difficulty, Grade, Problem, Task } from './task';
import { InvalidArgumentError } from './errors';

export const MUL_MAX_DIGITS = 7;
const ANSWER_MAX_DIGITS = 15;

/** Presets: `count` is the digits per factor; min, max and ops are not used. */
export const MUL2: Difficulty = { count: 2, min: 0, max: 0, ops: '*' };
export const MUL3: Difficulty = { count: 3, min: 0, max: 0, ops: '*' };
export const MUL5: Difficulty = { count: 5, min: 0, max: 0, ops: '*' };

export function generateMultiplication(seed: number, index: number, d: Difficulty): Problem {
  const n = d.count;
  if (!Number.isInteger(n) || n < 1 || n > MUL_MAX_DIGITS)
    throw new InvalidArgumentError(`multiplication: count (digits) must be 1..${MUL_MAX_DIGITS}, got ${n}`);
  const rng = new Rng(deriveSeed(seed, 'multiplication', index, n));
  const lo = n === 1 ? 1 : 10 ** (n - 1);
  const hi = 10 ** n - 1;
  const a = rng.int(lo, hi),
    b = rng.int(lo, hi);
  return { id: `mul${n}-${String(index).padStart(6, '0')}`, numbers: [a, b], target: a * b };
}

export function verifyMultiplication(p: Problem, response: string, truncated: boolean): Grade {
  const attempts: Array<{ answer: string; mark: 'ok' | 'no' }> = [];
  const re = /(\d+) (ok|no);/y;
  let pos = 0;
  let m: RegExpExecArray | null;
  while (pos < response.length && (m = re.exec(response)) !== null) {
    attempts.push({ answer: m[1], mark: m[2] as 'ok' | 'no' });
    pos = re.lastIndex;
  }
  const partial = pos < response.length;
  const last = attempts.at(-1) ?? null;
  const base = {
    wellFormed: !partial && response.length > 0,
    truncated,
    attempts: attempts.length + (partial ? 1 : 0),
    checks: attempts.length,
    answer: last ? last.answer : null,
  };
  const fail = (reason: string): Grade => ({ ...base, reward: 0, reason });
  if (truncated) return fail('truncated');
  if (response.length === 0) return fail('empty');
  if (partial) return fail('malformed');
  if (attempts.some((a) => a.answer.length > ANSWER_MAX_DIGITS)) return fail('huge');
  if (last!.mark !== 'ok') return fail('no-ok');
  const right = BigInt(p.numbers[0]) * BigInt(p.numbers[1]);
  return BigInt(last!.answer) === right ? { ...base, reward: 1, reason: 'ok' } : fail('wrong-answer');
}

export const multiplication: Task = {
  name: 'multiplication',
  generate: generateMultiplication,
  prompt: (p) => `${p.numbers[0]}*${p.numbers[1]}:`,
  verify: verifyMultiplication,
};
