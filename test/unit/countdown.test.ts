import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  type CountdownProblem,
  EASY,
  EXTREME,
  HARD,
  MEDIUM,
  TARGET_CAP,
  countdown,
  countdownTool,
  difficultyProfile,
  exploreResponse,
  formatAttempt,
  forcedCountdown,
  generateCountdown,
  gradeAttempt,
  minSolutionSteps,
  normalizeAttempt,
  parseResponse,
  problemIdentity,
  solve,
  splitOf,
  verifyCountdown,
} from '../../ml/countdown';
import { encode, VOCAB } from '../../ml/tokenizer';
import { Rng } from '../../ml/rng';
import type { Difficulty } from '../../ml/task';

const prob = (numbers: number[], target: number, ops = '+-*/'): CountdownProblem => ({
  id: 't',
  numbers,
  target,
  ops,
  solution: [],
  minSteps: 1,
  split: 'train',
});
const gen = (seed: number, i: number, d: Difficulty) => generateCountdown(seed, i, d, 'train');
const P = prob([3, 5, 7], 22);
const reason = (p: CountdownProblem, r: string, truncated = false): string => verifyCountdown(p, r, truncated).reason;

void test('verify: a correct response after a checked wrong attempt gets reward 1 with its counts', () => {
  const g = verifyCountdown(P, '3+5=8,8*7=56 no;3*5=15,15+7=22 ok;', false);
  const { explore, ...rest } = g;
  assert.deepEqual(rest, { reward: 1, wellFormed: true, truncated: false, attempts: 2, checks: 2, answer: '3*5=15,15+7=22', reason: 'ok' });
  assert.equal(explore?.stop, 'correct');
  // The policy's copy of the target before the mark is part of the grammar and of no consequence to the reward.
  const c = verifyCountdown(P, '3+5=8,8*7=56>22 no;3*5=15,15+7=22>22 ok;', false);
  assert.deepEqual([c.reward, c.answer, c.explore?.copies, c.explore?.copiesTrue], [1, '3*5=15,15+7=22', 2, 2]);
  assert.equal(verifyCountdown(P, '3*5=15,15+7=22>23 ok;', false).reward, 1, 'a miscopied target does not change the truth');
  assert.equal(verifyCountdown(P, '3*5=15,15+7=22> ok;', false).reason, 'malformed');
  assert.equal(verifyCountdown(prob([3, 5, 7], 15), '3*5=15 ok;', false).reward, 1, 'a subset of the numbers may be used');
});

void test('verify: each failure gets reward 0 and its reason', () => {
  const cases: Array<[CountdownProblem, string, string]> = [
    [P, '3*5=15,15+7=23 ok;', 'wrong-result'],
    [P, '3+5=8,8*7=56 ok;', 'wrong-target'],
    [P, '3*5=15,15+7=22 no;', 'no-ok'],
    [P, '3+5=8 8*7=56 ok;', 'malformed'],
    [P, '3*5=15,15+7=22 ok', 'malformed'],
    [P, '3*5=15,15+7=22 ok;;', 'malformed'],
    [P, '3*5=,15+7=22 ok;', 'malformed'],
    [P, 'ok;', 'malformed'],
    [P, ' ', 'malformed'],
    [P, '7+7=14,14+5=19,19+3=22 ok;', 'reused-number'],
    [P, '2+20=22 ok;', 'foreign-number'],
    [prob([3, 5, 6], 22), '3+5=8,8+8=16,16+6=22 ok;', 'reused-result'],
    [prob([4, 4, 7], 7), '4-4=0,7/0=7 ok;', 'div-zero'],
    [P, '7/3=2,2*5=10 ok;', 'non-integer'],
    [P, '3-5=2,2*7=14 ok;', 'wrong-result'], // a negative difference has no writable c
    [prob([3, 5, 7], 22, '+-*'), '7/7=1 ok;', 'bad-op'],
    [P, '3*5=1234567890123,15+7=22 ok;', 'huge'],
    [P, '', 'empty'],
  ];
  for (const [p, r, want] of cases) {
    const g = verifyCountdown(p, r, false);
    assert.equal(g.reason, want, JSON.stringify(r));
    assert.equal(g.reward, 0, JSON.stringify(r));
  }
  // Multiplicity: the same text is correct when 7 is given twice.
  assert.equal(reason(prob([7, 7, 5, 3], 22), '7+7=14,14+5=19,19+3=22 ok;'), 'ok');
});

void test('verify: the written result is never trusted, even when the attempt ends at the target', () => {
  assert.equal(reason(P, '3+5=8,8+7=22 ok;'), 'wrong-result'); // 8+7 is 15
  assert.equal(reason(P, '3+5=22 ok;'), 'wrong-result');
  assert.equal(reason(P, '5*7=22 ok;'), 'wrong-result');
});

void test('verify: huge products are exact, flagged, and never overflow', () => {
  const p = prob([999999, 999999, 999999], 5);
  assert.equal(reason(p, '999999*999999=999998000001,999998000001*999999=1 ok;'), 'huge');
  assert.equal(reason(p, '999999*999999=999998000001,999998000001/999999=999999 ok;'), 'wrong-target');
  assert.equal(reason(P, '9'.repeat(400) + '+1=2 ok;'), 'huge');
  assert.equal(gradeAttempt(prob([999999, 999999], 999998000001), [{ a: 999999, op: '*', b: 999999, c: 999998000001 }]).correct, true);
});

void test('verify: truncation, empty and partial responses', () => {
  const full = verifyCountdown(P, '3*5=15,15+7=22 ok;', true);
  assert.equal(full.reward, 0);
  assert.equal(full.reason, 'truncated');
  const partial = verifyCountdown(P, '3+5=8,8*7=56 no;3*5=15,15+', true);
  assert.deepEqual(
    [partial.reward, partial.reason, partial.attempts, partial.checks, partial.answer],
    [0, 'truncated', 2, 1, '3+5=8,8*7=56'],
  );
  const empty = verifyCountdown(P, '', false);
  assert.deepEqual([empty.attempts, empty.checks, empty.answer, empty.wellFormed], [0, 0, null, false]);
});

void test('verify never throws and rewards only responses whose last attempt re-grades correct', () => {
  const rng = new Rng(5);
  const alphabet = VOCAB.slice(3);
  const p = prob([2, 3, 4], 10);
  let ones = 0;
  for (let i = 0; i < 3000; i++) {
    let r = '';
    const n = rng.int(0, 30);
    for (let k = 0; k < n; k++) r += rng.pick(alphabet);
    if (i % 3 === 0) r = `${rng.pick(['2*3=6,6+4=10', '2+3=5,5*4=20', '4*3=12,12-2=10'])} ${rng.pick(['ok', 'no'])};`;
    const g = verifyCountdown(p, r, false);
    assert.ok(g.reward === 0 || g.reward === 1);
    if (g.reward === 1) {
      ones++;
      const last = parseResponse(r).attempts.at(-1)!;
      assert.equal(last.mark, 'ok');
      assert.ok(gradeAttempt(p, last.steps).correct);
    }
  }
  assert.ok(ones > 100, `${ones} correct responses in the fuzz set`);
});

void test('exploreResponse: each mark against the truth, repeats, copies and the stop reason', () => {
  const r = '3+5=8,8*7=56>22 no;3*5=15,15+7=22>22 no;5+3=8,7*8=56>21 ok;3*5=15,15+7=22 ok;';
  const e = exploreResponse(P, parseResponse(r), r.length, false);
  // marks: no on wrong (true), no on right (false no), ok on wrong (false ok), ok on right (true)
  assert.deepEqual(
    [e.marks, e.marksTrue, e.wrong, e.falseOk, e.right, e.falseNo, e.unique, e.repeats, e.copies, e.copiesTrue, e.stop],
    [4, 2, 2, 1, 2, 1, 2, 2, 3, 2, 'correct'],
  );
  const stop = (text: string, truncated = false) => exploreResponse(P, parseResponse(text), text.length, truncated).stop;
  assert.equal(stop('3+5=8,8*7=56 ok;'), 'false_ok');
  assert.equal(stop('3+5=8,8*7=56 no;'), 'gave_up');
  assert.equal(stop('3+5=8,8*7=56 no;3*5', true), 'truncated');
  assert.equal(stop('3+5=8,8*7=56 no;3*5'), 'other');
  assert.equal(stop(''), 'other');
  assert.equal(
    normalizeAttempt([
      { a: 5, op: '+', b: 3, c: 8 },
      { a: 8, op: '-', b: 1, c: 7 },
    ]),
    '3+5=8,8-1=7',
  );
});

void test('split: content-defined, about 10% eval and 10% select, identical for reordered numbers', () => {
  const counts = { train: 0, select: 0, eval: 0 };
  for (let a = 1; a <= 9; a++) for (let b = a; b <= 9; b++) for (let t = 10; t < 60; t++) counts[splitOf({ numbers: [a, b], target: t })]++;
  const n = counts.train + counts.select + counts.eval;
  assert.ok(Math.abs(counts.eval / n - 0.1) < 0.025 && Math.abs(counts.select / n - 0.1) < 0.025, JSON.stringify(counts));
  assert.equal(problemIdentity({ numbers: [7, 3, 5], target: 22 }), '3 5 7>22');
  assert.equal(splitOf({ numbers: [7, 3, 5], target: 22 }), splitOf({ numbers: [5, 7, 3], target: 22 }));
  for (const split of ['train', 'select', 'eval'] as const) {
    for (let i = 0; i < 40; i++) {
      const p = generateCountdown(1, i, EASY, split);
      assert.equal(p.split, split);
      assert.equal(splitOf(p), split, p.id);
    }
  }
});

void test('minSolutionSteps: the fewest steps, checked against a brute-force enumeration', () => {
  assert.equal(minSolutionSteps([3, 5, 7], 15, '+-*').steps, 1);
  assert.equal(minSolutionSteps([3, 5, 7], 22, '+-*').steps, 2);
  assert.equal(minSolutionSteps([1, 1, 1], 100, '+-*/').steps, null);
  // Reference: every value reachable with exactly k steps from some sub-multiset, by breadth-first expansion.
  const reachable = (nums: number[], ops: string): Map<number, number> => {
    const best = new Map<number, number>();
    let frontier: Array<{ pool: number[]; k: number }> = [{ pool: nums, k: 0 }];
    while (frontier.length) {
      const next: typeof frontier = [];
      for (const { pool, k } of frontier) {
        for (let i = 0; i < pool.length; i++)
          for (let j = 0; j < pool.length; j++) {
            if (i === j) continue;
            for (const op of ops) {
              const a = pool[i],
                b = pool[j];
              const c = op === '+' ? a + b : op === '-' ? a - b : op === '*' ? a * b : b !== 0 && a % b === 0 ? a / b : -1;
              if (c <= 0) continue;
              if (!best.has(c) || best.get(c)! > k + 1) best.set(c, k + 1);
              if (pool.length > 2) next.push({ pool: [...pool.filter((_, t) => t !== i && t !== j), c], k: k + 1 });
            }
          }
      }
      frontier = next;
    }
    return best;
  };
  const rng = new Rng(3);
  for (let trial = 0; trial < 25; trial++) {
    const nums = Array.from({ length: 4 }, () => rng.int(1, 9));
    const ref = reachable(nums, '+-*');
    for (const [t, k] of ref) {
      if (nums.includes(t) || t > 200) continue;
      assert.equal(minSolutionSteps(nums, t, '+-*').steps, k, `${nums} -> ${t}`);
    }
  }
});

void test('generate: minSteps and useAll give problems no shorter solution solves', () => {
  for (const d of [
    { ...MEDIUM, max: 9, ops: '+-*', minSteps: 2 },
    { ...MEDIUM, max: 9, ops: '+-*', useAll: true },
  ]) {
    const ps = Array.from({ length: 40 }, (_, i) => generateCountdown(2, i, d, 'eval'));
    for (const p of ps) {
      const need = d.useAll ? 3 : 2;
      assert.ok(p.minSteps >= need, p.id);
      assert.equal(minSolutionSteps(p.numbers, p.target, p.ops).steps, p.minSteps, p.id);
      assert.equal(verifyCountdown(p, formatAttempt(p.solution, 'ok'), false).reward, 1, p.id);
    }
    const prof = difficultyProfile(ps);
    assert.equal(prof.problems, 40);
    if (d.useAll) assert.equal(prof.needsAll, 1);
  }
  // Unconstrained sets are dominated by easy problems: the knob matters.
  const easy = difficultyProfile(Array.from({ length: 200 }, (_, i) => gen(3, i, { ...MEDIUM, max: 9, ops: '+-*' })));
  assert.ok((easy.minSteps[1] ?? 0) > 0.15, JSON.stringify(easy));
  assert.throws(() => gen(1, 0, { ...EASY, minSteps: 3 }), /bad difficulty/);
});

void test('generate: maxSteps keeps only problems some solution solves in that many steps', () => {
  const d = { ...EASY, max: 9, ops: '+-*', count: 4, maxSteps: 1 };
  const ps = Array.from({ length: 40 }, (_, i) => generateCountdown(5, i, d, 'select'));
  for (const p of ps) {
    assert.equal(minSolutionSteps(p.numbers, p.target, p.ops).steps, 1, p.id);
    assert.ok(p.id.includes('-m1-'), p.id);
    assert.equal(verifyCountdown(p, formatAttempt(p.solution, 'ok'), false).reward, 1, p.id);
  }
  const two = Array.from({ length: 40 }, (_, i) => generateCountdown(5, i, { ...d, minSteps: 2, maxSteps: 2 }, 'train'));
  for (const p of two) assert.equal(minSolutionSteps(p.numbers, p.target, p.ops).steps, 2, p.id);
  assert.throws(() => generateCountdown(1, 0, { ...d, minSteps: 2, maxSteps: 1 }, 'train'), /bad difficulty/);
});

const inRange = (p: CountdownProblem, d: Difficulty): boolean =>
  p.numbers.length === d.count && p.numbers.every((n) => Number.isInteger(n) && n >= d.min && n <= d.max);

void test('generate: a pure function of (seed, index, difficulty), with varied problems', () => {
  assert.deepEqual(gen(3, 42, MEDIUM), gen(3, 42, MEDIUM));
  assert.equal(gen(3, 42, EASY).id, 'cd3-1..9-+-*-train-000042');
  assert.equal(generateCountdown(3, 42, { ...MEDIUM, minSteps: 2 }, 'eval').id, 'cd4-1..20-+-*/-s2-eval-000042');
  assert.equal(countdown.generate, generateCountdown);
  const seen = new Set<string>();
  for (let i = 0; i < 50; i++) seen.add(countdown.prompt(gen(3, i, MEDIUM)));
  assert.ok(seen.size >= 45, `${seen.size} distinct of 50`);
  assert.notDeepEqual(gen(3, 0, MEDIUM).numbers, gen(4, 0, MEDIUM).numbers);
  assert.throws(() => gen(1, 0, { count: 3, min: 1, max: 9, ops: '+^' }), /bad difficulty/);
  assert.throws(() => gen(1, 0, { count: 3, min: 5, max: 2, ops: '+' }), /bad difficulty/);
});

void test('generate: every problem is in range, non-trivial, solvable, and its solutions verify', () => {
  const plans: Array<[Difficulty, number]> = [
    [EASY, 150],
    [{ ...EASY, ops: '+-*/' }, 100],
    [MEDIUM, 150],
    [HARD, 40],
    [EXTREME, 6],
  ];
  for (const [d, n] of plans) {
    for (let seed = 0; seed < 2; seed++) {
      for (let i = 0; i < n / 2; i++) {
        const p = gen(seed, i, d);
        assert.ok(inRange(p, d), p.id);
        assert.ok(Number.isInteger(p.target) && p.target >= 1 && p.target <= TARGET_CAP, p.id);
        assert.ok(!p.numbers.includes(p.target), `${p.id} trivial`);
        const prompt = countdown.prompt(p);
        assert.equal(prompt, `${p.numbers.join(' ')}>${p.target}:`);
        encode(prompt);
        assert.equal(verifyCountdown(p, formatAttempt(p.solution, 'ok'), false).reward, 1, `${p.id} construction`);
        const s = solve(p.numbers, p.target, p.ops, { maxNodes: d.count >= 6 ? 50_000 : Infinity });
        if (d.count <= 5) assert.ok(s.steps && !s.capped, `${p.id} unsolved`);
        if (s.steps) assert.equal(verifyCountdown(p, formatAttempt(s.steps, 'ok'), false).reward, 1, `${p.id} solver`);
      }
    }
  }
});

void test('solve: finds solutions, proves unsolvable cases, stops at the node cap', () => {
  const s = solve([2, 3, 4], 24, '*');
  assert.ok(s.steps);
  assert.equal(s.steps!.length, 2);
  assert.equal(gradeAttempt(prob([2, 3, 4], 24, '*'), s.steps!).correct, true);
  const none = solve([1, 1, 1], 100, '+-*/');
  assert.deepEqual([none.steps, none.capped], [null, false]);
  assert.equal(solve([2, 3], 5, '-*/').steps, null, 'respects the allowed ops');
  assert.equal(solve([12, 4], 3, '/').steps!.length, 1, 'division in either order');
  const capped = solve([1, 2, 3, 5, 7, 11, 13], 997, '+-*/', { maxNodes: 10 });
  assert.equal(capped.capped, true);
  // Solutions carry no unused steps: removing any one breaks them.
  const rng = new Rng(9);
  for (let i = 0; i < 30; i++) {
    const p = gen(11, i, HARD);
    const steps = solve(p.numbers, p.target, p.ops, { rng }).steps!;
    for (let k = 0; k < steps.length; k++)
      assert.equal(
        gradeAttempt(
          p,
          steps.filter((_, j) => j !== k),
        ).correct,
        false,
        p.id,
      );
  }
});

void test('forced: the tool writes exact results only after a complete left side', () => {
  const cases: Array<[string, string]> = [
    ['3*5=', '15'],
    ['3+5=8,8*7=', '56'],
    ['3+5=8,8*7=56 no;12/4=', '3'],
    ['999999*999999=', '999998000001'],
    ['3*5=15', ''],
    ['', ''],
    ['3*5', ''],
    ['7/2=', ''],
    ['7/0=', ''],
    ['3-5=', ''],
    ['5-5=', '0'],
    ['1234567890123*2=', ''],
    ['3+5=8 7*2=', ''],
  ];
  for (const [soFar, want] of cases) assert.equal(forcedCountdown(P, soFar), want, soFar);
  assert.equal(countdown.forced, undefined);
  assert.equal(countdownTool.forced, forcedCountdown);
  assert.equal(countdownTool.name, 'countdown-tool');
});

void test('forced: a tool-mode rollout of left sides and marks verifies', () => {
  // The policy writes only `a op b=`, separators and marks; the environment writes every c.
  const policy = ['3+5=', ' no;', '3*5=', ',', '15+7=', ' ok;'];
  let text = '';
  let forcedCount = 0;
  for (const chunk of policy) {
    text += chunk;
    const f = countdownTool.forced!(P, text);
    if (f) forcedCount++;
    text += f;
  }
  assert.equal(text, '3+5=8 no;3*5=15,15+7=22 ok;');
  assert.equal(forcedCount, 3);
  assert.equal(countdownTool.verify(P, text, false).reward, 1);
});
