/**
 * Rollout fan-out (activities/rollout.ts): the policy cache (bounded, by sha, never freeing a
 * policy in use), the trainer's checks on the parts it gets back (another policy refused,
 * another iteration dropped and logged), and the rows: parts sampled from the published bytes
 * on a pool, joined, equal the trainer session's own rollouts byte for byte.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ApplicationFailure } from '@temporalio/common';
import { PolicyCache, acceptParts, joinGraded } from '../../activities/rollout';
import { PolicyMismatchError, classify } from '../../activities/errors';
import { ErrorTypes } from '../../activities/types';
import type { RolloutPartResult } from '../../activities/types';
import { ComputePool, PooledPolicy, PooledTrainer } from '../../compute/pool';
import { initBackend } from '../../ml/backend';
import { CHUNK_COST_ROWS } from '../../ml/batching';
import { grpoConfig } from '../../ml/grpo';
import { gradeAgainst, iterationProblems, shardRows } from '../../ml/rollouts';
import type { GradedRollout, RlSettings } from '../../ml/rollouts';
import { sha256Hex } from '../../ml/serialize';
import { VOCAB_SIZE } from '../../ml/tokenizer';
import { Trainer } from '../../ml/trainer';

const tick = () => new Promise<void>((r) => setImmediate(r));

test('policy cache: bounded, keyed by sha, least recently used out, one load per key, a policy in use freed only when released', async () => {
  const loads: string[] = [];
  const freed: string[] = [];
  const cache = new PolicyCache<string>(2, (v) => void freed.push(v));
  const load = (sha: string) => async () => {
    loads.push(sha);
    return `policy-${sha}`;
  };
  assert.equal(await cache.with('a', load('a'), async (v) => v), 'policy-a');
  assert.equal(await cache.with('a', load('a'), async (v) => v), 'policy-a');
  assert.deepEqual(loads, ['a'], 'a second get of the same sha loads nothing');
  await cache.with('b', load('b'), async () => undefined);
  await cache.with('a', load('a'), async () => undefined); // a is now the most recent
  await cache.with('c', load('c'), async () => undefined);
  await tick();
  assert.deepEqual(cache.keys(), ['a', 'c'], 'capacity 2: the least recently used (b) went');
  assert.deepEqual(freed, ['policy-b']);
  assert.deepEqual(loads, ['a', 'b', 'c']);

  // Two parts asking for one sha at once share one load.
  await Promise.all([cache.with('d', load('d'), async () => tick()), cache.with('d', load('d'), async () => tick())]);
  assert.equal(loads.filter((x) => x === 'd').length, 1);

  // A policy still sampling when it is evicted is freed when that part ends, not before.
  let release!: () => void;
  const busy = cache.with('e', load('e'), () => new Promise<void>((r) => (release = r)));
  await tick();
  await cache.with('f', load('f'), async () => undefined);
  await cache.with('g', load('g'), async () => undefined);
  await tick();
  assert.ok(!cache.keys().includes('e'));
  assert.ok(!freed.includes('policy-e'), 'freed while a part still samples with it');
  release();
  await busy;
  await tick();
  assert.ok(freed.includes('policy-e'));

  // A failed load is not kept: the next get loads again.
  await assert.rejects(
    cache.with(
      'h',
      async () => Promise.reject(new Error('store down')),
      async () => undefined,
    ),
    /store down/,
  );
  assert.equal(await cache.with('h', load('h'), async (v) => v), 'policy-h');
  assert.throws(() => new PolicyCache<string>(0, () => undefined), /capacity must be a positive integer/);
});

const part = (t: number, k: number, n: number, policy: string): RolloutPartResult => ({
  t,
  part: k,
  parts: n,
  policy,
  key: `k${t}-${k}`,
  rows: 4,
});

test('the trainer refuses a part sampled from another policy (PolicyMismatch, non-retryable), drops and logs a part of another iteration', () => {
  const A = 'a'.repeat(64);
  const B = 'b'.repeat(64);
  const log: string[] = [];
  // In part order whatever order they came back in; a duplicate of the same part once.
  assert.deepEqual(
    acceptParts(3, A, [part(3, 1, 2, A), part(3, 0, 2, A), part(3, 1, 2, A)], (m) => log.push(m)).map((p) => p.part),
    [0, 1],
  );
  assert.equal(log.length, 0);
  // A part that came back after its iteration moved on.
  assert.deepEqual(
    acceptParts(3, A, [part(2, 0, 2, B), part(3, 0, 2, A), part(3, 1, 2, A)], (m) => log.push(m)).map((p) => p.key),
    ['k3-0', 'k3-1'],
  );
  assert.deepEqual(log, ['rollout part 0/2 of iteration 2 dropped: the trainer is at iteration 3']);
  // Another policy.
  let err: unknown;
  try {
    acceptParts(3, A, [part(3, 0, 2, A), part(3, 1, 2, B)], () => undefined);
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof PolicyMismatchError);
  assert.match((err as Error).message, /part 1\/2 of iteration 3 was sampled with policy b{16}, the trainer published a{16}/);
  const c = classify(err);
  assert.ok(c instanceof ApplicationFailure && c.nonRetryable && c.type === ErrorTypes.policyMismatch);
  // Incomplete or inconsistent sets.
  assert.throws(() => acceptParts(3, A, [part(3, 0, 3, A), part(3, 2, 3, A)], () => undefined), /part 1 of 3 is missing/);
  assert.throws(() => acceptParts(3, A, [part(3, 0, 2, A), part(3, 1, 3, A)], () => undefined), /part 1 is one of 3, another one of 2/);
  assert.throws(() => acceptParts(3, A, [part(2, 0, 1, A)], () => undefined), /none is of iteration 3/);
});

const model = { vocab: VOCAB_SIZE, layers: 1, dModel: 32, heads: 2, context: 96, seed: 4 };
const d = { count: 3, min: 1, max: 9, ops: '+-*' };
const s: RlSettings = {
  seed: 9,
  nodeId: 'st',
  stream: 'st',
  difficulty: d,
  prompts: 5,
  samples: 3,
  temperature: 0.7,
  topP: 1,
  miniBatches: 1,
  microBatch: 4,
  microWork: CHUNK_COST_ROWS,
  skipZeroStd: false,
  grpo: grpoConfig({}),
};

test("parts sampled from the published bytes and joined are the trainer session's own graded rollouts, byte for byte, for 1, 2 and 3 parts", async () => {
  await initBackend();
  const init = Trainer.create({ model, optim: {}, toolArithmetic: true });
  const w0 = init.snapshot().weights;
  init.dispose();
  const pool = await ComputePool.start(2);
  try {
    const tr = await PooledTrainer.open(pool, 'run/node', { model, weights: w0, optim: {}, toolArithmetic: true });
    const t = 2;
    const problems = iterationProblems(s.seed, s.stream, t, s.prompts, s.difficulty);
    const want = gradeAgainst(problems, t, true, await tr.sample(s, shardRows(s, t, 0, 1, problems), 24));
    const { weights } = await tr.snapshot();
    await tr.dispose();
    for (const n of [1, 2, 3]) {
      const pol = await PooledPolicy.open(pool, `policy:${sha256Hex(weights).slice(0, 8)}`, weights, true, 'tfjs');
      const parts: GradedRollout[][] = [];
      // In reverse: the order parts finish in does not matter.
      for (let k = n - 1; k >= 0; k--)
        parts.push(
          JSON.parse(
            JSON.stringify(gradeAgainst(problems, t, true, await pol.sample(s, shardRows(s, t, k, n, problems), 24))),
          ) as GradedRollout[],
        );
      await pol.dispose();
      const got = joinGraded(parts, s.prompts * s.samples);
      assert.equal(JSON.stringify(got), JSON.stringify(want), `${n} parts`);
    }
    assert.throws(() => joinGraded([want.slice(1)], want.length), /hold 14 rows, the iteration has 15/);
  } finally {
    await pool.close();
  }
});
