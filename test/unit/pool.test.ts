import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ApplicationFailure } from '@temporalio/common';
import { classify } from '../../activities/errors';
import { ErrorTypes } from '../../activities/types';
import { ComputePool, PooledPolicy, PooledTrainer } from '../../compute/pool';
import { initBackend } from '../../ml/backend';
import { CHUNK_COST_ROWS } from '../../ml/batching';
import { grpoConfig } from '../../ml/grpo';
import { sha256Hex } from '../../ml/serialize';
import { VOCAB_SIZE } from '../../ml/tokenizer';
import { Trainer } from '../../ml/trainer';
import { gradeRollouts } from '../../ml/rollouts';
import type { RlSettings } from '../../ml/rollouts';

const model = { vocab: VOCAB_SIZE, layers: 2, dModel: 32, heads: 2, context: 128, seed: 3 };
const d = { count: 3, min: 1, max: 9, ops: '+-*' };
const s: RlSettings = {
  seed: 5,
  nodeId: 'st',
  stream: 'st',
  difficulty: d,
  prompts: 5,
  samples: 4,
  temperature: 0.8,
  topP: 1,
  miniBatches: 2,
  microBatch: 3,
  microWork: CHUNK_COST_ROWS,
  skipZeroStd: false,
  grpo: grpoConfig({ klCoef: 0.001 }),
};
const evalSpec = {
  seed: 2,
  split: 'eval' as const,
  difficulty: d,
  budgets: [16, 48],
  prompts: 5,
  samples: 3,
  temperature: 0.6,
  ks: [1],
  offset: 0,
};
const hash = (x: unknown) => sha256Hex(new TextEncoder().encode(JSON.stringify(x)));

/** 2 SFT steps, 2 RL iterations and an evaluation; the hashes of everything they produce. */
async function trace(tr: Trainer | PooledTrainer, evaluate: (w: Uint8Array) => Promise<unknown>) {
  const out: string[] = [];
  for (let k = 0; k < 2; k++) out.push(hash(await tr.sftStep(1, k, 10, [d], { meanWrong: 2 }, { microBatch: 3, markWeight: 3 })));
  for (let t = 0; t < 2; t++) {
    const r = await tr.sampleShard(s, t, 0, 1, 40);
    out.push(hash(r));
    out.push(hash(await tr.update(s, t, gradeRollouts(s.seed, s.stream, t, s.prompts, d, true, r))));
  }
  const snap = await tr.snapshot();
  out.push(sha256Hex(snap.weights), sha256Hex(snap.optim));
  out.push(hash(await evaluate(snap.weights)));
  return out;
}

/**
 * The pool on 1 and 2 threads against the in-process trainer, sampling on `engine`: rollouts
 * (and, on ort, the rescored old log-probs), updates, snapshots and an evaluation, byte for byte.
 */
async function poolMatchesInProcess(engine: 'tfjs' | 'ort') {
  await initBackend();
  const init = Trainer.create({ model, optim: {}, toolArithmetic: true });
  const w0 = init.snapshot().weights;
  init.dispose();
  const create = { model, weights: w0, refWeights: w0, optim: { lr: 3e-3 }, toolArithmetic: true, engine };
  const local = Trainer.create(create);
  const want = await trace(local, async (w) => {
    const e = Trainer.create({ model, weights: w, optim: {}, toolArithmetic: true, engine });
    try {
      return await e.evaluate(evalSpec);
    } finally {
      e.dispose();
    }
  });
  local.dispose();
  for (const n of [1, 2]) {
    const pool = await ComputePool.start(n);
    try {
      const tr = await PooledTrainer.open(pool, 'run/node', create);
      const got = await trace(tr, async (w) => {
        const p = await PooledPolicy.open(pool, 'run/eval', w, true, engine);
        try {
          return await p.evaluate(evalSpec);
        } finally {
          await p.dispose();
        }
      });
      assert.deepEqual(got, want, `${engine}, ${n} thread(s)`);
      await tr.dispose();
      const mem = await pool.memory();
      assert.equal(mem.length, n);
      for (const m of mem) assert.equal(m.sessions, 0, 'closed sessions leave nothing on a thread');
    } finally {
      await pool.close();
    }
  }
}

test("compute pool: 1 and 2 threads give the in-process trainer's bytes (fixed reduction order, per-row sampling seeds)", () =>
  poolMatchesInProcess('tfjs'));

test("compute pool, engine ort: 1 and 2 threads give the in-process trainer's bytes (rollouts, rescored old log-probs, updates, evaluation)", () =>
  poolMatchesInProcess('ort'));

test("compute pool: a thread's deterministic error comes back typed; a lost thread fails its sessions, not the pool", async () => {
  const pool = await ComputePool.start(2);
  try {
    await assert.rejects(
      PooledTrainer.open(pool, 'r/n', { model: { ...model, heads: 3 }, optim: {}, toolArithmetic: true }),
      (e: Error) => e.name === 'InvalidArgumentError' || e.name === 'ShapeMismatchError',
    );
    const tr = await PooledTrainer.open(pool, 'r/n', { model, optim: {}, toolArithmetic: true });
    // Kill one thread the hard way: its pending work and every session opened before fail as lost.
    void (pool as unknown as { threads: Array<{ worker: { terminate(): Promise<number> } }> }).threads[1].worker.terminate();
    await new Promise((r) => setTimeout(r, 200));
    await assert.rejects(tr.sftStep(1, 0, 4, [d], {}), (e: Error) => e.name === 'ReplicaLostError');
    // ...classified like a lost worker: non-retryable SessionLost, so the workflow re-opens.
    const lost = classify(await tr.sftStep(1, 0, 4, [d], {}).catch((e: unknown) => e)) as ApplicationFailure;
    assert.ok(lost instanceof ApplicationFailure && lost.type === ErrorTypes.sessionLost && lost.nonRetryable, String(lost));
    // The pool replaced the thread: a new session works on both threads.
    const again = await PooledTrainer.open(pool, 'r/n', { model, optim: {}, toolArithmetic: true });
    const m = await again.sftStep(1, 0, 4, [d], {});
    assert.ok(Number.isFinite(m['sft/loss']));
  } finally {
    await pool.close();
  }
});

test('compute pool: dispose never frees replicas under an operation in flight; the operation stops at its next optimiser step', async () => {
  const pool = await ComputePool.start(2);
  try {
    const create = { model, optim: { lr: 3e-3 }, toolArithmetic: true };
    const old = await PooledTrainer.open(pool, 'r/n#1', create);
    const r = await old.sampleShard(s, 0, 0, 1, 40);
    const graded = gradeRollouts(s.seed, s.stream, 0, s.prompts, d, true, r);
    // s.miniBatches = 2: the update takes two optimiser steps; dispose arrives during the first.
    const order: string[] = [];
    const update = old
      .update(s, 0, graded)
      .then(
        () => 'completed',
        (e: Error) => e.name,
      )
      .finally(() => order.push('update settled'));
    assert.equal(old.busy, true);
    const disposed = old.dispose().then(() => order.push('replicas freed'));
    // A re-open of the same node (its own pool key) meanwhile, then its reference bytes.
    const fresh = await PooledTrainer.open(pool, 'r/n#2', create);
    const before = sha256Hex((await fresh.snapshot()).weights);
    assert.equal(await update, 'ReplicaLostError', 'the old update must stop (as a lost session), not run on');
    await disposed;
    assert.deepEqual(order, ['update settled', 'replicas freed']);
    assert.equal(old.busy, false);
    assert.equal(sha256Hex((await fresh.snapshot()).weights), before, 'the stale update touched the re-opened session');
    const mem = await pool.memory();
    for (const m of mem) assert.equal(m.sessions, 1, 'the old replicas are freed once the update stopped; the new ones stay');
    // The old session refuses new work at once.
    await assert.rejects(old.sftStep(1, 0, 4, [d], {}), (e: Error) => e.name === 'ReplicaLostError');
    await fresh.dispose();
  } finally {
    await pool.close();
  }
});
