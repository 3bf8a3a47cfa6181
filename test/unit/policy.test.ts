import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../ml/backend';
import type { Policy, PolicyConfig } from '../../ml/policy';
import {
  assignParams,
  countParams,
  createPolicy,
  disposePolicy,
  forwardLogits,
  growContext,
  layerNorm,
  linear,
  mm,
  paramShapes,
  readParams,
  tokenLogProbs,
  useFastSlice,
} from '../../ml/policy';
import { Rng } from '../../ml/rng';

const CFG: PolicyConfig = { vocab: 7, layers: 2, dModel: 8, heads: 2, context: 8, seed: 11 };
const TOKENS = [
  [1, 3, 4, 6, 0, 5],
  [1, 6, 2, 2, 5, 3],
];

before(async () => {
  await initBackend();
});

/** Random parameters with O(1) logits, so gradients and argmaxes are far from trivial. */
function randomize(policy: Policy, seed: number, std = 0.5): void {
  const rng = new Rng(seed);
  const values = new Map<string, Float32Array>();
  for (const [name, v] of policy.params) {
    const x = new Float32Array(v.size);
    for (let i = 0; i < x.length; i++) x[i] = (name.endsWith('.g') ? 1 : 0) + std * rng.normal();
    values.set(name, x);
  }
  assignParams(policy, values);
}

// ---- An independent float64 reference of the same network, written out in plain loops. ----
type P64 = Map<string, Float64Array>;
const vecMat = (x: ArrayLike<number>, w: Float64Array, cols: number): number[] => {
  const out = new Array(cols).fill(0);
  for (let i = 0; i < x.length; i++) for (let j = 0; j < cols; j++) out[j] += x[i] * w[i * cols + j];
  return out;
};
const ln = (x: number[], g: Float64Array, b: Float64Array): number[] => {
  const mean = x.reduce((a, c) => a + c, 0) / x.length;
  const variance = x.reduce((a, c) => a + (c - mean) ** 2, 0) / x.length;
  return x.map((c, i) => ((c - mean) / Math.sqrt(variance + 1e-5)) * g[i] + b[i]);
};
const geluRef = (x: number) => x / (1 + Math.exp(-1.702 * x));

function refLogits(cfg: PolicyConfig, p: P64, tokens: number[]): number[][] {
  const { dModel: d, heads, vocab } = cfg;
  const dh = d / heads;
  const T = tokens.length;
  let xs = tokens.map((tok, t) => Array.from({ length: d }, (_, j) => p.get('wte')![tok * d + j] + p.get('wpe')![t * d + j]));
  for (let l = 0; l < cfg.layers; l++) {
    const g = (n: string) => p.get(`h${l}.${n}`)!;
    const qkv = xs.map((x) => vecMat(ln(x, g('ln1.g'), g('ln1.b')), g('attn.wqkv'), 3 * d).map((v, j) => v + g('attn.bqkv')[j]));
    const att = xs.map(() => new Array(d).fill(0));
    for (let h = 0; h < heads; h++) {
      for (let t = 0; t < T; t++) {
        const s: number[] = [];
        for (let u = 0; u <= t; u++) {
          let dot = 0;
          for (let e = 0; e < dh; e++) dot += qkv[t][h * dh + e] * qkv[u][d + h * dh + e];
          s.push(dot / Math.sqrt(dh));
        }
        const m = Math.max(...s);
        const w = s.map((v) => Math.exp(v - m));
        const z = w.reduce((a, c) => a + c, 0);
        for (let u = 0; u <= t; u++) for (let e = 0; e < dh; e++) att[t][h * dh + e] += (w[u] / z) * qkv[u][2 * d + h * dh + e];
      }
    }
    xs = xs.map((x, t) => {
      const a = vecMat(att[t], g('attn.wo'), d);
      const x1 = x.map((v, j) => v + a[j] + g('attn.bo')[j]);
      const hid = vecMat(ln(x1, g('ln2.g'), g('ln2.b')), g('mlp.w1'), 4 * d).map((v, j) => geluRef(v + g('mlp.b1')[j]));
      const o = vecMat(hid, g('mlp.w2'), d);
      return x1.map((v, j) => v + o[j] + g('mlp.b2')[j]);
    });
  }
  return xs.map((x) => vecMat(ln(x, p.get('lnf.g')!, p.get('lnf.b')!), p.get('head')!, vocab));
}

/** sum over rows/positions of logp + 0.3 * entropy, the objective the gradient test differentiates. */
function refObjective(cfg: PolicyConfig, p: P64, rows: number[][]): number {
  let total = 0;
  for (const toks of rows) {
    const logits = refLogits(cfg, p, toks.slice(0, -1));
    logits.forEach((lg, t) => {
      const m = Math.max(...lg);
      const lse = m + Math.log(lg.reduce((a, c) => a + Math.exp(c - m), 0));
      const lsm = lg.map((v) => v - lse);
      total += lsm[toks[t + 1]] - 0.3 * lsm.reduce((a, c) => a + Math.exp(c) * c, 0);
    });
  }
  return total;
}

const to64 = (m: Map<string, Float32Array>): P64 => new Map([...m].map(([k, v]) => [k, Float64Array.from(v)]));

test('config validation, stable parameter order, seeded init', () => {
  assert.throws(() => createPolicy({ ...CFG, dModel: 9 }), /multiple of heads/);
  assert.throws(() => createPolicy({ ...CFG, layers: 0 }), /layers must be an integer/);
  assert.throws(() => createPolicy({ ...CFG, extra: 1 } as PolicyConfig), /unknown key/);
  const a = createPolicy(CFG);
  const b = createPolicy(CFG);
  const c = createPolicy({ ...CFG, seed: 12 });
  try {
    assert.deepEqual(
      [...a.params.keys()],
      paramShapes(CFG).map(([n]) => n),
    );
    const d = CFG.dModel,
      V = CFG.vocab;
    const perLayer = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d);
    assert.equal(countParams(a), V * d + CFG.context * d + CFG.layers * perLayer + 2 * d + d * V);
    const [va, vb, vc] = [a, b, c].map((p) => readParams(p).get('h1.attn.wqkv')!);
    assert.deepEqual(va, vb);
    assert.notDeepEqual(va, vc);
    assert.deepEqual(readParams(a).get('h0.ln1.g'), new Float32Array(d).fill(1));
    // GPT-2 init scale: std 0.02, residual projections 0.02 / sqrt(2 * layers)
    const std = (x: Float32Array) => Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length);
    assert.ok(Math.abs(std(readParams(createPolicy({ ...CFG, dModel: 64, heads: 2 })).get('h0.mlp.w1')!) - 0.02) < 0.001);
  } finally {
    [a, b, c].forEach(disposePolicy);
  }
});

test('forwardLogits matches a float64 reference implementation (max abs diff < 1e-5)', () => {
  const policy = createPolicy(CFG);
  randomize(policy, 5);
  const ref = to64(readParams(policy));
  const logits = forwardLogits(policy, tf.tensor2d(TOKENS, undefined, 'int32'));
  const got = logits.arraySync();
  logits.dispose();
  let maxDiff = 0;
  TOKENS.forEach((toks, b) =>
    refLogits(CFG, ref, toks).forEach((row, t) => row.forEach((v, k) => (maxDiff = Math.max(maxDiff, Math.abs(v - got[b][t][k]))))),
  );
  assert.ok(maxDiff < 1e-5, `max abs diff ${maxDiff}`);
  console.log(`reference parity: max abs logit diff ${maxDiff.toExponential(2)}`);
  disposePolicy(policy);
});

test('tokenLogProbs: picks log-softmax at the next token, entropy, temperature, causality', () => {
  const policy = createPolicy(CFG);
  randomize(policy, 6);
  const toks = tf.tensor2d(TOKENS, undefined, 'int32');
  const logits = forwardLogits(policy, toks).arraySync();
  for (const temperature of [1, 0.5]) {
    const { logp, entropy } = tokenLogProbs(policy, toks, { temperature });
    const [lp, ent] = [logp.arraySync(), entropy.arraySync()];
    tf.dispose([logp, entropy]);
    assert.deepEqual([lp.length, lp[0].length], [2, TOKENS[0].length - 1]);
    TOKENS.forEach((row, b) => {
      for (let t = 0; t < row.length - 1; t++) {
        const z = logits[b][t].map((v) => v / temperature);
        const m = Math.max(...z);
        const lse = m + Math.log(z.reduce((a, c) => a + Math.exp(c - m), 0));
        assert.ok(Math.abs(lp[b][t] - (z[row[t + 1]] - lse)) < 1e-5);
        const h = -z.reduce((a, c) => a + Math.exp(c - lse) * (c - lse), 0);
        assert.ok(Math.abs(ent[b][t] - h) < 1e-5);
      }
    });
  }
  // Right padding: changing later tokens never changes earlier log-probs.
  const padded = tf.tensor2d([[...TOKENS[0].slice(0, 4), 0, 0]], undefined, 'int32');
  const a = tokenLogProbs(policy, tf.tensor2d([TOKENS[0]], undefined, 'int32'));
  const b = tokenLogProbs(policy, padded);
  assert.deepEqual(Array.from(a.logp.dataSync()).slice(0, 3), Array.from(b.logp.dataSync()).slice(0, 3));
  tf.dispose([a.logp, a.entropy, b.logp, b.entropy, toks, padded]);
  disposePolicy(policy);
});

test('gradient of sum(logp) + 0.3 sum(entropy) matches float64 finite differences (rel 1e-3)', () => {
  const policy = createPolicy(CFG);
  randomize(policy, 7);
  const toks = tf.tensor2d(TOKENS, undefined, 'int32');
  const vars = [...policy.params.values()];
  const { value, grads } = tf.variableGrads(() => {
    const { logp, entropy } = tokenLogProbs(policy, toks);
    return tf.add(tf.sum(logp), tf.mul(tf.sum(entropy), 0.3)) as tf.Scalar;
  }, vars);
  const ref = to64(readParams(policy));
  assert.ok(Math.abs(value.dataSync()[0] - refObjective(CFG, ref, TOKENS)) < 1e-4);
  const names = [...policy.params.keys()];
  const rng = new Rng(99);
  const eps = 1e-6;
  let worst = 0;
  for (const name of names) {
    const g = grads[vars[names.indexOf(name)].name].dataSync();
    const p = ref.get(name)!;
    // wpe rows past T-2 get no gradient; sample from the used part of every tensor.
    const used = name === 'wpe' ? (TOKENS[0].length - 1) * CFG.dModel : p.length;
    for (let k = 0; k < 3; k++) {
      const i = rng.int(0, used - 1);
      const orig = p[i];
      p[i] = orig + eps;
      const up = refObjective(CFG, ref, TOKENS);
      p[i] = orig - eps;
      const down = refObjective(CFG, ref, TOKENS);
      p[i] = orig;
      const fd = (up - down) / (2 * eps);
      const err = Math.abs(g[i] - fd) / Math.max(Math.abs(fd), 1e-2);
      worst = Math.max(worst, err);
      assert.ok(err < 1e-3, `${name}[${i}]: tf ${g[i]} vs finite difference ${fd}`);
    }
  }
  assert.ok(worst < 1e-3);
  console.log(`gradient check: worst relative error ${worst.toExponential(2)}`);
  tf.dispose([value, toks, ...Object.values(grads)]);
  disposePolicy(policy);
});

test('custom-gradient mm / linear / layerNorm equal tfjs built-in gradients (1e-5)', () => {
  const rng = new Rng(3);
  const rand = (shape: number[]) =>
    tf.tensor(
      Float32Array.from({ length: shape.reduce((a, b) => a * b) }, () => rng.normal()),
      shape,
    );
  const a = rand([5, 7]) as tf.Tensor2D,
    w = rand([7, 3]) as tf.Tensor2D,
    w2 = rand([7, 30]) as tf.Tensor2D,
    b = rand([3]) as tf.Tensor1D;
  const g = rand([7]) as tf.Tensor1D,
    beta = rand([7]) as tf.Tensor1D,
    dy = rand([5, 3]);
  const close = (x: tf.Tensor[], y: tf.Tensor[]) =>
    x.forEach((t, i) => assert.ok(tf.max(tf.abs(tf.sub(t, y[i]))).dataSync()[0] < 1e-5, `gradient ${i}`));
  close(
    tf.grads((p: tf.Tensor, q: tf.Tensor) => tf.mul(mm(p as tf.Tensor2D, q as tf.Tensor2D), dy))([a, w]),
    tf.grads((p: tf.Tensor, q: tf.Tensor) => tf.mul(tf.matMul(p, q), dy))([a, w]),
  );
  // The other weightGrad branch: transpose(transpose(dy) @ a) when the activation is wider.
  const dy2 = rand([5, 30]);
  close(
    tf.grads((p: tf.Tensor, q: tf.Tensor) => tf.mul(mm(p as tf.Tensor2D, q as tf.Tensor2D), dy2))([a, w2]),
    tf.grads((p: tf.Tensor, q: tf.Tensor) => tf.mul(tf.matMul(p, q), dy2))([a, w2]),
  );
  close(
    tf.grads((p: tf.Tensor, q: tf.Tensor, r: tf.Tensor) => tf.mul(linear(p as tf.Tensor2D, q as tf.Tensor2D, r), dy))([a, w, b]),
    tf.grads((p: tf.Tensor, q: tf.Tensor, r: tf.Tensor) => tf.mul(tf.add(tf.matMul(p, q), r), dy))([a, w, b]),
  );
  const lnRef = (x: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => {
    const xc = tf.sub(x, tf.mean(x, -1, true));
    return tf.add(tf.mul(tf.mul(xc, tf.rsqrt(tf.add(tf.mean(tf.square(xc), -1, true), 1e-5))), gg), bb);
  };
  const dyLn = rand([5, 7]);
  close(
    tf.grads((x: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => tf.mul(layerNorm(x as tf.Tensor2D, gg, bb), dyLn))([a, g, beta]),
    tf.grads((x: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => tf.mul(lnRef(x, gg, bb), dyLn))([a, g, beta]),
  );
});

test('the fast wasm Slice kernel returns what the original computes', () => {
  useFastSlice();
  const rng = new Rng(8);
  const x2 = tf.tensor2d(
    Float32Array.from({ length: 12 * 10 }, () => rng.normal()),
    [12, 10],
  );
  const x3 = tf.tensor3d(
    Float32Array.from({ length: 4 * 5 * 6 }, () => rng.normal()),
    [4, 5, 6],
  );
  const cases: Array<[tf.Tensor, number[], number[]]> = [
    [x2, [3, 0], [4, 10]], // contiguous rows
    [x2, [2, 3], [5, 4]], // a 2-D window
    [x2, [0, 9], [12, 1]], // one column
    [x3, [1, 0, 0], [2, 5, 6]], // contiguous 3-D
    [x3, [1, 2, 1], [2, 2, 3]], // 3-D window: the original kernel's path
  ];
  const cpu = (t: tf.Tensor, begin: number[], size: number[]) => {
    const data = t.arraySync() as number[][] | number[][][];
    const pick = (a: unknown, dim: number): unknown =>
      Array.isArray(a) ? a.slice(begin[dim], begin[dim] + size[dim]).map((e) => pick(e, dim + 1)) : a;
    return pick(data, 0);
  };
  for (const [t, begin, size] of cases) {
    const s = tf.slice(t, begin, size);
    assert.deepEqual(s.arraySync(), cpu(t, begin, size), `slice ${begin} ${size}`);
    s.dispose();
  }
  tf.dispose([x2, x3]);
});

test('a pass too big for the wasm heap fails with a clear error before running', () => {
  const policy = createPolicy({ vocab: 7, layers: 4, dModel: 8, heads: 4, context: 2048, seed: 1 });
  const tokens = tf.zeros([64, 2048], 'int32') as tf.Tensor2D;
  if (tf.getBackend() === 'wasm') assert.throws(() => forwardLogits(policy, tokens), /MiB of activations.*micro-batches/);
  tokens.dispose();
  disposePolicy(policy);
});

test('growContext keeps every parameter and old position, so short sequences score identically', () => {
  const policy = createPolicy(CFG);
  randomize(policy, 9);
  const grown = growContext(policy, CFG.context + 24);
  assert.equal(grown.cfg.context, CFG.context + 24);
  const before = readParams(policy),
    after = readParams(grown);
  for (const [name, v] of before) {
    const w = after.get(name)!;
    if (name === 'wpe') assert.deepEqual(w.subarray(0, v.length), v);
    else assert.deepEqual(w, v, name);
  }
  // New rows are the seeded initialiser's, not zeros and not copies.
  const extra = after.get('wpe')!.subarray(before.get('wpe')!.length);
  assert.ok(extra.some((x) => x !== 0) && Math.abs(extra.reduce((a, x) => a + x * x, 0) / extra.length - 0.02 ** 2) < 1e-4);
  const toks = tf.tensor2d(TOKENS, undefined, 'int32');
  const [a, b] = [forwardLogits(policy, toks), forwardLogits(grown, toks)];
  assert.deepEqual(b.arraySync(), a.arraySync());
  tf.dispose([toks, a, b]);
  assert.throws(() => growContext(policy, CFG.context - 1), /cannot grow context/);
  disposePolicy(policy);
  disposePolicy(grown);
});
