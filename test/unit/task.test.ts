/**
 * The task contract (ml/task.ts, docs/TASKS.md), checked on a small task defined here, two-number
 * addition, and on countdown: problems are a pure function of (seed, index, difficulty, split)
 * and land in the split asked for (content-defined); prompts encode with the shared tokenizer;
 * the grader never throws, rewards exactly the verified answer, and reads the attempt → check
 * → retry shape. Then the new task's prompts go through the sampler and its grades through
 * GRPO's group advantages (Eq. 2.1), the pieces an RL iteration is made of.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { initBackend } from '../../ml/backend';
import { EASY, countdown, formatAttempt, solve, splitOf } from '../../ml/countdown';
import type { CountdownProblem } from '../../ml/countdown';
import { groupAdvantages } from '../../ml/grpo';
import { createPolicy, disposePolicy } from '../../ml/policy';
import { Rng, deriveSeed } from '../../ml/rng';
import { sample } from '../../ml/sampler';
import type { Difficulty, Grade, Problem, Split, Task } from '../../ml/task';
import { BOS, EOS, VOCAB, VOCAB_SIZE, decode, encode } from '../../ml/tokenizer';

/** Content-defined split, as ml/countdown.ts splitOf does it: the problem's identity decides. */
const splitOfSum = (a: number, b: number): Split => {
  const h = deriveSeed('addition-split', `${Math.min(a, b)} ${Math.max(a, b)}`) % 10;
  return h === 0 ? 'eval' : h === 1 ? 'select' : 'train';
};

/** Two-number addition: `count` digits per addend; the response is answers with their checks, `579 ok;`. */
const addition: Task = {
  name: 'addition',
  generate(seed: number, index: number, d: Difficulty, split: Split): Problem {
    const rng = new Rng(deriveSeed(seed, 'addition', index, d.count));
    const lo = d.count === 1 ? 0 : 10 ** (d.count - 1);
    const hi = 10 ** d.count - 1;
    // Draw until the pair belongs to the split asked for: a pure function of the coordinates.
    for (;;) {
      const a = rng.int(lo, hi),
        b = rng.int(lo, hi);
      if (splitOfSum(a, b) === split)
        return { id: `add${d.count}-${split}-${String(index).padStart(6, '0')}`, numbers: [a, b], target: a + b };
    }
  },
  prompt: (p) => `${p.numbers[0]}+${p.numbers[1]}:`,
  verify(p: Problem, response: string, truncated: boolean): Grade {
    const attempts = [...response.matchAll(/(\d+) (ok|no);/g)];
    const wellFormed = response.length > 0 && attempts.map((m) => m[0]).join('') === response;
    const last = attempts.at(-1);
    const base = { wellFormed, truncated, attempts: attempts.length, checks: attempts.length, answer: last ? last[1] : null };
    if (truncated) return { ...base, reward: 0, reason: 'truncated' };
    if (!wellFormed) return { ...base, reward: 0, reason: 'malformed' };
    if (last![2] !== 'ok') return { ...base, reward: 0, reason: 'no-ok' };
    return last![1] === String(p.numbers[0] + p.numbers[1])
      ? { ...base, reward: 1, reason: 'ok' }
      : { ...base, reward: 0, reason: 'wrong-answer' };
  },
};

/** A task with what the contract test needs to know about it: a difficulty, its split rule, a right and a wrong attempt. */
interface Subject<P extends Problem> {
  task: Task<P>;
  d: Difficulty;
  splitOf: (p: P) => Split;
  right: (p: P) => string;
  wrong: (p: P) => string;
}

function checkContract<P extends Problem>({ task, d, splitOf, right, wrong }: Subject<P>): void {
  const rng = new Rng(5);
  for (const split of ['train', 'select', 'eval'] as const) {
    for (let i = 0; i < 12; i++) {
      const p = task.generate(3, i, d, split);
      assert.deepEqual(task.generate(3, i, d, split), p, `${task.name}: pure`);
      assert.equal(splitOf(p), split, `${task.name}: ${p.id} is in the ${split} split`);
      const prompt = task.prompt(p);
      assert.equal(decode(encode(prompt)), prompt, `${task.name}: the prompt encodes`);
      const ok = task.verify(p, right(p), false);
      assert.deepEqual([ok.reward, ok.attempts], [1, 1], `${task.name}: the right answer, checked ok`);
      const retry = task.verify(p, wrong(p) + 'no;' + right(p), false);
      assert.deepEqual(
        [retry.reward, retry.attempts, retry.checks],
        [1, 2, 2],
        `${task.name}: a wrong attempt marked no, then the right one`,
      );
      assert.equal(task.verify(p, wrong(p) + 'ok;', false).reward, 0, `${task.name}: a wrong answer marked ok`);
      assert.equal(task.verify(p, right(p), true).reward, 0, `${task.name}: truncated`);
      // Anything the policy can write is graded, never thrown on.
      for (let k = 0; k < 20; k++) {
        const text = Array.from({ length: rng.int(0, 24) }, () => VOCAB[rng.int(3, VOCAB.length - 1)]).join('');
        const g = task.verify(p, text, false);
        assert.ok(g.reward === 0 || g.reward === 1, `${task.name}: ${JSON.stringify(text)}`);
      }
    }
  }
  assert.notDeepEqual(task.generate(3, 0, d, 'train'), task.generate(3, 1, d, 'train'), `${task.name}: index matters`);
}

/** Countdown's right attempt (the exact solver's) and a wrong one (the first two numbers combined, off target). */
const cdRight = (p: CountdownProblem): string => formatAttempt(solve(p.numbers, p.target, EASY.ops).steps!, 'ok', p.target);
const cdWrong = (p: CountdownProblem): string => {
  const [a, b] = p.numbers;
  const [op, c] = a + b !== p.target ? ['+', a + b] : ['*', a * b];
  return `${a}${op}${b}=${c}>${p.target} `;
};

test('task contract: a new task defined in this file (addition) and countdown', () => {
  checkContract<Problem>({
    task: addition,
    d: { count: 2, min: 0, max: 0, ops: '+' },
    splitOf: (p) => splitOfSum(p.numbers[0], p.numbers[1]),
    right: (p) => `${p.numbers[0] + p.numbers[1]} ok;`,
    wrong: (p) => `${p.numbers[0] + p.numbers[1] + 1} `,
  });
  checkContract<CountdownProblem>({
    task: countdown,
    d: EASY,
    splitOf,
    right: cdRight,
    wrong: cdWrong,
  });
});

test('a new task runs through the sampler and its grades give GRPO group advantages', async () => {
  await initBackend();
  const policy = createPolicy({ vocab: VOCAB_SIZE, layers: 1, dModel: 16, heads: 2, context: 48, seed: 1 });
  try {
    const d = { count: 2, min: 0, max: 0, ops: '+' };
    const problems = [0, 1].map((i) => addition.generate(7, i, d, 'train'));
    const samples = 4;
    const rows = problems.flatMap((p, i) =>
      Array.from({ length: samples }, (_, j) => ({ p, seed: deriveSeed(7, 'sample', 'addition', 0, i, j) })),
    );
    const out = await sample(
      policy,
      rows.map((r) => [BOS, ...encode(addition.prompt(r.p))]),
      { budget: 12, temperature: 1, topP: 1, seeds: rows.map((r) => r.seed), eos: EOS },
    );
    const grades = rows.map((r, k) => addition.verify(r.p, decode(out.responses[k]), out.truncated[k]));
    const rewards = grades.map((g) => g.reward);
    const { adv } = groupAdvantages(rewards, samples);
    assert.equal(adv.length, rows.length);
    // Eq. 2.1: within each prompt's group the advantages sum to zero (all zero when the rewards agree).
    for (let i = 0; i < problems.length; i++)
      assert.ok(Math.abs(adv.slice(i * samples, (i + 1) * samples).reduce((a, b) => a + b, 0)) < 1e-9);
  } finally {
    disposePolicy(policy);
  }
});
