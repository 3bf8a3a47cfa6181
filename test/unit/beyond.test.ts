/**
 * ml/beyond.ts against hand-counted windows, and its identity against the evaluation's own
 * pass@1 (ml/evaluation.ts evalMetrics): gain = pass@1(b2) − pass@1(b1) = running × rescue.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { matchedRescue, windowStats } from '../../ml/beyond';
import { evalMetrics } from '../../ml/evaluation';
import type { EvalCounts } from '../../ml/evaluation';
import type { ResponseRecord } from '../../ml/metrics';
import type { Explore, StopReason } from '../../ml/task';
import { Rng } from '../../ml/rng';

const ex = (marks: number, right: number, repeats: number, stop: StopReason): Explore => ({
  marks,
  marksTrue: marks,
  wrong: marks - right,
  falseOk: 0,
  right,
  falseNo: 0,
  unique: marks - repeats,
  repeats,
  copies: 0,
  copiesTrue: 0,
  stop,
});
const rec = (reward: number, truncated: boolean, e: Explore): ResponseRecord => ({ reward, length: 0, truncated, explore: e });

test('a hand-counted window: running rows, rescues, attempts, hits and repeats in the window, stop reasons', () => {
  // Row 0 solved by b1; rows 1-3 running at b1; row 4 stopped unsolved (gave up) at b1.
  const at1 = [
    rec(1, false, ex(2, 1, 0, 'correct')),
    rec(0, true, ex(1, 0, 0, 'truncated')),
    rec(0, true, ex(2, 0, 1, 'truncated')),
    rec(0, true, ex(0, 0, 0, 'truncated')),
    rec(0, false, ex(3, 0, 0, 'gave_up')),
  ];
  // b2: row 1 rescued after 2 more attempts (one hits); row 2 makes 3 more, 2 repeats, still cut; row 3 gives up after 1.
  const at2 = [
    at1[0],
    rec(1, false, ex(3, 1, 0, 'correct')),
    rec(0, true, ex(5, 0, 3, 'truncated')),
    rec(0, false, ex(1, 0, 0, 'gave_up')),
    at1[4],
  ];
  const s = windowStats({ problem: [0, 0, 1, 1, 2], at1, at2 });
  assert.equal(s.rows, 5);
  assert.equal(s.running, 3 / 5);
  assert.equal(s.rescue, 1 / 3);
  assert.equal(s.gain, 1 / 5);
  assert.equal(s.attempts, (2 + 3 + 1) / 3);
  assert.equal(s.hitRate, 1 / 6);
  assert.equal(s.repeatRate, 2 / 6);
  assert.deepEqual(s.stop, { correct: 1 / 3, truncated: 1 / 3, gave_up: 1 / 3 });
});

test('gain = pass@1(b2) − pass@1(b1) as the evaluation counts it, on random windows (tolerance 1e-12)', () => {
  const rng = new Rng(5);
  for (let trial = 0; trial < 50; trial++) {
    const problems = 1 + rng.int(0, 9);
    const samples = 1 + rng.int(0, 7);
    const problem: number[] = [];
    const at1: ResponseRecord[] = [];
    const at2: ResponseRecord[] = [];
    for (let i = 0; i < problems; i++) {
      for (let j = 0; j < samples; j++) {
        problem.push(i);
        const solved1 = rng.next() < 0.3;
        const cut1 = !solved1 && rng.next() < 0.7;
        // Counted from one pass: solved at b1 stays solved; only a running row can become solved.
        const solved2 = solved1 || (cut1 && rng.next() < 0.4);
        at1.push(rec(solved1 ? 1 : 0, cut1, ex(1, 0, 0, cut1 ? 'truncated' : solved1 ? 'correct' : 'gave_up')));
        at2.push(rec(solved2 ? 1 : 0, cut1 && !solved2, ex(2, solved2 ? 1 : 0, 0, solved2 ? 'correct' : 'truncated')));
      }
    }
    const byProblem = (rs: ResponseRecord[]) =>
      Array.from({ length: problems }, (_, i) => ({
        n: samples,
        c: rs.slice(i * samples, (i + 1) * samples).reduce((a, r) => a + r.reward, 0),
      }));
    const counts: EvalCounts = { 1: { problems: byProblem(at1), records: at1 }, 2: { problems: byProblem(at2), records: at2 } };
    const m = evalMetrics([counts], [1, 2], [1]);
    const s = windowStats({ problem, at1, at2 });
    assert.ok(Math.abs(s.gain - (m['eval/b2/pass@1'] - m['eval/b1/pass@1'])) < 1e-12);
    if (s.running > 0) assert.ok(Math.abs(s.running * s.rescue - s.gain) < 1e-12);
  }
});

test('matched rescue removes selection: equal rescue per problem gives a zero difference though the pooled rates differ', () => {
  // Problem 0 easy (rescue 1/2 for both), problem 1 hard (rescue 0 for both). The policy solves
  // problem 0 by b1 more often, so fewer of its running rows come from the easy problem.
  const run = (reward: number) => rec(reward, reward === 0, ex(1, reward, 0, reward ? 'correct' : 'truncated'));
  const solved = rec(1, false, ex(1, 1, 0, 'correct'));
  const cut = rec(0, true, ex(1, 0, 0, 'truncated'));
  const base = { problem: [0, 0, 0, 0, 1, 1], at1: [cut, cut, cut, cut, cut, cut], at2: [run(1), run(1), run(0), run(0), run(0), run(0)] };
  const policy = {
    problem: [0, 0, 0, 0, 1, 1],
    at1: [solved, solved, cut, cut, cut, cut],
    at2: [solved, solved, run(1), run(0), run(0), run(0)],
  };
  assert.equal(windowStats(base).rescue, 2 / 6);
  assert.equal(windowStats(policy).rescue, 1 / 4);
  const m = matchedRescue(base, policy, 1);
  assert.equal(m.problems, 2);
  assert.equal(m.base, 0.25);
  assert.equal(m.policy, 0.25);
  assert.deepEqual(m.diff, { mean: 0, lo: 0, hi: 0 });
});

test('mismatched rows are refused', () => {
  assert.throws(() => windowStats({ problem: [0], at1: [], at2: [] }), /1 problem ids, 0 and 0 records/);
  const r = rec(0, true, ex(0, 0, 0, 'truncated'));
  assert.throws(
    () => matchedRescue({ problem: [0], at1: [r], at2: [r] }, { problem: [1], at1: [rec(1, false, ex(1, 1, 0, 'correct'))], at2: [r] }, 1),
    /no problem has a running row under both/,
  );
});
