/**
 * AdamW against a hand-written float64 reference (PyTorch's AdamW update), grad-norm clipping,
 * exact state round-trip, and the non-finite guard. Tolerance vs float64: 1e-6 relative
 * (float32 parameters after 3 steps).
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../ml/backend';
import { AdamW, type AdamWConfig } from '../../ml/optim';
import { NonFiniteError } from '../../ml/errors';

before(async () => {
  await initBackend();
});

/** float64 AdamW with torch.nn.utils.clip_grad_norm_ semantics, over named flat arrays. */
function refAdamW(
  p0: Record<string, number[]>,
  grads: Array<Record<string, number[]>>,
  c: AdamWConfig,
  decay: (n: string) => boolean = () => true,
) {
  const p = structuredClone(p0);
  const m: Record<string, number[]> = {},
    v: Record<string, number[]> = {};
  for (const k of Object.keys(p)) {
    m[k] = p[k].map(() => 0);
    v[k] = p[k].map(() => 0);
  }
  grads.forEach((g, i) => {
    const t = i + 1;
    const norm = Math.sqrt(
      Object.values(g)
        .flat()
        .reduce((a, x) => a + x * x, 0),
    );
    const scale = Math.min(1, c.maxGradNorm / (norm + 1e-6));
    for (const k of Object.keys(g)) {
      const wd = decay(k) ? c.weightDecay : 0;
      for (let j = 0; j < p[k].length; j++) {
        const gj = g[k][j] * scale;
        p[k][j] *= 1 - c.lr * wd;
        m[k][j] = c.beta1 * m[k][j] + (1 - c.beta1) * gj;
        v[k][j] = c.beta2 * v[k][j] + (1 - c.beta2) * gj * gj;
        p[k][j] -= (c.lr * (m[k][j] / (1 - c.beta1 ** t))) / (Math.sqrt(v[k][j] / (1 - c.beta2 ** t)) + c.eps);
      }
    }
  });
  return { p, m, v };
}

const cfg: AdamWConfig = { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1, maxGradNorm: Infinity };
const P0 = { w: [0.5, -1.0, 2.0, 0.25], b: [0.1, -0.2] };
const G = [
  { w: [0.1, -0.2, 0.3, 0.05], b: [0.01, 0.02] },
  { w: [-0.3, 0.1, 0.2, -0.05], b: [0.02, -0.04] },
  { w: [0.05, 0.05, -0.1, 0.2], b: [-0.01, 0.03] },
];

function makeVars(p: Record<string, number[]>): Record<string, tf.Variable> {
  return { w: tf.variable(tf.tensor2d(p.w, [2, 2])), b: tf.variable(tf.tensor1d(p.b)) };
}
function stepWith(opt: AdamW, g: Record<string, number[]>) {
  const gt = { w: tf.tensor2d(g.w, [2, 2]), b: tf.tensor1d(g.b) };
  try {
    return opt.step(gt);
  } finally {
    tf.dispose(Object.values(gt));
  }
}
function closeTo(got: ArrayLike<number>, want: number[], rel: number, what: string) {
  want.forEach((w, i) => assert.ok(Math.abs(got[i] - w) <= rel * Math.max(1, Math.abs(w)), `${what}[${i}] ${got[i]} vs ${w}`));
}

test('AdamW matches the float64 reference for 3 steps (decoupled decay, bias correction, decay filter)', () => {
  const vars = makeVars(P0);
  const decay = (n: string) => n !== 'b';
  const opt = new AdamW(vars, cfg, decay);
  for (const g of G) stepWith(opt, g);
  const ref = refAdamW(P0, G, cfg, decay);
  closeTo(vars.w.dataSync(), ref.p.w, 1e-6, 'w');
  closeTo(vars.b.dataSync(), ref.p.b, 1e-6, 'b');
  const st = opt.getState();
  assert.equal(st.step, 3);
  closeTo(st.m.w, ref.m.w, 1e-6, 'm.w');
  closeTo(st.v.b, ref.v.b, 1e-6, 'v.b');
  // one step by hand: Adam's first update is lr·sign(g) (eps aside), plus decay lr·wd·p
  const one = makeVars(P0);
  const opt1 = new AdamW(one, cfg);
  stepWith(opt1, G[0]);
  closeTo(
    one.w.dataSync(),
    P0.w.map((p, i) => p * (1 - 0.01) - 0.1 * Math.sign(G[0].w[i])),
    1e-6,
    'w after 1 step',
  );
  opt.dispose();
  opt1.dispose();
  tf.dispose([...Object.values(vars), ...Object.values(one)]);
});

test('global grad-norm clipping scales every gradient by maxGradNorm / norm', () => {
  const vars = makeVars(P0);
  const opt = new AdamW(vars, { ...cfg, maxGradNorm: 1.0 });
  const g = { w: [3, 0, 0, 0], b: [0, 4] }; // norm 5
  const { gradNorm, clipScale } = stepWith(opt, g);
  assert.ok(Math.abs(gradNorm - 5) < 1e-6);
  assert.ok(Math.abs(clipScale - 1 / (5 + 1e-6)) < 1e-9);
  // the first moment holds (1 − β1)·clipped gradient: 0.1 · 3/5 and 0.1 · 4/5
  const st = opt.getState();
  closeTo(st.m.w, [0.06, 0, 0, 0], 1e-6, 'm.w');
  closeTo(st.m.b, [0, 0.08], 1e-6, 'm.b');
  // and the whole trajectory matches the reference with clipping on
  const ref = refAdamW(P0, [g, G[0], { w: [10, 10, -10, 0], b: [0, 0] }], { ...cfg, maxGradNorm: 1.0 });
  stepWith(opt, G[0]); // norm < 1: unclipped
  assert.equal(stepWith(opt, { w: [10, 10, -10, 0], b: [0, 0] }).clipScale < 1, true);
  closeTo(vars.w.dataSync(), ref.p.w, 1e-6, 'w');
  opt.dispose();
  tf.dispose(Object.values(vars));
});

test('getState / setState round-trip exactly and continue identically', () => {
  const a = makeVars(P0),
    b = makeVars(P0);
  const optA = new AdamW(a, cfg);
  stepWith(optA, G[0]);
  stepWith(optA, G[1]);
  const st = optA.getState();
  // b starts from a's parameters and state
  b.w.assign(a.w);
  b.b.assign(a.b);
  const optB = new AdamW(b, cfg);
  optB.setState(structuredClone(st));
  assert.deepEqual(optB.getState(), st);
  stepWith(optA, G[2]);
  stepWith(optB, G[2]);
  assert.deepEqual(Array.from(b.w.dataSync()), Array.from(a.w.dataSync()));
  assert.deepEqual(optB.getState(), optA.getState());
  assert.throws(() => optB.setState({ ...st, m: { w: st.m.w } }), /m names do not match/);
  assert.throws(() => optB.setState({ ...st, v: { ...st.v, b: new Float32Array(3) } }), /v\["b"\] has 3 values/);
  optA.dispose();
  optB.dispose();
  tf.dispose([...Object.values(a), ...Object.values(b)]);
});

test('a non-finite gradient throws NonFiniteError and changes nothing', () => {
  const vars = makeVars(P0);
  const opt = new AdamW(vars, cfg);
  stepWith(opt, G[0]);
  const w0 = Array.from(vars.w.dataSync()),
    st0 = opt.getState();
  const tensors0 = tf.memory().numTensors;
  for (const bad of [NaN, Infinity, -Infinity]) {
    let err: unknown;
    try {
      stepWith(opt, { w: [0.1, bad, 0, 0], b: [0, 0] });
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof NonFiniteError, `${bad}: ${err}`);
    assert.equal(err.name, 'NonFiniteError');
    assert.match(err.message, /no parameter was changed/);
  }
  assert.deepEqual(Array.from(vars.w.dataSync()), w0);
  assert.deepEqual(opt.getState(), st0);
  assert.equal(tf.memory().numTensors, tensors0);
  opt.dispose();
  tf.dispose(Object.values(vars));
});

test('AdamW leaks no tensors, rejects unknown names, shapes and config keys', () => {
  const vars = makeVars(P0);
  const opt = new AdamW(vars, cfg);
  const n0 = tf.memory().numTensors;
  for (const g of G) stepWith(opt, g);
  opt.getState();
  assert.equal(tf.memory().numTensors, n0);
  const bad = tf.zeros([3]);
  assert.throws(() => opt.step({ nope: bad }), /unknown parameter "nope"/);
  assert.throws(() => opt.step({ b: bad }), /gradient "b" has shape \[3\]/);
  assert.throws(() => new AdamW(vars, { learningRate: 1 } as unknown as Partial<AdamWConfig>), /unknown config key "learningRate"/);
  assert.throws(() => new AdamW(vars, { maxGradNorm: 0 }), /maxGradNorm/);
  const before = tf.memory().numTensors;
  opt.dispose();
  assert.equal(tf.memory().numTensors, before - 4);
  tf.dispose([bad, ...Object.values(vars)]);
});
