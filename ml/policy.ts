/**
 * The policy: a GPT-2-style decoder-only transformer (pre-LayerNorm, causal multi-head
 * attention, GELU MLP (sigmoid form), learned positional embeddings, final LayerNorm, untied
 * output head), written for the tfjs wasm backend (docs/ARCHITECTURE.md "Compute backends"):
 * - every matmul is a rank-2 `tf.matMul` with no transpose flags (wasm's only fast path),
 *   wrapped in `tf.customGrad` so the backward pass uses explicit transposes too;
 * - attention runs as one 2-D matmul pair per (batch row, head) slice, not batched, inside
 *   a custom op; the slices are memcpys thanks to `useFastSlice` (wasm's own Slice copies
 *   the whole input per call);
 * - LayerNorm and bias gradients are hand-written (column sums as ones-matmuls);
 * - tokens are embedded with `oneHot(ids).matMul(table)` (wasm has no gather gradient)
 *   and log-probs are picked with `logSoftmax(x).mul(oneHot(a)).sum(-1)`; one-hots are
 *   built int32 and cast (wasm's float32 oneHot is all zeros).
 *
 * Sequences of different lengths are right-padded: attention is causal, so positions
 * before the padding never see it; mask the padded targets out of the loss.
 */
import * as tf from '@tensorflow/tfjs-core';
// tfjs-core alone registers no gradients (the tfjs umbrella package does this import).
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import { Rng, deriveSeed } from './rng';
import { InvalidArgumentError, ShapeMismatchError } from './errors';

export interface PolicyConfig {
  /** Vocabulary size (ml/tokenizer VOCAB_SIZE). */
  vocab: number;
  /** Transformer blocks. */
  layers: number;
  /** Residual width; a multiple of `heads`. */
  dModel: number;
  heads: number;
  /** Longest sequence (prompt + response) the positional table covers. */
  context: number;
  /** Initialisation seed: parameter `name` is drawn from `Rng(deriveSeed(seed, 'init', name))`. */
  seed: number;
}

export interface Policy {
  readonly cfg: PolicyConfig;
  /** Parameters by name, in the stable order of `paramShapes(cfg)`. */
  readonly params: Map<string, tf.Variable>;
}

/** GPT-2 initialisation scale; residual output projections are scaled by 1/sqrt(2 * layers). */
const INIT_STD = 0.02;
const LN_EPS = 1e-5;
/** Additive mask for future positions: exp(-1e9 - max) is exactly 0 in float32. */
const MASKED = -1e9;

/** Copy a config into canonical key order, rejecting bad values (loudly, at creation). */
export function checkConfig(cfg: PolicyConfig): PolicyConfig {
  const c: PolicyConfig = {
    vocab: cfg.vocab,
    layers: cfg.layers,
    dModel: cfg.dModel,
    heads: cfg.heads,
    context: cfg.context,
    seed: cfg.seed,
  };
  for (const [k, v] of Object.entries(c)) {
    const min = k === 'seed' ? 0 : 1;
    if (!Number.isInteger(v) || v < min)
      throw new InvalidArgumentError(`policy config: ${k} must be an integer >= ${min} (got ${String(v)})`);
  }
  const extra = Object.keys(cfg).filter((k) => !(k in c));
  if (extra.length) throw new InvalidArgumentError(`policy config: unknown key(s) ${extra.join(', ')}`);
  if (c.dModel % c.heads !== 0) throw new InvalidArgumentError(`policy config: dModel ${c.dModel} is not a multiple of heads ${c.heads}`);
  return c;
}

/** Every parameter's name and shape, in the stable order used by `params` and checkpoints. */
export function paramShapes(cfg: PolicyConfig): Array<[string, number[]]> {
  const { vocab: v, layers, dModel: d, context } = cfg;
  const out: Array<[string, number[]]> = [
    ['wte', [v, d]],
    ['wpe', [context, d]],
  ];
  for (let i = 0; i < layers; i++) {
    out.push(
      [`h${i}.ln1.g`, [d]],
      [`h${i}.ln1.b`, [d]],
      [`h${i}.attn.wqkv`, [d, 3 * d]],
      [`h${i}.attn.bqkv`, [3 * d]],
      [`h${i}.attn.wo`, [d, d]],
      [`h${i}.attn.bo`, [d]],
      [`h${i}.ln2.g`, [d]],
      [`h${i}.ln2.b`, [d]],
      [`h${i}.mlp.w1`, [d, 4 * d]],
      [`h${i}.mlp.b1`, [4 * d]],
      [`h${i}.mlp.w2`, [4 * d, d]],
      [`h${i}.mlp.b2`, [d]],
    );
  }
  out.push(['lnf.g', [d]], ['lnf.b', [d]], ['head', [d, v]]);
  return out;
}

function initValue(cfg: PolicyConfig, name: string, size: number): Float32Array {
  const x = new Float32Array(size);
  if (name.endsWith('.g')) return x.fill(1);
  if (/\.b\w*$/.test(name)) return x; // biases and LayerNorm shifts start at 0
  const std = /\.(wo|w2)$/.test(name) ? INIT_STD / Math.sqrt(2 * cfg.layers) : INIT_STD;
  const rng = new Rng(deriveSeed(cfg.seed, 'init', name));
  for (let i = 0; i < size; i++) x[i] = std * rng.normal();
  return x;
}

/**
 * A new policy; parameters come from `values` (e.g. a checkpoint, checked for shape) or
 * from the seeded initialiser. Variables are unnamed in the tfjs registry so that several
 * policies (current, reference, a loaded copy) can live in one process.
 */
export function createPolicy(cfg: PolicyConfig, values?: ReadonlyMap<string, Float32Array>): Policy {
  const c = checkConfig(cfg);
  const params = new Map<string, tf.Variable>();
  for (const [name, shape] of paramShapes(c)) {
    const size = shape.reduce((a, b) => a * b, 1);
    const data = values?.get(name);
    if (values && !data) throw new ShapeMismatchError(`policy: missing parameter ${name}`);
    if (data && data.length !== size)
      throw new ShapeMismatchError(`policy: parameter ${name} has ${data.length} values, shape [${shape}] needs ${size}`);
    // Copy: the cpu backend keeps the array it is given, and callers may reuse theirs.
    const t = tf.tensor(data ? new Float32Array(data) : initValue(c, name, size), shape, 'float32');
    params.set(name, tf.variable(t, true));
    t.dispose();
  }
  return { cfg: c, params };
}

/**
 * The same policy with a longer positional table: positions below the old context keep
 * their embeddings, new ones start from the seeded initialiser (as in a fresh model). For a
 * warm start that must train positions a later evaluation reaches (4x the longest training
 * budget); every other parameter is copied. Returns a new policy; the input is untouched.
 */
export function growContext(policy: Policy, context: number): Policy {
  const old = policy.cfg;
  if (!Number.isInteger(context) || context < old.context)
    throw new InvalidArgumentError(`policy: cannot grow context ${old.context} to ${context}`);
  const values = readParams(policy);
  const cfg = { ...old, context };
  const fresh = initValue(cfg, 'wpe', context * old.dModel);
  fresh.set(values.get('wpe')!);
  values.set('wpe', fresh);
  return createPolicy(cfg, values);
}

export function disposePolicy(policy: Policy): void {
  for (const v of policy.params.values()) v.dispose();
  policy.params.clear();
}

export function countParams(policy: Policy): number {
  let n = 0;
  for (const v of policy.params.values()) n += v.size;
  return n;
}

/** Parameter values as fresh host arrays (safe to mutate), in stable order. */
export function readParams(policy: Policy): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const [name, v] of policy.params) out.set(name, new Float32Array(v.dataSync() as Float32Array));
  return out;
}

/** Overwrite parameter values in place (e.g. reset a reference policy to the live one). */
export function assignParams(policy: Policy, values: ReadonlyMap<string, Float32Array>): void {
  for (const [name, v] of policy.params) {
    const data = values.get(name);
    if (!data || data.length !== v.size) throw new ShapeMismatchError(`policy: parameter ${name} missing or of the wrong size`);
    tf.tidy(() => v.assign(tf.tensor(new Float32Array(data), v.shape, 'float32')));
  }
}

export function param(policy: Policy, name: string): tf.Variable {
  const v = policy.params.get(name);
  if (!v) throw new Error(`policy: no parameter ${name} (was it disposed?)`);
  return v;
}

/** Column sums of [N, c] as a 2-D matmul (wasm reduces over axis 0 via a slow transpose). */
function colSum(x: tf.Tensor2D): tf.Tensor1D {
  return tf.reshape(tf.matMul(tf.ones([1, x.shape[0]]) as tf.Tensor2D, x), [x.shape[1]]) as tf.Tensor1D;
}

/**
 * a^T @ dy with flag-free 2-D matmuls, transposing whichever side moves fewer values:
 * transpose(a) @ dy, or transpose(transpose(dy) @ a).
 */
function weightGrad(a: tf.Tensor2D, dy: tf.Tensor2D): tf.Tensor2D {
  const [n, k] = a.shape;
  const c = dy.shape[1];
  if (n * k <= n * c + k * c) return tf.matMul(tf.transpose(a), dy);
  return tf.transpose(tf.matMul(tf.transpose(dy), a) as tf.Tensor2D);
}

type Fn2 = (a: tf.Tensor2D, b: tf.Tensor2D) => tf.Tensor2D;
type LinearFn = (x: tf.Tensor2D, w: tf.Tensor2D, bias: tf.Tensor) => tf.Tensor2D;
type NormFn = (x: tf.Tensor2D, g: tf.Tensor, b: tf.Tensor) => tf.Tensor2D;
type GradFn = Parameters<typeof tf.customGrad>[0];

/**
 * a @ b for rank-2 tensors through wasm's fast path, with a backward pass that also uses
 * only flag-free 2-D matmuls: dA = dy @ transpose(b), dB = transpose(a) @ dy.
 */
export const mm = tf.customGrad(((a: tf.Tensor2D, b: tf.Tensor2D, save: tf.GradSaveFunc) => {
  save([a, b]);
  return {
    value: tf.matMul(a, b),
    gradFunc: (dy: tf.Tensor2D, saved: tf.Tensor[]) => {
      const [sa, sb] = saved as tf.Tensor2D[];
      return [tf.matMul(dy, tf.transpose(sb)), weightGrad(sa, dy)];
    },
  };
}) as unknown as GradFn) as Fn2;

/** x @ w + bias, as `mm` plus a bias whose gradient is a ones-matmul. */
export const linear = tf.customGrad(((x: tf.Tensor2D, w: tf.Tensor2D, bias: tf.Tensor1D, save: tf.GradSaveFunc) => {
  save([x, w]);
  return {
    value: tf.add(tf.matMul(x, w), bias),
    gradFunc: (dy: tf.Tensor2D, saved: tf.Tensor[]) => {
      const [sx, sw] = saved as tf.Tensor2D[];
      return [tf.matMul(dy, tf.transpose(sw)), weightGrad(sx, dy), colSum(dy)];
    },
  };
}) as unknown as GradFn) as LinearFn;

/**
 * LayerNorm over the last axis of [N, d], with a hand-written backward (fewer wasm ops):
 * dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * g.
 */
export const layerNorm = tf.customGrad(((x: tf.Tensor2D, g: tf.Tensor1D, b: tf.Tensor1D, save: tf.GradSaveFunc) => {
  const xc = tf.sub(x, tf.mean(x, -1, true));
  const rstd = tf.rsqrt(tf.add(tf.mean(tf.square(xc), -1, true), LN_EPS));
  const xhat = tf.mul(xc, rstd) as tf.Tensor2D;
  save([xhat, rstd, g]);
  return {
    value: tf.add(tf.mul(xhat, g), b),
    gradFunc: (dy: tf.Tensor2D, saved: tf.Tensor[]) => {
      const [sxhat, srstd, sg] = saved as tf.Tensor2D[];
      const dxhat = tf.mul(dy, sg);
      const inner = tf.sub(tf.sub(dxhat, tf.mean(dxhat, -1, true)), tf.mul(sxhat, tf.mean(tf.mul(dxhat, sxhat), -1, true)));
      return [tf.mul(srstd, inner), colSum(tf.mul(dy, sxhat) as tf.Tensor2D), colSum(dy)];
    },
  };
}) as unknown as GradFn) as NormFn;

/**
 * GELU in its sigmoid form x * sigmoid(1.702 x) (Hendrycks & Gimpel 2016, sec. 2): on wasm
 * sigmoid is ~3x faster than erf and ~4x faster than tanh.
 */
export function gelu<T extends tf.Tensor>(x: T): T {
  return tf.mul(x, tf.sigmoid(tf.mul(x, 1.702)));
}

/** The position-wise part of block `i` after attention: out-projection, residual, MLP, residual. */
export function blockTail(policy: Policy, i: number, x: tf.Tensor2D, att: tf.Tensor2D): tf.Tensor2D {
  const p = (n: string) => param(policy, `h${i}.${n}`);
  const p2 = (n: string) => p(n) as tf.Tensor as tf.Tensor2D;
  const x1 = tf.add(x, linear(att, p2('attn.wo'), p('attn.bo'))) as tf.Tensor2D;
  const m = gelu(linear(layerNorm(x1, p('ln2.g'), p('ln2.b')), p2('mlp.w1'), p('mlp.b1')));
  return tf.add(x1, linear(m, p2('mlp.w2'), p('mlp.b2'))) as tf.Tensor2D;
}

/** LayerNorm then fused q|k|v projection of block `i`: [N, d] -> [N, 3d]. */
export function blockQkv(policy: Policy, i: number, x: tf.Tensor2D): tf.Tensor2D {
  const p = (n: string) => param(policy, `h${i}.${n}`);
  const p2 = (n: string) => p(n) as tf.Tensor as tf.Tensor2D;
  return linear(layerNorm(x, p('ln1.g'), p('ln1.b')), p2('attn.wqkv'), p('attn.bqkv'));
}

const maskCache = new Map<number, Float32Array>();
function causalMask(t: number): Float32Array {
  let m = maskCache.get(t);
  if (!m) {
    m = new Float32Array(t * t);
    for (let i = 0; i < t; i++) for (let j = i + 1; j < t; j++) m[i * t + j] = MASKED;
    maskCache.set(t, m);
  }
  return m;
}

/** Rows [start, start + n) of a 2-D tensor (a memcpy once `useFastSlice` has run). */
function rows(x: tf.Tensor2D, start: number, n: number): tf.Tensor2D {
  return tf.slice(x, [start, 0], [n, x.shape[1]]);
}

interface WasmTensorInfo {
  dataId: object;
  shape: number[];
  dtype: tf.DataType;
}
interface WasmBackendLike {
  makeOutput(shape: number[], dtype: tf.DataType): WasmTensorInfo;
  typedArrayFromHeap(t: WasmTensorInfo): Float32Array | Int32Array | Uint8Array;
}
let fastSliceInstalled = false;

/**
 * wasm's Slice kernel (tfjs 4.22) first copies the WHOLE input out of the heap (readSync),
 * so cutting n slices from a tensor costs n full copies: attention's per-(batch, head)
 * slices went quadratic. This re-registers Slice for wasm with a version that reads heap
 * views for contiguous and rank-2 slices (same results, O(slice) cost) and defers to the
 * original kernel otherwise. Idempotent; a no-op on other backends.
 */
export function useFastSlice(): void {
  if (fastSliceInstalled || tf.getBackend() !== 'wasm') return;
  const original = tf.getKernel('Slice', 'wasm');
  if (!original) return;
  const kernelFunc = (args: {
    inputs: { x: WasmTensorInfo };
    attrs: { begin: number | number[]; size: number | number[] };
    backend: unknown;
  }) => {
    const {
      inputs: { x },
      attrs,
    } = args;
    const backend = args.backend as WasmBackendLike;
    const [begin, size] = tf.slice_util.parseSliceParams(x as unknown as tf.TensorInfo, attrs.begin, attrs.size);
    const contiguous = tf.slice_util.isSliceContinous(x.shape, begin, size);
    if (x.dtype === 'string' || (!contiguous && x.shape.length !== 2))
      return original.kernelFunc(args as unknown as Parameters<tf.KernelFunc>[0]);
    const out = backend.makeOutput(size, x.dtype); // allocate first: heap growth detaches views
    const src = backend.typedArrayFromHeap(x);
    const dst = backend.typedArrayFromHeap(out);
    if (contiguous) {
      const from = tf.slice_util.computeFlatOffset(begin, tf.util.computeStrides(x.shape));
      dst.set(src.subarray(from, from + dst.length));
    } else {
      const cols = x.shape[1];
      for (let i = 0; i < size[0]; i++) {
        const from = (begin[0] + i) * cols + begin[1];
        dst.set(src.subarray(from, from + size[1]), i * size[1]);
      }
    }
    return out;
  };
  tf.unregisterKernel('Slice', 'wasm');
  tf.registerKernel({ ...original, kernelFunc: kernelFunc as unknown as tf.KernelFunc });
  fastSliceInstalled = true;
}

/** Per-slice transpose of [n*r, c] stacked blocks: [n*c, r]. */
function blockTranspose(x: tf.Tensor2D, n: number): tf.Tensor2D {
  const [nr, c] = x.shape;
  return tf.reshape(tf.transpose(tf.reshape(x, [n, nr / n, c]), [0, 2, 1]), [n * c, nr / n]);
}

/**
 * Causal softmax attention over n independent [T, dh] slices stacked as q, k, v [n*T, dh]:
 * out_i = softmax(q_i k_i^T / sqrt(dh) + mask) v_i. A custom op so that every matmul,
 * forward and backward, is a flag-free 2-D one and so that slicing's autodiff gradient (a
 * full-size pad per slice: quadratic in n) never runs; softmax and mask run once on the
 * stacked [n*T, T] scores. Backward, with dS = P * (dP - rowsum(dP * P)) / sqrt(dh):
 * dq_i = dS_i k_i, dk_i = dS_i^T q_i, dv_i = P_i^T dout_i, dP_i = dout_i v_i^T.
 */
function causalAttention(q: tf.Tensor2D, k: tf.Tensor2D, v: tf.Tensor2D, slices: number): tf.Tensor2D {
  const [nt, dh] = q.shape;
  const t = nt / slices;
  const scale = 1 / Math.sqrt(dh);
  const op = (qs: tf.Tensor2D, ks: tf.Tensor2D, vs: tf.Tensor2D, save: tf.GradSaveFunc) => {
    const kT = blockTranspose(ks, slices); // [n*dh, T]
    const scores: tf.Tensor2D[] = [];
    for (let i = 0; i < slices; i++) scores.push(tf.matMul(rows(qs, i * t, t), rows(kT, i * dh, dh)));
    const masked = tf.add(tf.reshape(tf.mul(tf.concat(scores, 0), scale), [slices, t, t]), tf.tensor2d(causalMask(t), [t, t]));
    const p = tf.reshape(tf.softmax(masked), [nt, t]) as tf.Tensor2D;
    const outs: tf.Tensor2D[] = [];
    for (let i = 0; i < slices; i++) outs.push(tf.matMul(rows(p, i * t, t), rows(vs, i * t, t)));
    save([qs, ks, vs, p]);
    return {
      value: tf.concat(outs, 0),
      gradFunc: (dy: tf.Tensor2D, saved: tf.Tensor[]) => {
        const [sq, sk, sv, sp] = saved as tf.Tensor2D[];
        const pT = blockTranspose(sp, slices); // [n*T, T]
        const vT = blockTranspose(sv, slices); // [n*dh, T]
        const dv: tf.Tensor2D[] = [];
        const dp: tf.Tensor2D[] = [];
        for (let i = 0; i < slices; i++) {
          const dyi = rows(dy, i * t, t);
          dv.push(tf.matMul(rows(pT, i * t, t), dyi));
          dp.push(tf.matMul(dyi, rows(vT, i * dh, dh)));
        }
        const dP = tf.concat(dp, 0);
        const dS = tf.mul(tf.mul(sp, tf.sub(dP, tf.sum(tf.mul(dP, sp), -1, true))), scale) as tf.Tensor2D;
        const dST = blockTranspose(dS, slices);
        const dq: tf.Tensor2D[] = [];
        const dk: tf.Tensor2D[] = [];
        for (let i = 0; i < slices; i++) {
          dq.push(tf.matMul(rows(dS, i * t, t), rows(sk, i * t, t)));
          dk.push(tf.matMul(rows(dST, i * t, t), rows(sq, i * t, t)));
        }
        return [tf.concat(dq, 0), tf.concat(dk, 0), tf.concat(dv, 0)];
      },
    };
  };
  return (tf.customGrad(op as unknown as GradFn) as (a: tf.Tensor2D, b: tf.Tensor2D, c: tf.Tensor2D) => tf.Tensor2D)(q, k, v);
}

/** Causal multi-head self-attention from fused qkv [B*T, 3d] to [B*T, d]. */
function attention(qkv: tf.Tensor2D, b: number, t: number, heads: number): tf.Tensor2D {
  const d = qkv.shape[1] / 3;
  const dh = d / heads;
  // [B*T, d] -> [B*H*T, dh]: one [T, dh] slice per (batch row, head).
  const split = (k: number) =>
    tf.reshape(tf.transpose(tf.reshape(tf.slice(qkv, [0, k * d], [b * t, d]), [b, t, heads, dh]), [0, 2, 1, 3]), [
      b * heads * t,
      dh,
    ]) as tf.Tensor2D;
  const out = causalAttention(split(0), split(1), split(2), b * heads);
  return tf.reshape(tf.transpose(tf.reshape(out, [b, heads, t, dh]), [0, 2, 1, 3]), [b * t, d]);
}

/**
 * float32 one-hot rows [N, depth]. Built as int32 then cast: on wasm (tfjs 4.22)
 * `tf.oneHot(..., 'float32')` returns all zeros.
 */
export function oneHotF32(ids: tf.Tensor, depth: number): tf.Tensor2D {
  return tf.cast(tf.oneHot(ids, depth), 'float32') as tf.Tensor2D;
}

/** Token + position embeddings for int32 ids [B, T]: [B*T, d]. */
function embed(policy: Policy, tokens: tf.Tensor2D): tf.Tensor2D {
  const [b, t] = tokens.shape;
  const { vocab, dModel: d } = policy.cfg;
  const ids = tf.cast(tf.reshape(tokens, [b * t]), 'int32');
  const x = mm(oneHotF32(ids, vocab), param(policy, 'wte') as tf.Tensor2D);
  const pos = tf.slice(param(policy, 'wpe'), [0, 0], [t, d]);
  return tf.reshape(tf.add(tf.reshape(x, [b, t, d]), pos), [b * t, d]);
}

/** A decoder's per-row capacities (prompt + budget) against the model's context: one error naming what a row needs. */
export function checkCapacity(cfg: PolicyConfig, capacity: number[]): void {
  for (const c of capacity)
    if (c > cfg.context) throw new ShapeMismatchError(`sampler: a row needs ${c} positions, the context is ${cfg.context}`);
}

/**
 * Rough peak bytes of a forward + backward pass over [b, t] tokens: per layer ~6 float
 * [b*heads, t, t] attention buffers and ~32 floats per token per d. An estimate for sizing
 * micro-batches, not an exact count.
 */
export function activationBytes(cfg: PolicyConfig, b: number, t: number): number {
  const { layers, dModel: d, heads, vocab } = cfg;
  return 4 * (layers * (6 * b * heads * t * t + 32 * b * t * d) + b * t * (4 * vocab + 4 * d));
}

/**
 * Half of wasm's 4 GiB heap, which never shrinks: past it a step dies with "memory access
 * out of bounds" instead of a clean error (docs/ARCHITECTURE.md), so refuse such passes up front.
 */
export const WASM_ACTIVATION_LIMIT = 2 ** 31;

/** Final hidden states [B*T, d] (after the final LayerNorm). */
export function forwardHidden(policy: Policy, tokens: tf.Tensor2D): tf.Tensor2D {
  const [b, t] = tokens.shape;
  const { layers, heads, context } = policy.cfg;
  if (t > context) throw new ShapeMismatchError(`policy: sequence length ${t} exceeds context ${context}`);
  if (t < 1) throw new InvalidArgumentError('policy: empty sequence');
  const bytes = activationBytes(policy.cfg, b, t);
  if (bytes > WASM_ACTIVATION_LIMIT && tf.getBackend() === 'wasm') {
    throw new InvalidArgumentError(
      `policy: a [${b}, ${t}] pass needs ~${Math.round(bytes / 2 ** 20)} MiB of activations, over the ${WASM_ACTIVATION_LIMIT / 2 ** 30} GiB wasm budget: use smaller micro-batches`,
    );
  }
  useFastSlice();
  let x = embed(policy, tokens);
  for (let i = 0; i < layers; i++) {
    x = blockTail(policy, i, x, attention(blockQkv(policy, i, x), b, t, heads));
  }
  return layerNorm(x, param(policy, 'lnf.g'), param(policy, 'lnf.b'));
}

/** Output head on hidden states [N, d]: logits [N, V]. */
export function headLogits(policy: Policy, hidden: tf.Tensor2D): tf.Tensor2D {
  return mm(hidden, param(policy, 'head') as tf.Tensor2D);
}

/** Next-token logits for int32 tokens [B, T]: [B, T, V]; logits[b, t] predicts token t + 1. */
export function forwardLogits(policy: Policy, tokens: tf.Tensor2D): tf.Tensor3D {
  return tf.tidy(() => {
    const [b, t] = tokens.shape;
    return tf.reshape(headLogits(policy, forwardHidden(policy, tokens)), [b, t, policy.cfg.vocab]);
  });
}

export interface TokenLogProbs {
  /** [B, T-1]: logp[b, t] = log pi(tokens[b, t+1] | tokens[b, <= t]). */
  logp: tf.Tensor2D;
  /** [B, T-1]: entropy (nats) of the predictive distribution at position t. */
  entropy: tf.Tensor2D;
}

/**
 * Per-token log-probs and entropies of a batch of sequences, differentiable w.r.t. the
 * parameters (GRPO and SFT losses). `temperature` divides the logits first, to score
 * tokens under the same tempered distribution the sampler drew from (default 1).
 */
export function tokenLogProbs(policy: Policy, tokens: tf.Tensor2D, opts: { temperature?: number } = {}): TokenLogProbs {
  const [b, t] = tokens.shape;
  if (t < 2) throw new InvalidArgumentError(`tokenLogProbs: need at least 2 tokens per row (got ${t})`);
  const temperature = opts.temperature ?? 1;
  if (!(temperature > 0)) throw new InvalidArgumentError(`tokenLogProbs: temperature must be > 0 (got ${temperature})`);
  return tf.tidy(() => {
    const n = b * (t - 1);
    // Causal: logits for positions 0..T-2 do not depend on the last token, so drop it.
    let logits = headLogits(policy, forwardHidden(policy, tf.slice(tokens, [0, 0], [b, t - 1])));
    if (temperature !== 1) logits = tf.div(logits, temperature);
    const lsm = tf.logSoftmax(logits);
    const targets = tf.cast(tf.reshape(tf.slice(tokens, [0, 1], [b, t - 1]), [n]), 'int32');
    const logp = tf.reshape(tf.sum(tf.mul(lsm, oneHotF32(targets, policy.cfg.vocab)), -1), [b, t - 1]) as tf.Tensor2D;
    const entropy = tf.reshape(tf.neg(tf.sum(tf.mul(tf.exp(lsm), lsm), -1)), [b, t - 1]) as tf.Tensor2D;
    return { logp, entropy };
  });
}
