/**
 * A task from outside ml/ (docs/TASKS.md "Your own task"): reverse a number's digits. The
 * module registers it as `reverse` when imported; a worker imports it when E3_TASK_MODULES
 * names this file. Prompt `314:`, response `314 no;413 ok;` (attempts closed by a check, the
 * last one `ok` is the answer).
 */
import { Rng, deriveSeed } from '../../ml/rng';
import type { Difficulty, Grade, Problem, Split, Task } from '../../ml/task';
import { registerTask } from '../../ml/tasks';

/** Content-defined split: the digits decide (1 in 10 eval, 1 in 10 select), whatever index drew them. */
export function splitOf(digits: readonly number[]): Split {
  const h = deriveSeed(0, 'reverse-split', digits.join('')) % 10;
  return h === 0 ? 'eval' : h === 1 ? 'select' : 'train';
}

/** Problem `index` of a split: `count` digits in [min, max] clamped to 1..9, drawn until the digits are in the split. */
export function generateReverse(seed: number, index: number, d: Difficulty, split: Split): Problem {
  const lo = Math.min(9, Math.max(1, d.min));
  const hi = Math.max(lo, Math.min(9, d.max));
  const rng = new Rng(deriveSeed(seed, 'reverse', index));
  for (;;) {
    const digits = Array.from({ length: d.count }, () => rng.int(lo, hi));
    if (splitOf(digits) !== split) continue;
    return { id: `rev${d.count}-${digits.join('')}`, numbers: digits, target: Number([...digits].reverse().join('')) };
  }
}

export function verifyReverse(p: Problem, response: string, truncated: boolean): Grade {
  const attempts: Array<{ answer: string; mark: string }> = [];
  const re = /(\d+) (ok|no);/y;
  let pos = 0;
  let m: RegExpExecArray | null;
  while (pos < response.length && (m = re.exec(response)) !== null) {
    attempts.push({ answer: m[1], mark: m[2] });
    pos = re.lastIndex;
  }
  const partial = pos < response.length;
  const last = attempts.at(-1);
  const base = {
    wellFormed: !partial && response.length > 0,
    truncated,
    attempts: attempts.length + (partial ? 1 : 0),
    checks: attempts.length,
    answer: last?.answer ?? null,
  };
  const fail = (reason: string): Grade => ({ ...base, reward: 0, reason });
  if (truncated) return fail('truncated');
  if (response.length === 0) return fail('empty');
  if (partial) return fail('malformed');
  if (last!.mark !== 'ok') return fail('no-ok');
  return last!.answer === String(p.target) ? { ...base, reward: 1, reason: 'ok' } : fail('wrong-answer');
}

export const reverse: Task = {
  name: 'reverse',
  generate: generateReverse,
  prompt: (p) => `${p.numbers.join('')}:`,
  verify: verifyReverse,
};

/** Warm-start trace: up to two wrong attempts (the digits as given, or rotated), each marked `no`, then the answer marked `ok`. */
export function reverseTrace(p: Problem, rng: Rng): string {
  const right = String(p.target);
  const wrongs = [p.numbers.join(''), [...p.numbers.slice(1), p.numbers[0]].join('')].filter((w) => w !== right);
  let out = '';
  for (const w of wrongs) {
    if (rng.next() < 0.5) break;
    out += `${w} no;`;
  }
  return `${out}${right} ok;`;
}

registerTask('reverse', { task: () => reverse, trace: (p, rng) => reverseTrace(p, rng) });
