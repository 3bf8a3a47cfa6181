/**
 * The policy of ml/policy.ts as two ONNX graphs with its weights baked in as initialisers:
 * a prefill of g equal-length prompts and one decode step for a batch of rows with different
 * past lengths. Same model, same float32 arithmetic up to operation order: pre-LayerNorm
 * blocks, causal softmax attention (Vaswani et al. 2017, eq. 1), GELU in its sigmoid form
 * x * sigmoid(1.702 x) (Hendrycks & Gimpel 2016, sec. 2), learned positions, untied head.
 *
 * Cache layout (docs/ARCHITECTURE.md "Sampling engines"): per layer, keys K [rows, heads, C, dh]
 * and values stored transposed, Vt [rows, heads, dh, C], C a multiple of CHUNK, so that
 * attention is two flag-free batched matrix-vector products with the cache as the left
 * operand, K x q [dh, 1] and Vt x p [C, 1]: each cached value is read once per step and the
 * packed right operand is one column (a cache on the right would be repacked every step). The step graph does not
 * write the cache: it returns the new position's k and v rows [rows, d] and the caller
 * writes them (a graph output the size of the cache would be copied out every step).
 * The new position attends to itself through a separate score, placed first in the softmax
 * row; cached positions at or after a row's length are masked by an additive bias of MASKED.
 */
import type { PolicyConfig } from '../policy';
import { GraphBuilder } from './graph';

/** Cache capacities are multiples of this many positions (see OrtDecoder). */
export const CHUNK = 16;
/**
 * Softmax rows span 1 + a multiple of this many scores whatever the cache capacity (the
 * cached scores are padded with masked ones): a row's softmax then runs through the same
 * vectorised code paths, and gives the same bits, whatever the batch's longest row.
 */
export const SPAN = 64;
/** Additive mask: exp(-1e9 - max) is exactly 0 in float32 (as ml/policy.ts). */
export const MASKED = -1e9;
const LN_EPS = 1e-5;

type Weights = ReadonlyMap<string, Float32Array>;

function shapeOf(cfg: PolicyConfig, name: string): number[] {
  const { vocab: v, dModel: d, context } = cfg;
  if (name === 'wte') return [v, d];
  if (name === 'wpe') return [context, d];
  if (name === 'head') return [d, v];
  if (name.endsWith('wqkv')) return [d, 3 * d];
  if (name.endsWith('wo')) return [d, d];
  if (name.endsWith('w1')) return [d, 4 * d];
  if (name.endsWith('w2')) return [4 * d, d];
  if (name.endsWith('b1')) return [4 * d];
  if (name.endsWith('bqkv')) return [3 * d];
  return [d];
}

class PolicyGraph {
  readonly g = new GraphBuilder();
  constructor(
    readonly cfg: PolicyConfig,
    private readonly w: Weights,
  ) {}

  p(name: string): string {
    const data = this.w.get(name);
    if (!data) throw new Error(`onnx policy graph: no parameter ${name}`);
    return this.g.weight(name, data, shapeOf(this.cfg, name));
  }

  linear(x: string, w: string, b: string): string {
    return this.g.op('Add', [this.g.op('MatMul', [x, this.p(w)]), this.p(b)]);
  }

  layerNorm(x: string, prefix: string): string {
    return this.g.op('LayerNormalization', [x, this.p(`${prefix}.g`), this.p(`${prefix}.b`)], { axis: -1, epsilon: LN_EPS });
  }

  gelu(x: string): string {
    return this.g.op('Mul', [x, this.g.op('Sigmoid', [this.g.op('Mul', [x, this.g.scalar(1.702)])])]);
  }

  /** Token + position embeddings. */
  embed(tokens: string, positions: string): string {
    return this.g.op('Add', [this.g.op('Gather', [this.p('wte'), tokens]), this.g.op('Gather', [this.p('wpe'), positions])]);
  }

  /**
   * Block i's LayerNorm and fused projection, split: [q / sqrt(dh), k, v], each [..., d]. The
   * attention scale is folded into the q columns of the weights and bias (one op less per
   * layer); `names` names the k and v outputs.
   */
  qkv(i: number, x: string, names?: [string, string]): string[] {
    const { dModel: d, heads } = this.cfg;
    const scale = 1 / Math.sqrt(d / heads);
    const w = Float32Array.from(this.w.get(`h${i}.attn.wqkv`)!);
    const b = Float32Array.from(this.w.get(`h${i}.attn.bqkv`)!);
    for (let r = 0; r < d; r++) for (let c = 0; c < d; c++) w[r * 3 * d + c] *= scale;
    for (let c = 0; c < d; c++) b[c] *= scale;
    const h = this.layerNorm(x, `h${i}.ln1`);
    const qkv = this.g.op('Add', [
      this.g.op('MatMul', [h, this.g.weight(`h${i}.attn.wqkv.qscaled`, w, [d, 3 * d])]),
      this.g.weight(`h${i}.attn.bqkv.qscaled`, b, [3 * d]),
    ]);
    return this.g.node('Split', [qkv, this.g.ints([d, d, d])], { axis: -1 }, names ? [this.g.fresh('q'), ...names] : 3);
  }

  /** Out-projection, residual, MLP, residual (ml/policy.ts blockTail). */
  tail(i: number, x: string, att: string): string {
    const x1 = this.g.op('Add', [x, this.linear(att, `h${i}.attn.wo`, `h${i}.attn.bo`)]);
    const m = this.gelu(this.linear(this.layerNorm(x1, `h${i}.ln2`), `h${i}.mlp.w1`, `h${i}.mlp.b1`));
    return this.g.op('Add', [x1, this.linear(m, `h${i}.mlp.w2`, `h${i}.mlp.b2`)]);
  }

  logits(h: string, out: string): string {
    return this.g.op('MatMul', [this.layerNorm(h, 'lnf'), this.p('head')], {}, out);
  }
}

/**
 * Prefill of g prompts of one length P. Inputs: `tokens` int32 [g, P], `positions` int32
 * [P] (0..P-1), `mask` float32 [P, P] (causal, MASKED above the diagonal). Outputs: `logits`
 * [g, 1, V] at the last position; per layer `k{l}` [g, heads, P, dh] and `vt{l}` [g, heads, dh, P]
 * (the step graph's cache layout).
 */
export function prefillModel(cfg: PolicyConfig, weights: Weights): Uint8Array {
  const pg = new PolicyGraph(cfg, weights);
  const { g } = pg;
  const { layers, heads, dModel: d, vocab } = cfg;
  const dh = d / heads;
  const tokens = g.input('tokens', 'int32', ['g', 'P']);
  const positions = g.input('positions', 'int32', ['P']);
  const mask = g.input('mask', 'float32', ['P', 'P']);
  let x = pg.embed(tokens, positions); // [g, P, d]
  const split = g.ints([0, 0, heads, dh]);
  for (let i = 0; i < layers; i++) {
    const [q, k, v] = pg.qkv(i, x);
    const q4 = g.op('Transpose', [g.op('Reshape', [q, split])], { perm: [0, 2, 1, 3] });
    const k4 = g.op('Transpose', [g.op('Reshape', [k, split])], { perm: [0, 2, 1, 3] }, `k${i}`);
    const kt = g.op('Transpose', [k4], { perm: [0, 1, 3, 2] });
    const v4 = g.op('Transpose', [g.op('Reshape', [v, split])], { perm: [0, 2, 1, 3] });
    g.op('Transpose', [v4], { perm: [0, 1, 3, 2] }, `vt${i}`);
    const probs = g.op('Softmax', [g.op('Add', [g.op('MatMul', [q4, kt]), mask])], { axis: -1 });
    const att = g.op('Reshape', [g.op('Transpose', [g.op('MatMul', [probs, v4])], { perm: [0, 2, 1, 3] }), g.ints([0, 0, d])]);
    x = pg.tail(i, x, att);
    g.output(`k${i}`, 'float32', ['g', heads, 'P', dh]);
    g.output(`vt${i}`, 'float32', ['g', heads, dh, 'P']);
  }
  const last = g.op('Slice', [x, g.ints([-1]), g.ints([2 ** 31 - 1]), g.ints([1])]);
  pg.logits(last, 'logits');
  g.output('logits', 'float32', ['g', 1, vocab]);
  return g.build('e3-prefill');
}

/**
 * One decode step for B rows. Inputs: `tokens`, `pos` int32 [B] (row b's new token and its
 * position = its cached length), `bias` float32 [B, 1, 1, S] (0 below pos[b], MASKED from
 * it; S = C rounded up to SPAN), `pads` int64 [8] (the ONNX Pad amounts taking [B, H, 1, C]
 * to [B, H, 1, S]: all 0 but the last, S - C), `pastEnd` int64 [1] (1 + C), per layer
 * `k{l}` [B, heads, C, dh] and `vt{l}` [B, heads, dh, C]. One output, `out` [B, V + 2 L d]:
 * per row its logits, then per layer the new position's key and value rows (d each). One
 * output, not 1 + 2L: ONNX Runtime's Node binding costs ~4 µs per output per run, and the
 * 2L more were a twentieth of the step at an empty cache (bench/NOTES.md).
 */
export function stepModel(cfg: PolicyConfig, weights: Weights): Uint8Array {
  const pg = new PolicyGraph(cfg, weights);
  const { g } = pg;
  const { layers, heads, dModel: d, vocab } = cfg;
  const dh = d / heads;
  const tokens = g.input('tokens', 'int32', ['B']);
  const pos = g.input('pos', 'int32', ['B']);
  const bias = g.input('bias', 'float32', ['B', 1, 1, 'S']);
  const pads = g.input('pads', 'int64', [8]);
  const pastEnd = g.input('pastEnd', 'int64', [1]);
  let x = pg.embed(tokens, pos); // [B, d]
  const fresh: string[] = [];
  const row4 = g.ints([0, heads, 1, dh]);
  const col4 = g.ints([0, heads, dh, 1]);
  const rowC = g.ints([0, heads, 1, -1]);
  const colC = g.ints([0, heads, -1, 1]);
  for (let i = 0; i < layers; i++) {
    const kc = g.input(`k${i}`, 'float32', ['B', heads, 'C', dh]);
    const vt = g.input(`vt${i}`, 'float32', ['B', heads, dh, 'C']);
    const [q, k, v] = pg.qkv(i, x, [`k${i}_new`, `v${i}_new`]);
    const qCol = g.op('Reshape', [q, col4]); // [B, H, dh, 1]
    const sNew = g.op('MatMul', [g.op('Reshape', [k, row4]), qCol]); // [B, H, 1, 1]
    const sPast = g.op('Add', [g.op('Pad', [g.op('Reshape', [g.op('MatMul', [kc, qCol]), rowC]), pads]), bias]); // [B, H, 1, S]
    const probs = g.op('Softmax', [g.op('Concat', [sNew, sPast], { axis: 3 })], { axis: -1 }); // [B, H, 1, 1 + S]
    const pNew = g.op('Slice', [probs, g.ints([0]), g.ints([1]), g.ints([3])]); // [B, H, 1, 1]
    const pPast = g.op('Reshape', [g.op('Slice', [probs, g.ints([1]), pastEnd, g.ints([3])]), colC]); // [B, H, C, 1]
    const att4 = g.op('Add', [g.op('MatMul', [vt, pPast]), g.op('Mul', [pNew, g.op('Reshape', [v, col4])])]); // [B, H, dh, 1]
    x = pg.tail(i, x, g.op('Reshape', [att4, g.ints([0, d])]));
    fresh.push(`k${i}_new`, `v${i}_new`);
  }
  g.op('Concat', [pg.logits(x, 'logits'), ...fresh], { axis: 1 }, 'out');
  g.output('out', 'float32', ['B', vocab + 2 * layers * d]);
  return g.build('e3-step');
}
