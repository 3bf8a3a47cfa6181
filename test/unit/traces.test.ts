import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  EASY,
  MEDIUM,
  HARD,
  exploreResponse,
  generateCountdown,
  gradeAttempt,
  parseResponse,
  splitOf,
  verifyCountdown,
} from '../../ml/countdown';
import type { Difficulty } from '../../ml/task';
import { TRACE_DEFAULTS, makeTrace, sftBatch, wrongAttempt } from '../../ml/traces';
import { encode } from '../../ml/tokenizer';
import { Rng } from '../../ml/rng';

const C3 = { ...EASY, ops: '+-*/' };
const gen = (seed: number, i: number, d: Difficulty) => generateCountdown(seed, i, d, 'train');

void test('traces: every trace verifies, encodes, fits the budget, and every check is true', () => {
  for (const [d, budget] of [
    [C3, 256],
    [MEDIUM, 256],
    [HARD, 256],
    [MEDIUM, 48],
  ] as const) {
    for (let step = 0; step < 10; step++) {
      for (const ex of sftBatch(1, step, 20, d, { budget })) {
        const g = verifyCountdown(ex.problem, ex.response, false);
        assert.equal(g.reward, 1, `${ex.id} ${ex.response}`);
        assert.equal(ex.prompt, `${ex.problem.numbers.join(' ')}>${ex.problem.target}:`);
        encode(ex.prompt);
        const ids = encode(ex.response);
        assert.ok(ids.length + 1 <= budget, `${ex.id}: ${ids.length + 1} tokens`);
        const parsed = parseResponse(ex.response);
        const a = exploreResponse(ex.problem, parsed, ex.response.length, false);
        assert.equal(a.marksTrue, a.marks);
        assert.deepEqual([a.falseOk, a.falseNo, a.repeats, a.stop], [0, 0, 0, 'correct']);
        assert.equal(splitOf(ex.problem), 'train', 'warm-start problems come from the train split only');
        const attempts = parsed.attempts;
        // Every attempt copies the target next to its last result before its mark.
        assert.ok(
          attempts.every((t) => t.copied === ex.problem.target),
          ex.response,
        );
        assert.deepEqual(
          attempts.map((t) => t.mark),
          [...attempts.slice(1).map(() => 'no'), 'ok'],
        );
        for (const w of attempts.slice(0, -1)) {
          // Wrong attempts are legal with true arithmetic: they fail only by missing the target.
          assert.equal(gradeAttempt(ex.problem, w.steps).reason, 'wrong-target', w.text);
        }
        assert.equal(new Set(attempts.map((t) => t.text)).size, attempts.length, 'attempts are distinct');
      }
    }
  }
});

void test('traces: attempt counts follow the geometric law and its caps; lengths vary', () => {
  let attempts = 0,
    n = 0;
  const lens = new Set<number>();
  const stepsInAnswer = new Set<number>();
  for (let step = 0; step < 20; step++) {
    for (const ex of sftBatch(2, step, 25, MEDIUM)) {
      const a = parseResponse(ex.response).attempts;
      attempts += a.length;
      n++;
      lens.add(encode(ex.response).length);
      stepsInAnswer.add(a.at(-1)!.steps.length);
    }
  }
  // mean 1 + 1.5 wrong attempts, less a few dropped as duplicates on small problems; sd of the mean ~0.08
  const mean = attempts / n;
  assert.ok(mean > 2.1 && mean < 2.8, `mean attempts ${mean}`);
  assert.ok(lens.size > 30, `${lens.size} distinct lengths`);
  assert.deepEqual([...stepsInAnswer].sort(), [1, 2, 3], 'answers of every length');
  for (const ex of sftBatch(3, 0, 40, MEDIUM, { meanWrong: 0 })) assert.equal(parseResponse(ex.response).attempts.length, 1);
  for (const ex of sftBatch(3, 0, 40, MEDIUM, { meanWrong: 20, maxAttempts: 3 }))
    assert.ok(parseResponse(ex.response).attempts.length <= 3);
  const many = sftBatch(3, 0, 40, MEDIUM, { meanWrong: 20, maxAttempts: 5 }).map((ex) => parseResponse(ex.response).attempts.length);
  assert.ok(many.filter((k) => k === 5).length > 20, `${many}`);
});

void test('traces: the budget drops wrong attempts, never the answer', () => {
  const count = (budget: number): number =>
    sftBatch(4, 0, 60, MEDIUM, { meanWrong: 4, budget }).reduce((n, ex) => n + parseResponse(ex.response).attempts.length, 0);
  const wide = count(1000),
    tight = count(40);
  assert.ok(wide > 3 * 60 && tight < 0.6 * wide, `${wide} vs ${tight} attempts`);
  const p = gen(1, 0, HARD);
  const t = makeTrace(p, new Rng(1), { meanWrong: 5, budget: 1 }); // below the answer's own length
  assert.equal(parseResponse(t).attempts.length, 1);
  assert.equal(verifyCountdown(p, t, false).reward, 1);
});

void test('sftBatch is a pure function of (seed, step)', () => {
  assert.deepEqual(sftBatch(5, 3, 8, [C3, MEDIUM]), sftBatch(5, 3, 8, [C3, MEDIUM]));
  assert.notDeepEqual(sftBatch(5, 3, 8, MEDIUM), sftBatch(5, 4, 8, MEDIUM));
  assert.notDeepEqual(sftBatch(5, 3, 8, MEDIUM), sftBatch(6, 3, 8, MEDIUM));
  const mixed = sftBatch(5, 0, 40, [C3, MEDIUM]).map((ex) => ex.problem.numbers.length);
  assert.ok(mixed.includes(3) && mixed.includes(4));
  assert.equal(TRACE_DEFAULTS.budget, 256);
});

void test('traces: the next mark is not predictable from its position; near misses are near', () => {
  // P(ok | attempt index) is flat under a geometric count (a constant hazard 1 / (1 + meanWrong)).
  const okAt = new Map<number, { ok: number; n: number }>();
  let near = 0,
    far = 0;
  for (let step = 0; step < 30; step++) {
    for (const ex of sftBatch(6, step, 40, { ...MEDIUM, max: 9, ops: '+-*' }, { meanWrong: 3, maxAttempts: 24 })) {
      const attempts = parseResponse(ex.response).attempts;
      attempts.forEach((a, k) => {
        const e = okAt.get(k) ?? { ok: 0, n: 0 };
        e.n++;
        if (a.mark === 'ok') e.ok++;
        okAt.set(k, e);
        if (a.mark === 'no') {
          const miss = Math.abs(a.steps.at(-1)!.c - ex.problem.target);
          if (miss <= 3) near++;
          else far++;
        }
      });
    }
  }
  for (const k of [0, 1, 2, 3]) {
    const e = okAt.get(k)!;
    assert.ok(e.n > 150 && Math.abs(e.ok / e.n - 0.25) < 0.08, `P(ok | attempt ${k}) = ${e.ok}/${e.n}`);
  }
  assert.ok(near / (near + far) > 0.15, `${near} near misses of ${near + far}`);
  const noNear = sftBatch(6, 0, 200, { ...MEDIUM, max: 9, ops: '+-*' }, { meanWrong: 3, nearMiss: 0 });
  assert.equal(noNear.length, 200);
});

void test('wrongAttempt: legal, true arithmetic, off target', () => {
  const rng = new Rng(4);
  for (let i = 0; i < 100; i++) {
    const p = gen(8, i, MEDIUM);
    const w = wrongAttempt(p, rng)!;
    assert.ok(w && w.length >= 1 && w.length <= 3);
    assert.equal(gradeAttempt(p, w).reason, 'wrong-target');
    const t = makeTrace(p, rng, { meanWrong: 3 });
    assert.equal(verifyCountdown(p, t, false).reward, 1);
  }
});

void test('search traces: marks true, the first attempt that reaches the target ends the trace, and attempts after a `no` reach it as often as first ones', () => {
  const d = { ...EASY }; // 3 numbers, +-*: blind proposals often reach the target
  // 1. Shape: every trace verifies, every mark is the truth, the only `ok` is the last attempt.
  for (let step = 0; step < 10; step++) {
    for (const ex of sftBatch(2, step, 20, [d, MEDIUM], { search: true, meanWrong: 6, maxAttempts: 16, perturbed: 0.25, budget: 256 })) {
      assert.equal(verifyCountdown(ex.problem, ex.response, false).reward, 1, ex.response);
      assert.ok(encode(ex.response).length + 1 <= 256);
      const parsed = parseResponse(ex.response);
      const a = exploreResponse(ex.problem, parsed, ex.response.length, false);
      assert.deepEqual([a.marks - a.marksTrue, a.falseOk, a.falseNo, a.repeats, a.stop], [0, 0, 0, 0, 'correct'], ex.response);
      assert.deepEqual(
        parsed.attempts.map((t) => t.mark),
        [...parsed.attempts.slice(1).map(() => 'no'), 'ok'],
      );
    }
  }
  // 2. The hazard of `ok` at attempt k (given k misses) with an endless geometric count: the
  // blind proposal's own hit rate in search traces, about constant over k; zero in the
  // historical traces, whose wrong attempts are built to miss (a trace there ends early only
  // when its problem runs out of distinct misses: rare).
  const hazard = (search: boolean): number[] => {
    const at = [0, 1, 2, 3].map(() => ({ ok: 0, n: 0 }));
    for (const ex of sftBatch(3, 0, 400, d, { search, meanWrong: 1000, maxAttempts: 16, budget: 2000 })) {
      parseResponse(ex.response)
        .attempts.slice(0, 4)
        .forEach((t, k) => {
          at[k].n++;
          if (t.mark === 'ok') at[k].ok++;
        });
    }
    return at.map((e) => e.ok / e.n);
  };
  const s = hazard(true),
    h = hazard(false);
  assert.ok(
    s.every((r) => r > 0.12 && r < 0.6),
    `search hazard ${s.map((r) => r.toFixed(3))}`,
  );
  assert.ok(Math.max(...s) - Math.min(...s) < 0.15, `search hazard not flat: ${s.map((r) => r.toFixed(3))}`);
  assert.ok(
    h.every((r) => r < 0.02),
    `historical hazard ${h}`,
  );
});

void test('wrongAttempt(avoid=false): a blind proposal ends at the step that reaches the target', () => {
  const rng = new Rng(9);
  let hits = 0;
  for (let i = 0; i < 200; i++) {
    const p = gen(8, i, EASY);
    const w = wrongAttempt(p, rng, false)!;
    const g = gradeAttempt(p, w);
    assert.ok(g.reason === 'ok' || g.reason === 'wrong-target', g.reason);
    // No step before the last reaches the target.
    assert.ok(w.slice(0, -1).every((st) => st.c !== p.target));
    if (g.correct) hits++;
  }
  assert.ok(hits > 5, `${hits} of 200 blind proposals reach the target`);
});
