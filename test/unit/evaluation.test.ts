/**
 * Evaluation fan-out (docs/ARCHITECTURE.md "Evaluation fan-out"): the problems of each part,
 * the join of per-problem counts into a chunk's counts (order-independent, equal to countEval
 * over the chunk's rows), the node's checks on the parts it gets back, and the counts a pool
 * computes part by part, joined per stored chunk, equal to the single-activity path's chunks.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ApplicationFailure } from '@temporalio/common';
import { EVAL_CHUNK, acceptEvalParts, evalJob } from '../../activities/evaluate';
import { PolicyMismatchError, classify } from '../../activities/errors';
import { ErrorTypes } from '../../activities/types';
import type { EvalPartResult } from '../../activities/types';
import { ComputePool, PooledPolicy } from '../../compute/pool';
import { loadConfig } from '../../configs/load';
import { initBackend } from '../../ml/backend';
import { countEval, evalMetrics, evalPartProblems, evalRows, joinEvalCounts } from '../../ml/evaluation';
import type { EvalCounts, EvalSpec, ProblemCounts } from '../../ml/evaluation';
import { Rng } from '../../ml/rng';
import type { Rollout } from '../../ml/rollouts';
import { EOS, VOCAB_SIZE, encode } from '../../ml/tokenizer';
import { makeTrace } from '../../ml/traces';

test('evaluation parts: every problem in exactly one part (i mod parts), in increasing order; bad coordinates named', () => {
  for (const prompts of [1, 4, 7, 8, 9, 20]) {
    for (let parts = 1; parts <= Math.min(prompts, 7); parts++) {
      const seen: number[] = [];
      for (let k = 0; k < parts; k++) {
        const ps = evalPartProblems(prompts, k, parts);
        assert.ok(
          ps.every((i, n) => i % parts === k && (n === 0 || i > ps[n - 1])),
          `${prompts}/${parts}/${k}: ${ps}`,
        );
        seen.push(...ps);
      }
      assert.deepEqual(
        seen.sort((a, b) => a - b),
        Array.from({ length: prompts }, (_, i) => i),
      );
    }
  }
  assert.throws(() => evalPartProblems(8, 2, 2), /part must be an integer in \[0, 2\) \(got 2\)/);
  assert.throws(() => evalPartProblems(8, 0, 0), /parts must be a positive integer \(got 0\)/);
});

const spec: EvalSpec = {
  seed: 11,
  split: 'eval',
  difficulty: { count: 3, min: 1, max: 9, ops: '+-*', minSteps: 1, useAll: false },
  budgets: [6, 24, 200],
  prompts: 13,
  samples: 3,
  temperature: 0.6,
  ks: [1, 2],
  offset: 2,
};

/** Synthetic responses: some a full correct-looking trace and EOS, some random tokens, some cut short, from a seeded Rng. */
function responses(rows: ReturnType<typeof evalRows>): Rollout[] {
  const rng = new Rng(5);
  return rows.map((r) => {
    const kind = rng.int(0, 2);
    const response =
      kind === 0
        ? [...encode(makeTrace(r.p, new Rng(r.seed))), EOS]
        : Array.from({ length: rng.int(1, 40) }, () => (kind === 1 ? rng.int(1, VOCAB_SIZE - 1) : EOS));
    return { i: r.i, j: r.j, problemId: '', prompt: [], response, logp: [], forced: [], truncated: false };
  });
}

test('per-problem counts joined over a range equal countEval over the range: any order, any split of the problems into parts', () => {
  for (const tool of [false, true]) {
    const rows = evalRows(spec);
    const rollouts = responses(rows);
    const per: ProblemCounts[] = [];
    for (let i = 0; i < spec.prompts; i++) {
      const idx = rows.flatMap((r, k) => (r.i === i ? [k] : []));
      per.push({
        i,
        counts: countEval(
          idx.map((k) => rows[k]),
          idx.map((k) => rollouts[k]),
          spec.budgets,
          tool,
        ),
      });
    }
    // Through JSON, as parts are stored.
    const stored = JSON.parse(JSON.stringify(per)) as ProblemCounts[];
    assert.ok(
      stored.some((p) => p.counts[200].problems[0].c > 0),
      'some problem solved (the join is checked on non-zero counts too)',
    );
    for (const [from, to] of [
      [0, 8],
      [8, 13],
      [3, 4],
      [0, 13],
    ]) {
      const sub = rows.flatMap((r, k) => (r.i >= from && r.i < to ? [k] : []));
      const want = countEval(
        sub.map((k) => rows[k]),
        sub.map((k) => rollouts[k]),
        spec.budgets,
        tool,
      );
      for (const order of [stored, [...stored].reverse(), [...stored].sort((a, b) => (a.i % 3) - (b.i % 3) || b.i - a.i)])
        assert.equal(JSON.stringify(joinEvalCounts(order, from, to, spec.budgets)), JSON.stringify(want), `[${from}, ${to})`);
    }
  }
  const one = { i: 0, counts: { 6: { problems: [{ n: 1, c: 0 }], records: [] } } as EvalCounts };
  assert.throws(() => joinEvalCounts([one, one], 0, 1, [6]), /problem 0 is counted twice/);
  assert.throws(() => joinEvalCounts([one], 0, 2, [6]), /problem 1 of \[0, 2\) has no counts/);
  assert.throws(() => joinEvalCounts([one], 0, 1, [6, 12]), /problem 0 has no counts at budget 12/);
});

const part = (k: number, n: number, policy: string): EvalPartResult => ({ part: k, parts: n, policy, key: `p${k}`, problems: 2 });

test('the node joins each part once, in part order, only from the policy it published (PolicyMismatch, non-retryable)', () => {
  const A = 'a'.repeat(64);
  const B = 'b'.repeat(64);
  assert.deepEqual(
    acceptEvalParts(A, [part(2, 3, A), part(0, 3, A), part(1, 3, A)]).map((p) => p.key),
    ['p0', 'p1', 'p2'],
  );
  let err: unknown;
  try {
    acceptEvalParts(A, [part(0, 2, A), part(1, 2, B)]);
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof PolicyMismatchError);
  assert.match((err as Error).message, /part 1 of 2 was sampled with policy b{16}, the node published a{16}/);
  const c = classify(err);
  assert.ok(c instanceof ApplicationFailure && c.nonRetryable && c.type === ErrorTypes.policyMismatch);
  assert.throws(() => acceptEvalParts(A, [part(0, 3, A), part(2, 3, A)]), /parts 1 of 3 are missing/);
  assert.throws(() => acceptEvalParts(A, [part(0, 2, A), part(0, 2, A)]), /part 0 of 2 given twice/);
  assert.throws(() => acceptEvalParts(A, [part(0, 2, A), part(1, 3, A)]), /part 1 is one of 3 parts, another of 2/);
  assert.throws(() => acceptEvalParts(A, []), /none given/);
});

test('a node config with parts resolves; parts above prompts is refused naming the field; without parts the job is unchanged', () => {
  const cfg = loadConfig('tiny', { nodes: { eval: { parts: 3 }, select: { parts: 4 } } });
  assert.equal(cfg.nodes.eval.kind === 'eval' && cfg.nodes.eval.parts, 3);
  const plain = loadConfig('tiny');
  assert.ok(!('parts' in plain.nodes.eval) && !('parts' in plain.nodes.select));
  assert.deepEqual(evalJob(plain, 'select').budgets, [16, 32, 64]);
  assert.throws(() => loadConfig('tiny', { nodes: { eval: { parts: 5 } } }), /nodes\.eval\.parts: parts must be <= prompts/);
  assert.throws(() => loadConfig('tiny', { nodes: { select: { parts: 0 } } }), /nodes\.select\.parts/);
});

test('counts sampled part by part on a pool and joined per chunk are the single path chunks byte for byte, for 1, 2 and 3 parts', async () => {
  await initBackend();
  const model = { vocab: VOCAB_SIZE, layers: 1, dModel: 32, heads: 2, context: 96, seed: 4 };
  const s: EvalSpec = { ...spec, budgets: [8, 16, 24], prompts: 10, samples: 2 };
  const pool = await ComputePool.start(2);
  try {
    const pol = await PooledPolicy.open(pool, 'eval', model, true, 'tfjs');
    const want: EvalCounts[] = [];
    for (let at = 0; at < s.prompts; at += EVAL_CHUNK)
      want.push(await pol.evaluate({ ...s, range: [at, Math.min(s.prompts, at + EVAL_CHUNK)] }));
    for (const n of [1, 2, 3]) {
      const pieces: ProblemCounts[] = [];
      // In reverse: the order parts finish in does not matter.
      for (let k = n - 1; k >= 0; k--)
        pieces.push(...(JSON.parse(JSON.stringify(await pol.evaluateProblems(s, evalPartProblems(s.prompts, k, n)))) as ProblemCounts[]));
      const got: EvalCounts[] = [];
      for (let at = 0; at < s.prompts; at += EVAL_CHUNK)
        got.push(joinEvalCounts(pieces, at, Math.min(s.prompts, at + EVAL_CHUNK), s.budgets));
      assert.equal(JSON.stringify(got), JSON.stringify(want), `${n} parts`);
      assert.deepEqual(evalMetrics(got, s.budgets, s.ks), evalMetrics(want, s.budgets, s.ks));
    }
    await pol.dispose();
  } finally {
    await pool.close();
  }
});
