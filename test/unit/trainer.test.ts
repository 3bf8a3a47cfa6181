import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../ml/backend';
import { CHUNK_COST_ROWS } from '../../ml/batching';
import { grpoConfig } from '../../ml/grpo';
import { Trainer } from '../../ml/trainer';
import { gradeRollouts, iterationProblems, rolloutMetrics } from '../../ml/rollouts';
import type { RlSettings } from '../../ml/rollouts';
import { sha256Hex } from '../../ml/serialize';
import { VOCAB_SIZE } from '../../ml/tokenizer';

const model = { vocab: VOCAB_SIZE, layers: 1, dModel: 32, heads: 2, context: 96, seed: 3 };
const d = { count: 3, min: 1, max: 9, ops: '+-*' };
const settings: RlSettings = {
  seed: 5,
  nodeId: 'stage',
  stream: 'stage',
  difficulty: d,
  prompts: 3,
  samples: 4,
  temperature: 0.6,
  topP: 1,
  miniBatches: 2,
  microBatch: 5,
  microWork: CHUNK_COST_ROWS,
  skipZeroStd: false,
  grpo: grpoConfig({ klCoef: 0.001 }),
};

async function rlIteration(tr: Trainer, t: number) {
  const rollouts = await tr.sampleShard(settings, t, 0, 1, 24);
  const graded = gradeRollouts(settings.seed, settings.nodeId, t, settings.prompts, d, true, rollouts);
  return { graded, metrics: await tr.update(settings, t, graded) };
}

/** A trainer (context 512) after 3 SFT steps on the warm-start traces; its KL reference is its untrained init. */
async function sftTrainer(): Promise<Trainer> {
  await initBackend();
  const base = Trainer.create({ model: { ...model, context: 512 }, optim: { lr: 3e-3 }, toolArithmetic: true });
  const ref = base.snapshot().weights;
  for (let s = 0; s < 3; s++) base.sftStep(1, s, 6, [d], { meanWrong: 1.5 });
  const tr = Trainer.create({
    model: { ...model, context: 512 },
    weights: base.snapshot().weights,
    refWeights: ref,
    optim: {},
    toolArithmetic: true,
  });
  base.dispose();
  return tr;
}

/** Eight warm-start traces as two groups of four graded rollouts, nothing forced; `keep` filters response tokens. */
async function traceRollouts(reward: (k: number) => number, keep: (id: number) => boolean = () => true, logp = (_q: number) => -1) {
  const { sftBatch } = await import('../../ml/traces');
  const { encode, BOS, EOS } = await import('../../ml/tokenizer');
  return sftBatch(4, 0, 8, d, { meanWrong: 3 }).map((ex, k) => {
    const response = [...encode(ex.response), EOS].filter(keep);
    return {
      i: Math.floor(k / 4),
      j: k % 4,
      problemId: ex.id,
      prompt: [BOS, ...encode(ex.prompt)],
      response,
      logp: response.map((_, q) => logp(q)),
      forced: [] as number[],
      truncated: false,
      reward: reward(k),
      grade: { reward: reward(k) } as never,
    };
  });
}

test('a trainer restored from a snapshot continues byte-identically (the crash-equivalence core)', async () => {
  await initBackend();
  const init = Trainer.create({ model, optim: {}, toolArithmetic: true });
  const ref = init.snapshot().weights;
  init.dispose();
  // Uninterrupted: 3 SFT steps and one RL iteration.
  const a = Trainer.create({ model, weights: ref, refWeights: ref, optim: { lr: 3e-3 }, toolArithmetic: true });
  for (let s = 0; s < 2; s++) a.sftStep(1, s, 6, [d], { meanWrong: 1.5 });
  const snap = a.snapshot();
  a.sftStep(1, 2, 6, [d], { meanWrong: 1.5 });
  await rlIteration(a, 0);
  // Interrupted after step 2: a new trainer from the snapshot redoes the rest.
  const b = Trainer.create({
    model,
    weights: snap.weights,
    optimState: snap.optim,
    refWeights: ref,
    optim: { lr: 3e-3 },
    toolArithmetic: true,
  });
  b.sftStep(1, 2, 6, [d], { meanWrong: 1.5 });
  await rlIteration(b, 0);
  assert.equal(sha256Hex(b.snapshot().weights), sha256Hex(a.snapshot().weights));
  assert.equal(Buffer.compare(Buffer.from(b.snapshot().optim), Buffer.from(a.snapshot().optim)), 0);
  // and training really moved the weights at each stage
  assert.notEqual(sha256Hex(snap.weights), sha256Hex(ref));
  assert.notEqual(sha256Hex(a.snapshot().weights), sha256Hex(snap.weights));
  // The bytes themselves: wasm's, recorded (another backend's kernels round differently).
  console.log(`byte tests on ${tf.getBackend()}: weights ${sha256Hex(a.snapshot().weights).slice(0, 12)}`);
  assert.equal(sha256Hex(a.snapshot().weights).slice(0, 16), WASM_WEIGHTS);
  for (const tr of [a, b]) tr.dispose();
});

/** sha256 (first 16 hex digits) of the weights after 3 SFT steps and one RL iteration above, on wasm. */
const WASM_WEIGHTS = '3d3ed65d9d131200';

test('SFT lowers the loss on the warm-start traces', async () => {
  await initBackend();
  const tr = Trainer.create({ model, optim: { lr: 3e-3 }, toolArithmetic: true });
  const first = tr.sftStep(1, 0, 16, [d], { meanWrong: 1.5 })['sft/loss'];
  let last = first;
  for (let s = 1; s < 30; s++) last = tr.sftStep(1, s, 16, [d], { meanWrong: 1.5 })['sft/loss'];
  assert.ok(first > 2.5, `initial loss ${first} should be near ln(${VOCAB_SIZE})`);
  assert.ok(last < first * 0.7, `loss ${first} -> ${last}`);
  tr.dispose();
});

test('RL iteration: problems are a pure function of (seed, node, t); metrics and no tensor leak', async () => {
  await initBackend();
  assert.deepEqual(iterationProblems(5, 'stage', 3, 3, d), iterationProblems(5, 'stage', 3, 3, d));
  assert.notDeepEqual(iterationProblems(5, 'stage', 3, 3, d), iterationProblems(5, 'stage', 4, 3, d));
  const tr = Trainer.create({ model, optim: { lr: 1e-3 }, toolArithmetic: true });
  await rlIteration(tr, 0);
  const before = tf.memory().numTensors;
  for (let t = 1; t < 4; t++) {
    const { graded, metrics } = await rlIteration(tr, t);
    assert.equal(graded.length, settings.prompts * settings.samples);
    assert.ok(Number.isFinite(metrics['train/loss']));
    const m = rolloutMetrics(graded, settings.samples);
    assert.ok(m['train/truncated_frac'] >= 0 && m['train/truncated_frac'] <= 1);
    assert.ok(m['train/response_len'] > 0 && m['train/response_len'] <= 24);
  }
  assert.equal(tf.memory().numTensors, before);
  tr.dispose();
});

test('a snapshot of another model shape is refused with a shape error', async () => {
  await initBackend();
  const a = Trainer.create({ model, optim: {}, toolArithmetic: true });
  const w = a.snapshot().weights;
  a.dispose();
  assert.throws(
    () => Trainer.create({ model: { ...model, dModel: 64 }, weights: w, optim: {}, toolArithmetic: true }),
    /ShapeMismatch|model\.dModel is 32, the config says 64/,
  );
});

test('micro-batches: at most `micro` rows, fewer for long rows so a pass stays under the activation budget', async () => {
  const { microBatches, PASS_BYTES, CHUNK_COST_LEN, MICRO_WORK_UNRECORDED } = await import('../../ml/batching');
  const { activationBytes } = await import('../../ml/policy');
  const cfg = { vocab: VOCAB_SIZE, layers: 3, dModel: 96, heads: 4, context: 544, seed: 1 };
  const row = (n: number) => ({ prompt: [1], response: Array.from({ length: n - 1 }, () => 2) });
  // 20 short rows then 20 context-long ones, in length order as the trainer passes them.
  const rows = [...Array.from({ length: 20 }, () => row(40)), ...Array.from({ length: 20 }, () => row(544))];
  const work = (n: number, t: number) => n * t * (t + 6 * cfg.dModel);
  // With the default cap (4 rows of 128 tokens) and the one runs recorded before `microWork` (16).
  for (const [cap, firstRows, longRows] of [
    [CHUNK_COST_ROWS, 14, 1], // 14 rows of 40 tokens: 14·40·616 = 344,960 ≤ 4·128·704 = 360,448 < 15·40·616
    [MICRO_WORK_UNRECORDED, 16, 2], // `micro` binds first; 2·544·1120 ≤ 16·128·704 < 3·544·1120
  ]) {
    const chunks = microBatches(rows, 16, cfg, cap);
    assert.deepEqual(chunks.flat(), rows, 'every row once, order kept');
    for (const c of chunks) {
      const t = Math.max(...c.map((r) => r.prompt.length + r.response.length));
      assert.ok(c.length <= 16);
      assert.ok(c.length === 1 || activationBytes(cfg, c.length, t) <= PASS_BYTES, `[${c.length}, ${t}] over budget`);
      // no micro-batch does more work than `cap` rows of 128 tokens (so threads share a step evenly)
      assert.ok(c.length === 1 || work(c.length, t) <= work(cap, CHUNK_COST_LEN), `cap ${cap}: [${c.length}, ${t}] over the work budget`);
    }
    assert.equal(chunks[0].length, firstRows, `cap ${cap}: short rows fill a micro-batch up to the work cap`);
    // the [16, 544] pass that crashed wasm is split
    const long = chunks.filter((c) => c[0].response.length === 543);
    assert.deepEqual(new Set(long.map((c) => c.length)), new Set([longRows]), `cap ${cap}: long chunks ${long.map((c) => c.length)}`);
  }
});

test('microWork changes only the rounding: the summed micro-batch gradients equal the one-pass gradient', async () => {
  // The cap decides where a mini-batch is split, never the objective: each micro-batch's loss is
  // divided by the mini-batch's token count, so the pieces sum to the whole. Reference: the same
  // mini-batch in one pass. Tolerance: 1e-5 of the gradient's largest entry (float32 sums of a
  // few dozen terms in another order).
  const { rlPlan } = await import('../../ml/batching');
  const tr = await sftTrainer();
  const graded = await traceRollouts(
    (k) => ((k * 7) % 3 === 0 ? 1 : 0),
    () => true,
    (q) => -1 - 0.01 * q,
  );
  const summed = (microBatch: number, microWork: number) => {
    const s = { ...settings, samples: 4, miniBatches: 1, microBatch, microWork, grpo: grpoConfig({ klCoef: 0.05 }) };
    const { chunks, tokens } = rlPlan(tr.policy.cfg, s, 0, graded).miniBatches[0];
    const total: Record<string, Float32Array> = {};
    for (const c of chunks) {
      const { grads } = tr.rlGrads(s, c, tokens);
      for (const [n, g] of Object.entries(grads)) {
        const acc = (total[n] ??= new Float32Array(g.length));
        for (let q = 0; q < g.length; q++) acc[q] += g[q];
      }
    }
    return { total, pieces: chunks.length };
  };
  const whole = summed(64, 1024),
    split = summed(1, 1);
  assert.equal(whole.pieces, 1);
  assert.equal(split.pieces, graded.length);
  let peak = 0,
    worst = 0;
  for (const [n, g] of Object.entries(whole.total)) {
    const h = split.total[n];
    assert.ok(h && h.length === g.length, `${n}: same shape`);
    for (let q = 0; q < g.length; q++) {
      peak = Math.max(peak, Math.abs(g[q]));
      worst = Math.max(worst, Math.abs(g[q] - h[q]));
    }
  }
  assert.ok(peak > 0, 'a gradient to compare');
  assert.ok(worst <= 1e-5 * peak, `max |split - whole| ${worst} > 1e-5 x ${peak}`);
  tr.dispose();
});

test("rlPlan with grpo.truncated 'mask': a cut response's advantage is 0 after its group is normalised; nothing else changes", async () => {
  const { rlPlan } = await import('../../ml/batching');
  // Two groups of four; in each, one success, two plain failures and one cut response.
  const graded = (await traceRollouts((k) => (k % 4 === 0 ? 1 : 0))).map((g, k) => ({ ...g, truncated: k % 4 === 3 }));
  const s = { ...settings, samples: 4, miniBatches: 1 };
  const cfgModel = { ...model, context: 512 };
  const byRow = (plan: ReturnType<typeof rlPlan>) =>
    new Map<string, (typeof plan.miniBatches)[0]['chunks'][0][0]>(
      plan.miniBatches.flatMap((mb) => mb.chunks.flat()).map((r) => [`${r.i}/${r.j}`, r]),
    );
  const absent = rlPlan(cfgModel, s, 0, graded);
  const penalize = rlPlan(cfgModel, { ...s, grpo: grpoConfig({ truncated: 'penalize' }) }, 0, graded);
  const mask = rlPlan(cfgModel, { ...s, grpo: grpoConfig({ truncated: 'mask' }) }, 0, graded);
  assert.deepEqual(penalize, absent, "'penalize' is the objective without the key");
  const [a, m] = [byRow(absent), byRow(mask)];
  assert.equal(m.size, graded.length);
  // Reference: Eq. 2.1 by hand for a group of rewards [1, 0, 0, 0] (the cut one counts as a failure; sample std, n − 1).
  const mean = 0.25,
    std = Math.sqrt((0.75 ** 2 + 3 * 0.25 ** 2) / 3);
  for (const g of graded) {
    const key = `${g.i}/${g.j}`;
    if (g.truncated) {
      assert.ok(a.get(key)!.adv < 0, 'penalized: a cut response is a failure');
      assert.equal(m.get(key)!.adv, 0, 'masked: no policy-gradient term');
    } else {
      assert.equal(m.get(key)!.adv, a.get(key)!.adv);
      assert.ok(Math.abs(m.get(key)!.adv - (g.reward - mean) / std) < 1e-3, `${key}: ${m.get(key)!.adv}`);
    }
  }
  // The cut responses stay in the loss's token count (their KL and entropy terms remain).
  assert.equal(mask.miniBatches[0].tokens, absent.miniBatches[0].tokens);
  assert.throws(() => grpoConfig({ truncated: 'drop' as never }), /truncated/);
});

test('rlPlan with grpo.maskMarks: the check-mark tokens leave the loss, nothing else does', async () => {
  const { sftBatch } = await import('../../ml/traces');
  const { rlPlan } = await import('../../ml/batching');
  const { encode, BOS, EOS, OK, NO } = await import('../../ml/tokenizer');
  const examples = sftBatch(4, 0, 8, d, { meanWrong: 3 });
  const graded = examples.map((ex, k) => {
    const response = [...encode(ex.response), EOS];
    // Pretend the environment wrote the first token (as tool arithmetic would), to check forced positions survive.
    return {
      i: Math.floor(k / 4),
      j: k % 4,
      problemId: ex.id,
      prompt: [BOS, ...encode(ex.prompt)],
      response,
      logp: response.map(() => -1),
      forced: [0],
      truncated: false,
      reward: k % 2,
      grade: { reward: k % 2 } as never,
    };
  });
  const cfgModel = { ...model, context: 512 };
  const plain = rlPlan(cfgModel, { ...settings, samples: 4, miniBatches: 1 }, 0, graded);
  const masked = rlPlan(cfgModel, { ...settings, samples: 4, miniBatches: 1, grpo: grpoConfig({ maskMarks: true }) }, 0, graded);
  const marks = graded.reduce((a, g) => a + g.response.filter((id) => id === OK || id === NO).length, 0);
  assert.ok(marks >= graded.length, `${marks} marks`);
  assert.equal(plain.miniBatches[0].tokens - masked.miniBatches[0].tokens, marks);
  for (const row of masked.miniBatches[0].chunks.flat()) {
    const want = [0, ...row.response.flatMap((id, k) => (k > 0 && (id === OK || id === NO) ? [k] : []))];
    assert.deepEqual(row.forced, want);
  }
  for (const row of plain.miniBatches[0].chunks.flat()) assert.deepEqual(row.forced, [0]);
});

test('rlGrads with grpo.klMarkCoef: the KL reaches the check-mark tokens and nothing else', async () => {
  const { rlPlan } = await import('../../ml/batching');
  const { BOS, EOS, OK, NO, isMark } = await import('../../ml/tokenizer');
  const tr = await sftTrainer();
  const rows = (dropMarks: boolean) =>
    traceRollouts(
      (k) => k % 2,
      (id) => !(dropMarks && isMark(id)),
    );
  const grads = (graded: Awaited<ReturnType<typeof rows>>, grpo: Parameters<typeof grpoConfig>[0]) => {
    const s = { ...settings, samples: 4, miniBatches: 1, microBatch: 64, grpo: grpoConfig(grpo) };
    const plan = rlPlan(tr.policy.cfg, s, 0, graded);
    const { grads: g } = tr.rlGrads(s, plan.miniBatches[0].chunks[0], plan.miniBatches[0].tokens);
    return sha256Hex(
      Buffer.concat(
        Object.keys(g)
          .sort()
          .map((n) => Buffer.from(g[n].buffer, g[n].byteOffset, g[n].byteLength)),
      ),
    );
  };
  const marked = await rows(false),
    unmarked = await rows(true);
  assert.ok(
    marked.some((r) => r.response.some(isMark)),
    'the traces hold marks',
  );
  // With marks: a KL on them alone changes the gradient.
  assert.notEqual(grads(marked, { klCoef: 0, klMarkCoef: 0.5 }), grads(marked, { klCoef: 0 }));
  // Without marks: it has nothing to act on.
  assert.equal(grads(unmarked, { klCoef: 0, klMarkCoef: 0.5 }), grads(unmarked, { klCoef: 0 }));
  // Equal to klCoef: the same bytes as leaving it unset.
  assert.equal(grads(marked, { klCoef: 0.05, klMarkCoef: 0.05 }), grads(marked, { klCoef: 0.05 }));
  // pgMarks 'ok': the `no` marks leave the policy gradient; with no `no` mark it has nothing to act on.
  assert.ok(
    marked.some((r) => r.response.includes(NO)),
    'the traces hold `no` marks',
  );
  assert.notEqual(grads(marked, { pgMarks: 'ok' }), grads(marked, {}));
  assert.equal(grads(unmarked, { pgMarks: 'ok' }), grads(unmarked, {}));
  assert.equal(grads(marked, { pgMarks: 'all' }), grads(marked, {}));
  tr.dispose();
  // Where the marks land: logp index P + k − 1 predicts response token k, and only policy-written marks count.
  const { pack } = await import('../../ml/batching');
  const row = { prompt: [BOS, 5, 6], response: [7, OK, 8, NO, EOS], forced: [3] };
  const p = pack([row], true, { marks: true });
  const got = Array.from(p.marks!.dataSync());
  const want = new Array(row.prompt.length + row.response.length - 1).fill(0);
  want[row.prompt.length + 1 - 1] = 1; // the `ok` at k = 1; the `no` at k = 3 was written by the environment
  assert.deepEqual(got, want);
  assert.equal(p.noMarks, undefined);
  tf.dispose([p.tokens, p.mask, p.oldLogp!, p.adv!, p.marks!]);
  // The `no` marks: policy-written ones only, at the same positions.
  const row2 = { prompt: [BOS, 5, 6], response: [7, NO, 8, OK, NO, EOS], forced: [4] };
  const q = pack([row2], true, { noMarks: true });
  const want2 = new Array(row2.prompt.length + row2.response.length - 1).fill(0);
  want2[row2.prompt.length + 1 - 1] = 1; // the `no` at k = 1; the `ok` at k = 3 is not a `no`, the `no` at k = 4 was forced
  assert.deepEqual(Array.from(q.noMarks!.dataSync()), want2);
  assert.equal(q.marks, undefined);
  tf.dispose([q.tokens, q.mask, q.oldLogp!, q.adv!, q.noMarks!]);
});

test('on ONNX Runtime too: a trainer restored from a snapshot continues byte-identically, and ORT rollouts train', async () => {
  await initBackend();
  const init = Trainer.create({ model, optim: {}, toolArithmetic: true });
  const ref = init.snapshot().weights;
  init.dispose();
  const make = (weights: Uint8Array, optimState?: Uint8Array) =>
    Trainer.create({ model, weights, optimState, refWeights: ref, optim: { lr: 3e-3 }, toolArithmetic: true, engine: 'ort' });
  // Uninterrupted: two RL iterations sampled on ORT (old log-probs rescored by tfjs).
  const a = make(ref);
  await rlIteration(a, 0);
  const snap = a.snapshot();
  await rlIteration(a, 1);
  // Crashed after iteration 0: a new trainer from the snapshot redoes iteration 1.
  const b = make(snap.weights, snap.optim);
  await rlIteration(b, 1);
  assert.equal(sha256Hex(b.snapshot().weights), sha256Hex(a.snapshot().weights));
  assert.equal(Buffer.compare(Buffer.from(b.snapshot().optim), Buffer.from(a.snapshot().optim)), 0);
  assert.notEqual(sha256Hex(snap.weights), sha256Hex(ref));
  for (const tr of [a, b]) tr.dispose();
});
